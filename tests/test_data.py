"""Tests of heartjax.data: tables, splits, PhysioNet builds and the CLI, on real shared data."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import wfdb

from heartjax.data import (
    CLASS_NAMES,
    RR_COLUMNS,
    SIGNAL_LEN,
    TABLE_FILES,
    TEMPLATE_FEATURES,
    BeatTable,
    add_training_beats,
    context_features,
    context_width,
    load_dataset,
    load_kaggle_ptb,
    load_table,
    needs_rr,
    physionet,
    stratified_split,
    template_features,
    train_val_split,
    write_table,
)
from heartjax.data.__main__ import DEFAULT_LEADS
from heartjax.data.splits import DS1, DS2, PACED, group_split
from heartjax.errors import UserError
from tests.conftest import run_data_cli

# wfdb (third-party) uses a pandas idiom that pandas 3 deprecates; nothing we can act on here.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.set_index")

# The AAMI EC57 mapping of docs/data-pipeline.md, written out independently of the code.
AAMI_TABLE = {0: "N L R e j", 1: "A a J S", 2: "V E", 3: "F", 4: "/ f Q"}
PUBLISHED = {"N": 90589, "S": 2779, "V": 7236, "F": 803, "Q": 8039}
TINY = ("100", "101", "102")  # one DS2, one DS1, one paced record without MLII


def annotated_counts(mitdb: Path, records: tuple[str, ...]) -> Counter:
    """AAMI class counts straight from the .atr files, with the pinned mapping."""
    symbol_class = {s: k for k, symbols in AAMI_TABLE.items() for s in symbols.split()}
    counts: Counter = Counter()
    for r in records:
        for s in wfdb.rdann(str(mitdb / r), "atr").symbol:
            if s in symbol_class:
                counts[symbol_class[s]] += 1
    return counts


def record_copy(src: Path, dst: Path, records: tuple[str, ...], with_listing: bool = True) -> Path:
    """A writable folder of records: headers copied, .dat/.atr linked (so each can be broken)."""
    dst.mkdir(parents=True, exist_ok=True)
    for r in records:
        shutil.copyfile(src / f"{r}.hea", dst / f"{r}.hea")
        for ext in ("dat", "atr"):
            os.symlink(src / f"{r}.{ext}", dst / f"{r}.{ext}")
    if with_listing:
        (dst / "RECORDS").write_text("\n".join(records) + "\n")
    return dst


def assert_user_error(result, *words: str) -> None:
    """Exit 2, one line on stderr naming the problem, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


# ---------------------------------------------------------------- pure functions


def test_aami_mapping_is_pinned():
    expected = {s: k for k, symbols in AAMI_TABLE.items() for s in symbols.split()}
    assert dict(physionet.AAMI_MAP) == expected
    not_beats = ["+", "~", "|", "x", "[", "]", "!", '"', "s", "T", "*", "D", "=", "@", "p", "t",
                 "u", "`", "'", "^"]
    for not_a_beat in not_beats:
        assert not_a_beat not in physionet.AAMI_MAP
    assert CLASS_NAMES["mitbih"] == ("N", "S", "V", "F", "Q")
    assert CLASS_NAMES["ptb"] == ("normal", "abnormal")
    assert TABLE_FILES["mitbih"] == ("heart_big_train.parq", "heart_big_test.parq")
    assert dict(physionet.PUBLISHED_COUNTS) == PUBLISHED


def test_cli_lead_defaults_match_builder():
    assert DEFAULT_LEADS["mitbih"] == ",".join(physionet.MITBIH_LEADS)
    assert DEFAULT_LEADS["ptb"] == ",".join(physionet.PTB_LEADS)
    assert physionet.MITBIH_LEADS[0] == "MLII"


@pytest.mark.parametrize("fs,n,expected", [(360, 3600, 1250), (1000, 10000, 1250),
                                           (125, 1000, 1000), (360, 650000, 225695)])
def test_resample_length(fs, n, expected):
    t = np.arange(n) / fs
    out = physionet.resample_to(np.sin(2 * np.pi * 1.0 * t), fs)
    assert len(out) == expected
    # A 1 Hz sine stays a 1 Hz sine: compare with the ideal one away from the edges.
    ideal = np.sin(2 * np.pi * np.arange(expected) / 125)
    assert np.abs(out[50:-50] - ideal[50:-50]).max() < 0.01


def test_sample_index_conversion():
    assert physionet.to_rate(np.array([0, 360, 720, 649999]), 360, 125).tolist() == \
        [0, 125, 250, 225694]
    assert physionet.to_rate(np.array([649999]), 360, 125, length=100).tolist() == [99]


def synthetic_ecg(period: int, n: int, fs: int = 125) -> tuple[np.ndarray, np.ndarray]:
    """Sharp R spikes every `period` samples on a slow baseline: (signal, R positions)."""
    t = np.arange(n)
    signal = 0.05 * np.sin(2 * np.pi * t / (3 * fs))  # mild baseline wander
    peaks = np.arange(20, n, period)
    for p in peaks:
        signal[p - 2:p + 3] += np.array([0.3, 0.7, 2.0, 0.7, 0.3])[: len(signal[p - 2:p + 3])]
    return signal, peaks


def test_window_extraction_on_synthetic_signal():
    signal, peaks = synthetic_ecg(period=100, n=3000)
    beats = physionet.extract_beats(signal, peaks)
    assert beats.shape == (len(peaks), SIGNAL_LEN) and beats.dtype == np.float32
    assert beats.min() >= 0.0 and beats.max() <= 1.0
    assert np.allclose(beats[:, 0], 1.0, atol=0.1)  # each beat starts at its (normalised) R peak
    length = round(1.2 * 100)  # T = median R-R = 100 samples
    assert (beats[:-1, length:] == 0).all() and (beats[:-1, length - 1] != 0).all()
    # The next R peak sits 100 samples on: inside the 1.2·T segment.
    assert np.allclose(beats[:-1, 100], 1.0, atol=0.1)
    # The last beat runs past the end of the record: zero padded, not dropped.
    last = len(signal) - peaks[-1]
    assert last < length and (beats[-1, last:] == 0).all() and beats[-1, 0] > 0.9


def test_window_extraction_long_period_is_cut_to_187():
    signal, peaks = synthetic_ecg(period=200, n=2500)  # 1.2·T = 240 > 187
    beats = physionet.extract_beats(signal, peaks)
    assert beats.shape[1] == SIGNAL_LEN and (beats[:-1, 180:] > 0).any(axis=1).all()  # no padding


def test_window_with_one_peak_uses_fallback_period():
    signal, _ = synthetic_ecg(period=100, n=1250)
    beats = physionet.extract_beats(signal, np.array([520]), fallback_period=50)
    assert np.count_nonzero(beats[0]) <= 60 and beats[0, 0] > 0.9


def test_detect_and_match_peaks():
    signal, peaks = synthetic_ecg(period=100, n=3000)
    detected = physionet.detect_peaks(signal)
    assert detected.tolist() == peaks.tolist()
    reference = np.concatenate([peaks[::2] + 3, [5000]])  # some off by 3 samples, one far away
    which, ref = physionet.match_peaks(detected, reference, tolerance=19)
    assert (reference[ref] - detected[which] == 3).all()
    assert len(which) == len(peaks[::2])
    # Two detections near one reference: only the closer one is kept.
    which, ref = physionet.match_peaks(np.array([90, 98]), np.array([100]), tolerance=19)
    assert which.tolist() == [1] and ref.tolist() == [0]


def test_rr_features():
    rr = physionet.rr_features(np.array([0, 360, 720, 1440, 1800]), fs=360)
    assert rr.shape == (5, 4)
    assert rr[:, 0].tolist() == [1.0, 1.0, 1.0, 2.0, 1.0]  # first beat: nearest interval
    assert rr[:, 1].tolist() == [1.0, 1.0, 2.0, 1.0, 1.0]  # last beat: nearest interval
    assert np.allclose(rr[:, 2], 5.0 / 4)  # few beats: mean of all four intervals
    assert np.allclose(rr[:, 3], 5.0 / 4)  # the record's mean, the same for every beat
    many = physionet.rr_features(np.arange(0, 100 * 360, 360), fs=360)
    assert np.allclose(many, 1.0)


def test_template_features_compare_a_beat_with_its_records_median():
    t = np.arange(187)
    normal = np.exp(-0.5 * ((t - 5) / 3.0) ** 2)  # narrow QRS just after the R peak
    wide = np.exp(-0.5 * ((t - 25) / 10.0) ** 2)  # a different, wider complex
    x = np.stack([normal, normal, normal, wide, 2 * wide, 2 * wide, 2 * wide])
    f = template_features(x, np.array(["a"] * 4 + ["b"] * 3))
    assert TEMPLATE_FEATURES == ("qrs_corr", "qrs_rms")
    assert f.shape == (7, 2) and f.dtype == np.float32
    np.testing.assert_allclose(f[:3], [[1.0, 0.0]] * 3, atol=1e-6)  # a's usual beat
    assert f[3, 0] < 0.5 and f[3, 1] > 0.05  # a's odd one out
    np.testing.assert_allclose(f[4:], [[1.0, 0.0]] * 3, atol=1e-6)  # b's median is wide
    assert template_features(x)[0, 0] < 0.5  # one record when none are named: wide is usual
    flat = template_features(np.zeros((3, 187)))
    assert np.isfinite(flat).all() and (flat == 0).all()  # nothing to compare: no NaN


def test_context_holds_the_parts_named_in_their_order():
    t = np.arange(187)
    x = np.stack([np.exp(-0.5 * ((t - c) / 3.0) ** 2) for c in (5, 5, 25)]).astype(np.float32)
    rr = np.arange(12, dtype=np.float32).reshape(3, 4)
    template = template_features(x, None)
    np.testing.assert_array_equal(context_features(x, rr, None, ("rr", "template")),
                                  np.concatenate([rr, template], axis=1))
    np.testing.assert_array_equal(context_features(x, rr, None, ("template", "rr")),
                                  np.concatenate([template, rr], axis=1))
    # computed only when named: no part, no columns; the template part needs no R-R columns
    none = context_features(x, None, None, ())
    assert none.shape == (3, 0) and none.dtype == np.float32
    np.testing.assert_array_equal(context_features(x, None, None, ("template",)), template)
    assert context_width(("rr", "template")) == 6 and context_width(()) == 0
    assert needs_rr(("template", "rr")) and not needs_rr(("template",))


def test_ptb_label_from_header_comments():
    assert physionet.ptb_label(["age: 81", "Reason for admission: Myocardial infarction"]) == 1
    assert physionet.ptb_label(["Reason for admission: Healthy control"]) == 0
    assert physionet.ptb_label(["Reason for admission: Cardiomyopathy"]) is None
    assert physionet.ptb_label(["Reason for admission: Cardiomyopathy"], include_other=True) == 1
    assert physionet.ptb_label(["no diagnosis here"]) is None


# ---------------------------------------------------------------- splits


def test_stratified_split_properties():
    y = np.repeat([0, 1, 2, 3, 4], [1000, 50, 3, 2, 1])
    keep, held = stratified_split(y, 0.2, seed=0)
    assert len(np.intersect1d(keep, held)) == 0
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(y)))
    held_counts = np.bincount(y[held], minlength=5)
    assert held_counts.tolist() == [200, 10, 1, 1, 0]  # rare classes: >= 1 held out if >= 2 rows
    again_keep, again_held = stratified_split(y, 0.2, seed=0)
    assert np.array_equal(keep, again_keep) and np.array_equal(held, again_held)
    _, other = stratified_split(y, 0.2, seed=1)
    assert not np.array_equal(held, other)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "x"])
def test_split_fraction_validated(bad):
    with pytest.raises(UserError):
        stratified_split(np.zeros(10), bad, seed=0)


def test_group_split_keeps_patients_whole():
    groups = np.repeat([f"p{i}" for i in range(10)], 20)
    y = np.repeat([0] * 5 + [1] * 5, 20)
    keep, held = group_split(groups, y, 0.2, seed=0)
    assert not set(groups[keep]) & set(groups[held])
    assert set(y[held]) == {0, 1}  # stratified by the patients' labels


def test_interpatient_lists():
    assert len(DS1) == 22 and len(DS2) == 22 and not set(DS1) & set(DS2)
    assert set(DS1) | set(DS2) | set(PACED) == set(physionet.MITBIH_RECORDS)


# ---------------------------------------------------------------- tables


def test_load_ptb_sample(ptb_sample_path):
    table = load_table(ptb_sample_path)
    assert table.dataset == "ptb" and len(table) == 1940
    assert table.x.shape == (1940, SIGNAL_LEN) and table.x.dtype == np.float32
    assert table.y.dtype == np.int32 and int((table.y == 1).sum()) == 1403
    assert table.rr is None and table.class_names == ("normal", "abnormal")
    assert table.path == str(ptb_sample_path)


def test_duplicate_index_is_ignored(ptb_sample_path, tmp_path):
    frame = pd.read_parquet(ptb_sample_path)
    frame.index = np.zeros(len(frame), dtype=int)  # the course file repeats index labels
    frame.to_parquet(tmp_path / "ptb_dup.parq")
    table = load_table(tmp_path / "ptb_dup.parq")
    assert len(table) == 1940 and list(table.meta.index) == list(range(1940))


def test_train_val_split_on_real_table(ptb_sample_path):
    table = load_table(ptb_sample_path)
    train, val = train_val_split(table, 0.25, seed=3)
    assert len(train) + len(val) == len(table)
    assert abs((val.y == 1).mean() - (table.y == 1).mean()) < 0.01
    with pytest.raises(UserError, match="validation fraction"):
        train_val_split(table, 1.5, seed=0)
    with pytest.raises(UserError, match="'record' column"):
        train_val_split(table, 0.25, seed=0, by="records")  # the course file has no records


def test_validation_by_records_holds_out_whole_patients():
    # 8 records: 4 with mostly S beats as their arrhythmia, 4 with V
    records = np.repeat([f"r{i}" for i in range(8)], 50)
    y = np.zeros(400, np.int32)
    for i in range(8):
        y[i * 50: i * 50 + 10] = 1 if i < 4 else 2
    x = np.zeros((400, SIGNAL_LEN), np.float32)
    table = BeatTable(x, y, "mitbih", "", pd.DataFrame({"record": records}))
    train, val = train_val_split(table, 0.25, seed=1, by="records")
    held = set(val.meta["record"])
    assert len(train) + len(val) == 400 and not held & set(train.meta["record"])
    assert len(held) == 2 and {1, 2} <= set(val.y.tolist())  # one S and one V patient
    again = train_val_split(table, 0.25, seed=1, by="records")[1]
    assert set(again.meta["record"]) == held


def test_record_folds_validate_every_record_once_and_spread_the_rare_classes():
    # 9 records: three rich in S (class 1), three in V (class 2), three with N only
    records = np.repeat([f"r{i}" for i in range(9)], 40)
    y = np.zeros(360, np.int32)
    for i, (label, n) in enumerate([(1, 20), (1, 15), (1, 10), (2, 20), (2, 15), (2, 10)]):
        y[i * 40: i * 40 + n] = label
    x = np.zeros((360, SIGNAL_LEN), np.float32)
    table = BeatTable(x, y, "mitbih", "", pd.DataFrame({"record": records}))
    held = []
    for fold in range(3):
        train, val = train_val_split(table, 0.1, seed=0, by="records", folds=3, fold=fold)
        assert len(train) + len(val) == 360
        assert not set(val.meta["record"]) & set(train.meta["record"])
        assert {1, 2} <= set(val.y.tolist())  # every fold shows an S and a V patient
        held.append(set(val.meta["record"]))
    assert set().union(*held) == set(records) and sum(map(len, held)) == 9
    with pytest.raises(UserError, match="data.fold=3 must be in 0..2"):
        train_val_split(table, 0.1, seed=0, by="records", folds=3, fold=3)
    with pytest.raises(UserError, match="needs data.val_by='records'"):
        train_val_split(table, 0.1, seed=0, by="beats", folds=3)
    with pytest.raises(UserError, match="between 2 and 9"):
        train_val_split(table, 0.1, seed=0, by="records", folds=10)


def test_second_lead_beats_join_training_but_not_from_validation_records():
    records = np.repeat([f"r{i}" for i in range(8)], 50)
    y = np.tile(np.r_[np.ones(10), np.zeros(40)].astype(np.int32), 8)
    x = np.zeros((400, SIGNAL_LEN), np.float32)
    mlii = BeatTable(x, y, "mitbih", "", pd.DataFrame({"record": records, "lead": "MLII"}))
    lead2 = BeatTable(x + 1, y, "mitbih", "", pd.DataFrame({"record": records, "lead": "V1"}))
    train, val = train_val_split(mlii, 0.25, seed=1, by="records")
    both = add_training_beats(train, val, lead2)
    held = set(val.meta["record"])
    assert len(both) == len(train) + 50 * (8 - len(held))
    extra = both.meta.iloc[len(train):]
    assert (both.x[len(train):] == 1).all()  # the second lead's beats, none of them held out
    assert not {r.split("+")[0] for r in extra["record"]} & held
    # each lead keeps its own template group: a record's median beat is of one lead
    assert set(extra["record"]) == {f"{r}+V1" for r in set(train.meta["record"])}
    with pytest.raises(UserError, match="lacks the columns lead"):
        add_training_beats(train, val, BeatTable(x, y, "mitbih", "", pd.DataFrame({"record": records})))


def test_write_and_read_back_with_meta(ptb_sample_path, tmp_path):
    table = load_table(ptb_sample_path).subset(np.arange(10))
    meta = pd.DataFrame({"record": [f"r{i}" for i in range(10)], "sample": np.arange(10),
                         "rr_prev": 0.8, "rr_next": 0.9, "rr_local": 0.85,
                         "rr_record": 0.9})
    table = BeatTable(table.x, table.y, "ptb", "", meta)
    write_table(table, tmp_path / "out" / "ptb_small.parq")
    frame = pd.read_parquet(tmp_path / "out" / "ptb_small.parq")
    assert list(frame.columns) == [str(i) for i in range(SIGNAL_LEN)] + ["target", *meta.columns]
    back = load_table(tmp_path / "out" / "ptb_small.parq")
    assert np.array_equal(back.x, table.x) and np.array_equal(back.y, table.y)
    assert back.meta["record"].tolist() == meta["record"].tolist()
    assert back.rr.shape == (10, 4) and back.rr.dtype == np.float32
    assert back.subset(np.array([2, 5])).meta["sample"].tolist() == [2, 5]
    reordered = frame[["target", *frame.columns[:SIGNAL_LEN]]]
    write_table(reordered, tmp_path / "from_df.parq")  # puts "target" after the signal
    assert list(pd.read_parquet(tmp_path / "from_df.parq").columns)[-1] == "target"


def test_kaggle_csv_and_ptb_pair(ptb_sample_path, tmp_path):
    table = load_table(ptb_sample_path)
    for name, label in (("ptbdb_normal.csv", 0), ("ptbdb_abnormal.csv", 1)):
        rows = np.column_stack([table.x[table.y == label], table.y[table.y == label]])
        np.savetxt(tmp_path / name, rows, delimiter=",", fmt="%.18e")
    both = load_kaggle_ptb(tmp_path / "ptbdb_normal.csv", tmp_path / "ptbdb_abnormal.csv")
    assert len(both) == 1940 and int(both.y.sum()) == 1403
    assert np.allclose(np.sort(both.x.sum(1)), np.sort(table.x.sum(1)), atol=1e-3)
    with pytest.raises(UserError, match="swapped"):
        load_kaggle_ptb(tmp_path / "ptbdb_abnormal.csv", tmp_path / "ptbdb_normal.csv")


def test_dataset_inference(ptb_sample_path, tmp_path):
    frame = pd.read_parquet(ptb_sample_path).head(5)
    frame["target"] = [0, 1, 2, 3, 4]
    frame.to_parquet(tmp_path / "beats.parq")
    assert load_table(tmp_path / "beats.parq").dataset == "mitbih"  # inferred from labels
    frame["target"] = 0
    frame.to_parquet(tmp_path / "heart_big_x.parq")
    assert load_table(tmp_path / "heart_big_x.parq").dataset == "mitbih"  # from the name


def test_load_dataset_missing_says_how_to_build(tmp_path):
    with pytest.raises(UserError, match="python -m heartjax.data build mitbih"):
        load_dataset(tmp_path, "mitbih", "train")
    with pytest.raises(UserError, match="split"):
        load_dataset(tmp_path, "mitbih", "validation")


# ---------------------------------------------------------------- real MIT-BIH build


def test_full_mitbih_build_matches_published(mitbih_tables):
    build = json.loads((mitbih_tables / "build.json").read_text())
    rows = {}
    for line in build["stdout"].splitlines():
        parts = line.split()
        if parts and parts[0] in PUBLISHED:
            # class  train  test  built  published  diff%
            rows[parts[0]] = [int(v) for v in parts[1:5]]
    assert set(rows) == set(PUBLISHED)
    for name, (train, test, built, published) in rows.items():
        assert published == PUBLISHED[name]
        assert abs(built - published) <= 0.01 * published, (name, built, published)
        assert train + test == built
        assert abs(test - 0.2 * built) <= 1
    assert "102=V5" in build["stderr"] and "104=V5" in build["stderr"]
    assert len(re.findall(r"^\[\s*\d+/48\] \d{3}: lead ", build["stderr"], re.MULTILINE)) == 48


def test_full_mitbih_tables_content(mitbih_tables):
    test = load_dataset(mitbih_tables, "mitbih", "test")
    assert test.dataset == "mitbih" and test.rr is not None
    assert {"record", "sample", "lead", *RR_COLUMNS} <= set(test.meta.columns)
    assert (test.rr > 0).all()
    # the template features separate ectopic ventricular beats from the rest on real records
    corr = template_features(test.x, test.records)[:, 0]
    assert np.median(corr[test.y == 2]) < 0.6 < 0.9 < np.median(corr[test.y == 0])
    assert np.median(corr[test.y == 1]) > 0.9  # S beats are conducted normally
    train_meta = pd.read_parquet(mitbih_tables / TABLE_FILES["mitbih"][0],
                                 columns=["record", "lead", "target"])
    meta = pd.concat([train_meta, test.meta[["record", "lead"]]])
    leads = meta.groupby("record")["lead"].unique().map(list).to_dict()
    assert leads["102"] == ["V5"] and leads["104"] == ["V5"]
    assert leads["114"] == ["MLII"]  # MLII is channel 1 in 114: chosen by name
    assert sum(v == ["MLII"] for v in leads.values()) == 46
    assert len(train_meta) + len(test) == 109494  # every AAMI beat of the 48 records
    assert np.bincount(test.y, minlength=5).min() > 100


@pytest.mark.parametrize("part", [0, 1])
def test_check_passes_on_built_tables(mitbih_tables, part):
    result = run_data_cli("check", mitbih_tables / TABLE_FILES["mitbih"][part])
    assert result.returncode == 0, result.stderr
    assert "dataset: mitbih" in result.stdout and result.stdout.strip().endswith("ok")
    assert "rr_local" in result.stdout and re.search(r"\d N\s+\d+\s+\d+\.\d+%", result.stdout)


def test_tiny_build_split_none(mitdb_dir, tmp_path):
    result = run_data_cli("build", "mitbih", "--raw", mitdb_dir, "--out", tmp_path,
                          "--records", ",".join(TINY), "--split", "none")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.glob("*.parq")] == ["heart_big_all.parq"]
    table = load_table(tmp_path / "heart_big_all.parq")
    expected = annotated_counts(mitdb_dir, TINY)
    assert Counter(table.y.tolist()) == expected
    assert table.meta.groupby("record")["lead"].first().to_dict() == \
        {"100": "MLII", "101": "MLII", "102": "V5"}
    assert "102: lead V5" in result.stderr
    # Published window normalisation: every value in [0, 1].
    assert table.x.min() >= 0 and table.x.max() <= 1


def test_band_pass_keeps_the_qrs_band_and_removes_wander_and_mains():
    from heartjax.data.physionet import band_pass, filtered

    t = np.arange(60 * 125) / 125
    beat, wander, mains = (np.sin(2 * np.pi * f * t) for f in (10.0, 0.1, 55.0))
    out = band_pass(beat + 3 * wander + mains)
    middle = slice(125 * 5, -125 * 5)  # away from the filter's edges
    assert np.abs(out - beat)[middle].max() < 0.2  # wander (3x) and mains are gone, 10 Hz stays
    assert np.array_equal(filtered(beat, "none"), beat)
    with pytest.raises(UserError, match="--filter"):
        filtered(beat, "notch")


def test_tiny_build_with_the_band_pass_filter(mitdb_dir, tmp_path):
    tables = {}
    for kind in ("none", "bandpass"):
        result = run_data_cli("build", "mitbih", "--raw", mitdb_dir, "--out", tmp_path / kind,
                              "--records", "100", "--split", "none", "--filter", kind)
        assert result.returncode == 0, result.stderr
        tables[kind] = load_table(tmp_path / kind / "heart_big_all.parq")
    plain, passed = tables["none"], tables["bandpass"]
    assert np.array_equal(plain.y, passed.y) and passed.x.min() >= 0 and passed.x.max() <= 1
    assert np.abs(plain.x - passed.x).mean() > 0.01  # the beats were cut from another signal


def test_tiny_build_interpatient(mitdb_dir, tmp_path):
    result = run_data_cli("build", "mitbih", "--raw", mitdb_dir, "--out", tmp_path,
                          "--records", ",".join(TINY), "--split", "interpatient")
    assert result.returncode == 0, result.stderr
    train = load_dataset(tmp_path, "mitbih", "train")
    test = load_dataset(tmp_path, "mitbih", "test")
    assert set(train.meta["record"]) == {"101"} and set(test.meta["record"]) == {"100"}
    assert "leaves out records 102" in result.stderr


def test_tiny_build_detected_peaks(mitdb_dir):
    info = physionet.inspect_record(mitdb_dir / "100", "100", physionet.MITBIH_LEADS, True)
    detected = physionet.mitbih_record_table(info, peaks="detected")
    annotated = physionet.mitbih_record_table(info)
    assert 0 < len(detected) <= len(annotated)
    # Every detected beat sits within 150 ms of a distinct reference beat.
    ann = annotated.meta["sample"].to_numpy()
    nearest = np.abs(detected.meta["sample"].to_numpy()[:, None] - ann[None, :]).min(axis=1)
    assert (nearest <= 0.150 * 360 + 3).all()


def test_skip_bad_and_missing_listing(mitdb_dir, tmp_path):
    raw = record_copy(mitdb_dir, tmp_path / "raw", ("100", "101"), with_listing=False)
    (raw / "101.atr").unlink()
    result = run_data_cli("build", "mitbih", "--raw", raw, "--out", tmp_path / "out",
                          "--split", "none", "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "warning: skipping record 101: 101.atr is missing" in result.stderr
    assert set(load_table(tmp_path / "out" / "heart_big_all.parq").meta["record"]) == {"100"}


def test_download_with_stub_fetch(mitdb_dir, tmp_path):
    calls = []

    def fetch(database: str, out: str) -> None:
        calls.append(database)
        record_copy(mitdb_dir, Path(out), ("100", "101"))

    out = physionet.download("mitbih", tmp_path / "mitdb", fetch=fetch)
    assert calls == ["mitdb"] and physionet.list_records(out) == ["100", "101"]
    files = physionet.build_mitbih(out, tmp_path / "built", split="none", log=lambda m: None)
    expected = sum(annotated_counts(mitdb_dir, ("100", "101")).values())
    assert len(load_table(files["all"])) == expected

    def offline(database: str, out: str) -> None:
        raise requests.ConnectionError("Failed to resolve 'physionet.org'")

    with pytest.raises(UserError, match="failed.*network"):
        physionet.download("ptb", tmp_path / "ptbdb", fetch=offline)
    with pytest.raises(UserError, match="no .hea"):
        physionet.download("ptb", tmp_path / "empty", fetch=lambda db, out: None)


# ---------------------------------------------------------------- real PTB


def test_ptb_build_on_patient001(ptbdb_dir, tmp_path):
    result = run_data_cli("build", "ptb", "--raw", ptbdb_dir, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "by beat" in result.stdout  # one patient only: split by beat, and it says so
    train = load_dataset(tmp_path, "ptb", "train")
    test = load_dataset(tmp_path, "ptb", "test")
    both = pd.concat([train.meta, test.meta])
    assert set(both["record"]) == {"patient001/s0010_re", "patient001/s0014lre",
                                   "patient001/s0016lre"}
    assert set(both["lead"]) == {"ii"} and (train.y == 1).all() and (test.y == 1).all()
    assert abs(len(test) - 0.2 * (len(train) + len(test))) <= 1
    # One beat per heartbeat: consecutive R peaks 0.5-1.2 s apart (this patient: ~75 bpm).
    for _, rec in both.sort_values("sample").groupby("record"):
        assert 0.5 < np.median(np.diff(rec["sample"].to_numpy())) / 1000 < 1.2
    assert np.median(train.x[:, 0]) > 0.9  # beats start at the R peak, like the course beats
    for name in TABLE_FILES["ptb"]:
        assert run_data_cli("check", tmp_path / name).returncode == 0


def test_check_ptb_sample_with_plots(ptb_sample_path, tmp_path):
    result = run_data_cli("check", ptb_sample_path, "--plot", tmp_path / "plots")
    assert result.returncode == 0, result.stderr
    assert "rows: 1940" in result.stdout
    assert re.search(r"1 abnormal\s+1403\s+72\.32%", result.stdout)
    for name in ("class_balance.png", "example_beats.png", "mean_beats.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_help():
    for args in (["--help"], ["build", "mitbih", "--help"], ["build", "ptb", "--help"],
                 ["check", "--help"], ["download", "--help"]):
        result = run_data_cli(*args)
        assert result.returncode == 0 and "usage:" in result.stdout


# ---------------------------------------------------------------- malformed inputs via the CLI


def _ptb_frame(shared: Path) -> pd.DataFrame:
    return pd.read_parquet(shared / "data" / "course" / "ptb_sample.parq")


def _bad_table(tmp: Path, shared: Path, case: str) -> tuple[list, tuple[str, ...]]:
    """Break a copy of the real PTB sample; returns (CLI args, words the error must contain)."""
    frame = _ptb_frame(shared)
    path = tmp / "ptb_broken.parq"
    if case == "missing file":
        return ["check", tmp / "nope.parq"], ("nope.parq", "not found")
    if case == "not parquet":
        path.write_bytes((shared / "data" / "README.md").read_bytes())
        return ["check", path], ("not a readable parquet",)
    if case == "186 columns":
        frame.drop(columns=["186"]).to_parquet(path)
        return ["check", path], ("signal columns", '"186"')
    if case == "no target":
        frame.drop(columns=["target"]).to_parquet(path)
        return ["check", path], ("'target'",)
    if case == "NaN in signal":
        frame.loc[7, "42"] = np.nan
        frame.to_parquet(path)
        return ["check", path], ("NaN", "row 7", '"42"')
    if case == "label 7 for ptb":
        frame.loc[3, "target"] = 7.0
        frame.to_parquet(path)
        return ["check", path], ("label 7", "out of range", "ptb")
    if case == "label 1.5":
        frame.loc[5, "target"] = 1.5
        frame.to_parquet(path)
        return ["check", path], ("label 1.5", "not an integer")
    if case == "zero rows":
        frame.head(0).to_parquet(path)
        return ["check", path], ("no rows",)
    if case == "CSV wrong column count":
        csv = tmp / "ptbdb_normal.csv"
        frame.iloc[:20, 1:].to_csv(csv, header=False, index=False)
        return ["check", csv], ("187 columns", "expected 188")
    if case == "mitbih labels read as ptb":
        frame.loc[:4, "target"] = [0, 1, 2, 3, 4]
        frame.to_parquet(tmp / "beats.parq")
        return ["check", tmp / "beats.parq", "--dataset", "ptb"], ("label 2", "out of range")
    raise AssertionError(case)


TABLE_CASES = ["missing file", "not parquet", "186 columns", "no target", "NaN in signal",
               "label 7 for ptb", "label 1.5", "zero rows", "CSV wrong column count",
               "mitbih labels read as ptb"]


@pytest.mark.parametrize("case", TABLE_CASES)
def test_malformed_table_is_one_line_error(case, shared_dir, tmp_path):
    args, words = _bad_table(tmp_path, shared_dir, case)
    assert_user_error(run_data_cli(*args), *words)


def _bad_records(tmp: Path, mitdb: Path, case: str) -> tuple[list, tuple[str, ...]]:
    """Break a copy of real MIT-BIH records; returns (CLI args, words the error must contain)."""
    raw = tmp / "raw"
    build = ["build", "mitbih", "--raw", raw, "--out", tmp / "out"]
    if case == "missing .atr":
        record_copy(mitdb, raw, ("100", "101"))
        (raw / "101.atr").unlink()
        return build, ("record 101", "101.atr is missing")
    if case == "no preferred lead":
        record_copy(mitdb, raw, ("100",))
        header = (raw / "100.hea").read_text().replace(" MLII", " ECG1").replace(" V5", " ECG2")
        (raw / "100.hea").write_text(header)
        return build, ("record 100", "none of the leads", "ECG1,ECG2")
    if case == "truncated .dat":
        record_copy(mitdb, raw, ("100", "101"))
        (raw / "101.dat").unlink()
        (raw / "101.dat").write_bytes((mitdb / "101.dat").read_bytes()[:100_000])
        return build, ("record 101", "truncated")
    if case == "bad --split":
        return ["build", "mitbih", "--raw", mitdb, "--out", tmp, "--split", "random"], \
            ("--split", "random")
    if case == "test fraction 1.5":
        return ["build", "mitbih", "--raw", mitdb, "--out", tmp, "--test-fraction", "1.5"], \
            ("--test-fraction", "1.5")
    if case == "raw dir missing":
        return ["build", "mitbih", "--raw", tmp / "nowhere", "--out", tmp], ("nowhere", "not found")
    if case == "raw dir without records":
        raw.mkdir()
        return build, ("no RECORDS file and no .hea",)
    if case == "ptb dir without records":
        raw.mkdir()
        return ["build", "ptb", "--raw", raw, "--out", tmp / "out"], ("no .hea",)
    if case == "interpatient without DS2":
        return ["build", "mitbih", "--raw", mitdb, "--out", tmp, "--records", "101",
                "--split", "interpatient"], ("interpatient", "DS2")
    raise AssertionError(case)


RECORD_CASES = ["missing .atr", "no preferred lead", "truncated .dat", "bad --split",
                "test fraction 1.5", "raw dir missing", "raw dir without records",
                "ptb dir without records", "interpatient without DS2"]


@pytest.mark.parametrize("case", RECORD_CASES)
def test_malformed_records_are_one_line_errors(case, mitdb_dir, tmp_path):
    args, words = _bad_records(tmp_path, mitdb_dir, case)
    assert_user_error(run_data_cli(*args), *words)
    assert not (tmp_path / "out").exists()  # nothing half-built
