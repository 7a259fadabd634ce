"""Several databases as one training table: `heartjax.data build wfdb`, `data.train_files`,
folds that deal each database's records, and training on the joined tables."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest
import wfdb

from heartjax.config import base_config, validate
from heartjax.data import SIGNAL_LEN, BeatTable, join_tables, load_table, write_table
from heartjax.data.physionet import AAMI_MAP
from heartjax.data.splits import record_folds, train_val_split
from heartjax.errors import UserError
from heartjax.train import load_folds, load_splits
from tests.conftest import assert_one_line_error, run_data_cli, synthetic_frame

SVDB_TINY = ("803", "804", "807")


def _table(database: str, names: list[str], s_rich: int, path: str = "") -> BeatTable:
    """40 beats a record; the first `s_rich` records hold S beats (fewer the later)."""
    records = np.repeat(names, 40)
    y = np.zeros(len(records), np.int32)
    for i in range(s_rich):
        y[i * 40: i * 40 + 10 - i] = 1
    meta = pd.DataFrame({"record": records, "database": database, "lead": "MLII"})
    return BeatTable(np.zeros((len(y), SIGNAL_LEN), np.float32), y, "mitbih", path, meta)


def test_folds_deal_each_databases_records_across_every_fold():
    table = join_tables([_table("mitdb", [f"1{i:02d}" for i in range(6)], 3, "a"),
                         _table("svdb", [f"8{i:02d}" for i in range(9)], 4, "b")])
    held = []
    for fold in range(3):
        train, val = train_val_split(table, 0.1, 0, "records", folds=3, fold=fold)
        assert not set(val.records) & set(train.records)
        assert set(val.meta["database"]) == {"mitdb", "svdb"}  # both databases validate
        assert 1 in set(val.y.tolist())  # and an S-rich record
        held.append(set(val.records))
    assert set().union(*held) == set(table.records) and sum(map(len, held)) == 15
    # one database alone: the folds of a table without a database column
    one = _table("mitdb", [f"1{i:02d}" for i in range(9)], 6)
    with_db = record_folds(one.records, one.y, 3, one.meta["database"].to_numpy())
    np.testing.assert_array_equal(with_db, record_folds(one.records, one.y, 3))


def test_joined_tables_refuse_colliding_records_and_other_columns():
    mitdb = _table("mitdb", ["100", "101"], 1, "a.parq")
    with pytest.raises(UserError, match="record 100 of svdb has the name of a record of mitdb"):
        join_tables([mitdb, _table("svdb", ["100", "800"], 1, "b.parq")])
    old = BeatTable(mitdb.x, mitdb.y, "mitbih", "old.parq", mitdb.meta.drop(columns="database"))
    with pytest.raises(UserError, match="old.parq: data.train_files needs the columns record and "
                                        "database"):
        join_tables([mitdb, old])
    other = BeatTable(mitdb.x, mitdb.y, "mitbih", "c.parq", mitdb.meta.assign(extra=1))
    with pytest.raises(UserError, match="c.parq: its dataset or columns differ"):
        join_tables([mitdb, other])
    joined = join_tables([mitdb, _table("svdb", ["800"], 1, "b.parq")])
    assert len(joined) == 120 and joined.path == "a.parq + b.parq"


def _synthetic_database(folder, database: str, first: int):
    frame = synthetic_frame("mitbih", 300, first)
    frame["record"] = (first + np.arange(300) % 6).astype(str)
    frame["database"] = database
    frame["lead"] = "MLII"
    write_table(frame, folder / f"{database}.parq")
    lead2 = frame.assign(lead="V1")
    write_table(lead2, folder / f"{database}_lead2.parq")
    return folder / f"{database}.parq", folder / f"{database}_lead2.parq"


def test_training_splits_draw_from_every_table_and_their_second_leads(tmp_path):
    a, a2 = _synthetic_database(tmp_path, "mitdb", 100)
    b, b2 = _synthetic_database(tmp_path, "svdb", 800)
    c = base_config("mitbih", "cnn1d")
    c.data.train_files = (str(a), str(b))
    with pytest.raises(UserError, match="data.train_files needs data.val_by='records'"):
        validate(c)
    c.data.val_by = "records"
    c.data.extra_train = f"{a2},{b2}"
    validate(c)
    folds = load_folds(c, 3)
    for train, val in folds:
        assert set(val.meta["database"]) == {"mitdb", "svdb"}
        held = set(val.records)
        # the second leads' beats of the training records join; the held-out records' do not
        extra = train.meta[train.meta["record"].str.contains("+", regex=False)]
        assert set(extra["record"]) == {f"{r}+V1" for r in set(train.records) - {
            r for r in train.records if "+" in r}}
        assert not {r.split("+")[0] for r in extra["record"]} & held
        assert len(train) + len(val) == 600 + 300 * 2 - len(val)
    assert set().union(*(set(v.records) for _, v in folds)) == {
        *map(str, range(100, 106)), *map(str, range(800, 806))}
    c.data.extra_train = f"{a2},{tmp_path / 'missing.parq'}"
    with pytest.raises(UserError, match="missing.parq: table not found"):
        load_splits(c)


def test_build_wfdb_cuts_svdb_at_125_hz_with_its_database_and_records(svdb_dir, tmp_path):
    result = run_data_cli("build", "wfdb", "--raw", svdb_dir, "--database", "svdb",
                          "--leads", "ECG1", "--records", ",".join(SVDB_TINY), "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    table = load_table(tmp_path / "heart_big_all.parq")
    expected = Counter()
    for name in SVDB_TINY:
        ann = wfdb.rdann(str(svdb_dir / name), "atr")
        expected.update(AAMI_MAP[s] for s in ann.symbol if s in AAMI_MAP)
    assert Counter(table.y.tolist()) == expected and expected[1] > 0  # svdb's S beats are S
    assert set(table.meta["database"]) == {"svdb"} and set(table.meta["lead"]) == {"ECG1"}
    assert sorted(set(table.records)) == list(SVDB_TINY)
    assert table.x.min() >= 0 and table.x.max() <= 1
    # R peaks stay at svdb's own 128 Hz samples; each beat is 1.2 median R-R at 125 Hz
    first = table.meta["record"] == "803"
    ann = wfdb.rdann(str(svdb_dir / "803"), "atr")
    beats = [s for s, sym in zip(ann.sample, ann.symbol) if sym in AAMI_MAP]
    np.testing.assert_array_equal(table.meta.loc[first, "sample"].to_numpy(), beats)
    assert (table.x[first.to_numpy()] > 0).sum(axis=1).max() <= SIGNAL_LEN


@pytest.mark.parametrize("args, needles", [
    (("--database", "svdb"), ("build wfdb needs --leads", "ECG1")),
    (("--database", "svdb", "--leads", "MLII"), ("none of the leads MLII", "ECG1,ECG2")),
    (("--database", "sv db", "--leads", "ECG1"), ("--database 'sv db'",)),
])
def test_build_wfdb_bad_options_are_one_line(svdb_dir, tmp_path, args, needles):
    result = run_data_cli("build", "wfdb", "--raw", svdb_dir, "--records", "803",
                          "--out", tmp_path, *args)
    assert_one_line_error(result, *needles)
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_makefile_builds_svdbs_development_half_only():
    from heartjax.data.physionet import SVDB_DEV_RECORDS
    from tests.conftest import REPO

    line = next(ln for ln in (REPO / "Makefile").read_text().splitlines()
                if ln.startswith("SVDB_DEV :="))
    assert tuple(line.split(":=")[1].strip().split(",")) == SVDB_DEV_RECORDS
    assert len(SVDB_DEV_RECORDS) == 39
