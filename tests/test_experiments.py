"""Every ablation script runs end to end in --quick mode on the real data; so does the notebook."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from heartjax.cli import load_config
from heartjax.experiment import quick_overrides
from heartjax.train import train_and_evaluate
from tests.conftest import REPO, assert_one_line_error


def _run_script(name: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"experiments/{name}.py", "--quick", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("script, rows", [("loss", 4), ("reshape_2d", 6), ("resnet_size", 5), ("generalise", 5)])
def test_mitbih_ablation_quick(script, rows, mitbih_tables, tmp_path):
    result = _run_script(script, "--data-dir", mitbih_tables, "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == rows and table["variant"].is_unique
    assert table["test_macro_recall"].between(0, 1).all()
    assert {"test_recall_S", "test_recall_F", "params", "train_s"} <= set(table.columns)
    assert (tmp_path / "results.md").read_text().count("\n|") >= rows + 1
    assert (tmp_path / "results.png").stat().st_size > 10_000
    for variant in table["variant"]:
        assert (tmp_path / variant / "test_metrics.json").is_file()
    if script == "generalise":  # a template model compares each beat with its own record
        import heartjax
        from heartjax.data import load_dataset
        from heartjax.errors import UserError

        model = heartjax.load_checkpoint(tmp_path / "rr_morph_dropout_template")
        test = load_dataset(mitbih_tables, "mitbih", "test").subset(np.arange(3000))
        by_record = model.predict_proba(test.x, test.rr, test.records)
        assert not np.allclose(by_record, model.predict_proba(test.x, test.rr))  # one group
        with pytest.raises(UserError, match="records must name"):
            model.predict_proba(test.x, test.rr, test.records[:10])


def test_transfer_quick_on_real_ptb(mitbih_tables, ptb_tables, tmp_path):
    result = _run_script("transfer", "--data-dir", ptb_tables, "--mitbih-dir", mitbih_tables,
                         "--out", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["variant"]) == ["scratch", "finetune_all", "finetune_head"]
    assert {"test_recall_abnormal", "test_recall_normal"} <= set(table.columns)
    # fine-tuning only the head trains far fewer weights: the pretrained body must be unchanged
    import heartjax

    source = heartjax.load_checkpoint(tmp_path / "mitbih_source").variables["params"]
    head = heartjax.load_checkpoint(tmp_path / "finetune_head").variables["params"]
    import numpy as np

    np.testing.assert_array_equal(source["Conv_0"]["kernel"], head["Conv_0"]["kernel"])


def test_notebook_runs_headless(mitbih_tables, tmp_path):
    config = load_config(str(REPO / "configs/mitbih.py:smoke"))
    config.data.dir = str(mitbih_tables)
    quick_overrides(config)
    config.train.epochs = 1
    train_and_evaluate(config, tmp_path / "run", progress=False)
    nb = nbformat.read(REPO / "notebooks" / "classify_record.ipynb", as_version=4)
    env = {"HEARTJAX_RUN": str(tmp_path / "run"), "HEARTJAX_RECORD": "208",
           "HEARTJAX_MITDB": str(REPO.parent / "shared/data/physionet/mitdb"),
           "HEARTJAX_NOTEBOOK_OUT": str(tmp_path)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO)}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "record 208:" in text and "accuracy" in text and "raw signal:" in text
    assert (tmp_path / "record_208_beats.png").stat().st_size > 20_000


def test_only_trains_the_named_variants_and_keeps_the_other_rows(mitbih_tables, tmp_path):
    from heartjax.errors import UserError
    from heartjax.experiment import run_variants

    base = load_config(str(REPO / "configs/mitbih.py:smoke"))
    base.data.dir = str(mitbih_tables)
    variants = {"a": {}, "b": {"train.learning_rate": 3e-3}, "c": {}}
    pd.DataFrame([{"variant": "a", "test_macro_recall": 0.123},
                  {"variant": "gone", "test_macro_recall": 0.5}]).to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(UserError, match="--only 'x'"):
        run_variants(base, variants, tmp_path, quick=True, only="x")
    table = run_variants(base, variants, tmp_path, quick=True, epochs=1, only="b")
    assert list(table["variant"]) == ["a", "b"]  # a kept as it was, b trained, c never ran
    assert table.loc[0, "test_macro_recall"] == 0.123
    assert 0 <= table.loc[1, "test_macro_recall"] <= 1 and (tmp_path / "b" / "test_metrics.json").is_file()
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
    assert list(pd.read_csv(tmp_path / "results.csv")["variant"]) == ["a", "b"]


def test_proxies_rebuild_the_same_beats_at_other_rates(mitbih_model, mitbih_tables, mitdb_dir,
                                                       ptb_sample_path, tmp_path):
    records = "100,103"  # DS2 records whose second channels are V5 and V2
    result = subprocess.run(
        [sys.executable, "experiments/proxies.py", "--model", f"m={mitbih_model}",
         "--raw", mitdb_dir, "--ds2", mitbih_tables / "heart_big_test.parq",
         "--ptb-sample", ptb_sample_path, "--records", records, "--work", tmp_path / "work",
         "--out", tmp_path / "out"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    from heartjax.data import load_table

    work = tmp_path / "work"
    native = load_table(work / "ds2_lead2" / "heart_big_all.parq")
    assert set(native.meta["lead"]) == {"V5", "V2"} and set(native.records) == {"100", "103"}
    for fs in (250, 500):  # the .atr positions scaled: the same beats and R-R within a sample
        other = load_table(work / f"ds2_{fs}hz" / "heart_big_all.parq")
        assert np.array_equal(other.y, native.y)
        assert np.abs(other.rr - native.rr).max() <= 2 / fs
    ptb = load_table(work / "ptb_normal.parq")
    assert len(ptb) == 537 and (ptb.y == 0).all()
    # a beat of L samples before its padding was cut as 1.2 periods: R-R = L / 1.2 / 125 s
    length = int(np.flatnonzero(ptb.x[0] > 0).max()) + 1
    assert ptb.rr[0, 0] == pytest.approx(length / 1.2 / 125)
    import json

    results = json.loads((tmp_path / "out" / "proxies.json").read_text())["results"]
    assert list(results) == ["ds2", "ds2_lead2", "ds2_250hz", "ds2_500hz", "ptb_normal"]
    assert results["ptb_normal"]["m"]["per_class"]["N"]["support"] == 537
    assert results["ds2_lead2"]["m"]["per_class"]["N"]["support"] == int((native.y == 0).sum())
    assert (tmp_path / "out" / "proxies.md").read_text().count("| m |") == 5


def test_crossval_validates_every_record_once_and_pools_the_folds(mitbih_tables, tmp_path):
    import json

    from heartjax.data import load_dataset

    result = _run_script("crossval", "--config", "configs/mitbih.py:interpatient_ds1",
                         "--data-dir", mitbih_tables, "--lead2", "", "--folds", 3,
                         "--mix", "0.25", "--adapt-norm", "1", "--work", tmp_path / "work",
                         "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads((tmp_path / "out" / "results.json").read_text())
    train = load_dataset(mitbih_tables, "mitbih", "train")
    held = [r for fold in out["folds"].values() for r in fold]
    assert sorted(held) == sorted(set(train.records))  # each record validated exactly once
    # the mix asked for and the config's own (one per class), then the config's with
    # batch-norm adaptation
    own = [0.75, 0.75, 0.4, 0.75, 0.75]
    settings = [(r["morph_mix"], r["adapt_norm"]) for r in out["rows"]]
    assert settings == [([0.25], 0), (own, 0), (own, 1)]
    for row in out["rows"]:  # pooled: every training beat is predicted once, out of fold
        cm = np.array(row["confusion_matrix"])
        assert cm.sum() == len(train)
        np.testing.assert_array_equal(cm.sum(axis=1), np.bincount(train.y, minlength=5))
        assert len(row["folds_nsv_recall"]) == 3
    ds1 = ("--config", "configs/mitbih.py:interpatient_ds1")
    bad = _run_script("crossval", *ds1, "--data-dir", mitbih_tables, "--variants", "nope")
    assert bad.returncode == 2 and "unknown --variants nope" in bad.stderr
    # a config override trains its own models: the folds' models of another config are not reused
    bad = _run_script("crossval", *ds1, "--data-dir", mitbih_tables, "--lead2", "", "--folds", 3,
                      "--config.model.rr_seconds=True", "--work", tmp_path / "work",
                      "--out", tmp_path / "out2")
    assert bad.returncode == 2 and "another config" in bad.stderr, bad.stderr[-2000:]
    assert not (tmp_path / "out2").exists()
    bad = _run_script("crossval", *ds1, "--data-dir", mitbih_tables, "--adapt-norm", "2")
    assert bad.returncode == 2 and "(0, 1]" in bad.stderr
    # the two-database config names its tables: --data-dir would be ignored, so it is refused
    bad = _run_script("crossval", "--data-dir", mitbih_tables)
    assert bad.returncode == 2 and "interpatient_ds1" in bad.stderr


def test_every_crossval_variant_sets_knobs_the_interpatient_config_has():
    import importlib.util

    from heartjax import space

    spec = importlib.util.spec_from_file_location("crossval", REPO / "experiments/crossval.py")
    crossval = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crossval)
    base = load_config(str(REPO / "configs/mitbih.py:interpatient"))
    for name, overrides in crossval.VARIANTS.items():
        config = space.apply(base, overrides)  # a misspelt knob is a KeyError here
        for path, value in overrides.items():
            node = config
            for part in path.split("."):
                node = node[part]
            assert node == value, (name, path)


def test_batch_norm_adaptation_normalises_each_record_by_its_own_beats(mitbih_model, mitbih_tables):
    """With share 1 a record is classified as a training-mode pass over its beats classifies
    it (batch norm on the batch's statistics; dropout off): the undone momentum step is exact."""
    import jax

    from experiments.crossval import adapted_proba
    from heartjax.checkpoint import load_checkpoint
    from heartjax.data import context_features, load_dataset
    from heartjax.models import build_model

    model = load_checkpoint(mitbih_model).with_model(morph_mix=(), morph_dropout=0.0, dropout=0.0)
    table = load_dataset(mitbih_tables, "mitbih", "test")
    table = table.subset(np.flatnonzero(np.asarray(table.records).astype(str) == table.records[0])[:400])
    module = build_model(model.config.model, len(model.class_names))
    ctx = context_features(table.x, table.rr, None, model.config.model.context)
    logits, _ = module.apply(model.variables, table.x, ctx, train=True, mutable=["batch_stats"],
                             rngs={"dropout": jax.random.PRNGKey(0)})
    adapted = adapted_proba(model, table, 1.0)
    np.testing.assert_allclose(adapted, np.asarray(jax.nn.softmax(logits)), atol=2e-4)
    trained = model.predict_proba(table.x, table.rr)
    assert np.abs(adapted - trained).max() > 1e-3  # the record's statistics are not the trained ones
    np.testing.assert_allclose(adapted_proba(model, table, 0.0), trained, atol=1e-5)  # share 0


def test_ludb_qrs_scores_annotates_detection_on_lead_ii(shared_dir, tmp_path):
    """Two LUDB records: lead ii, three scorings whose counts add up, the report written."""
    import json

    ludb = shared_dir / "data" / "physionet" / "ludb"
    if not (ludb / "RECORDS").is_file():
        pytest.skip(f"LUDB records not found in {ludb}")
    result = subprocess.run([sys.executable, "experiments/ludb_qrs.py", "1", "110",
                             "--records-dir", str(ludb), "--out", str(tmp_path / "ludb")],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "ludb.json").read_text())
    assert [r["lead"] for r in report["records"]] == ["ii", "ii"] and report["headline"] == "span"
    for r in report["records"]:
        assert r["all"]["tp"] + r["all"]["fn"] == r["reference"]  # every marked QRS counted
        assert r["all"]["tp"] + r["all"]["fp"] == r["detected"]
        assert r["span"]["fp"] <= r["edges"]["fp"] <= r["all"]["fp"]
    first, small = report["records"]
    assert first["span"] == {"tp": first["reference"], "fn": 0, "fp": 0}, first
    # record 110's lead ii QRS complexes are small (0.14 mV): gqrs finds them through the
    # amplitude floor (annotate.MIN_QRS_MV), 1 of 13 without it
    assert small["span"]["fn"] <= 1, small
    assert small["variants"]["annotate without the amplitude floor"]["fn"] >= 10, small
    assert "| 110 |" in (tmp_path / "ludb.md").read_text()


def test_crossval_seeds_gives_each_seeds_scores_their_spread_and_ensemble(tmp_path):
    import json

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 40)
    database = np.repeat(["mitdb", "svdb"], 60)
    record = np.char.add(database, np.arange(120).astype(str))
    for seed in (0, 1):
        proba = rng.dirichlet(np.ones(5), 120)
        proba[np.arange(120), y] += 0.4 + 0.3 * seed  # seed 1 is surer, and right more often
        np.savez_compressed(tmp_path / f"oof_shipped_seed{seed}.npz", proba=proba, y=y,
                            record=record, database=database)
    def run(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "experiments/crossval_seeds.py", *map(str, args)],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    result = run(tmp_path, "--seeds", "0,1", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "seeds.json").read_text())["rows"]
    assert [r["database"] for r in rows] == ["mitdb", "svdb", "all"]
    for r in rows:
        for k, spread in r["spread"].items():
            assert spread == pytest.approx(abs(r["seeds"][0][k] - r["seeds"][1][k]))
    missing = run(tmp_path, "--seeds", "0,2", "--out", tmp_path / "o2")
    assert_one_line_error(missing, "oof_shipped_seed2.npz not found", "--seed 2")
