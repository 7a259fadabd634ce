"""Training, checkpoints, evaluation and the config CLI, on the real PTB beats."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import heartjax
from heartjax.cli import load_config
from heartjax.data import load_table
from heartjax.errors import UserError
from heartjax.train import load_splits, train_and_evaluate
from tests.conftest import assert_one_line_error, run_module


def _rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_train_writes_logs_and_checkpoints(ptb_run):
    rows = _rows(ptb_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["final"] == 1
    assert all(0 <= r["val_macro_recall"] <= 1 for r in rows)
    best = json.loads((ptb_run / "best.json").read_text())
    assert Path(best["checkpoint"]).is_dir()
    assert (ptb_run / "config.json").is_file()
    assert any((ptb_run / "tensorboard").iterdir())


def test_same_config_and_seed_give_same_metrics(ptb_tables, tmp_path):
    config = load_config("configs/ptb.py:smoke")
    config.data.dir = str(ptb_tables)
    config.train.epochs = 2
    runs = [train_and_evaluate(config, tmp_path / f"r{i}", progress=False) for i in range(2)]
    a, b = (_rows(tmp_path / f"r{i}") for i in range(2))
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == rb["train_loss"]
        assert ra["val_macro_recall"] == rb["val_macro_recall"]
    assert runs[0]["val"]["confusion_matrix"] == runs[1]["val"]["confusion_matrix"]


def test_checkpoint_round_trip_matches_evaluate(ptb_run, ptb_tables):
    model = heartjax.load_checkpoint(ptb_run)
    assert model.class_names == ("normal", "abnormal")
    test = load_table(ptb_tables / "heart_test.parq")
    pred = model.predict(test.x)
    proba = model.predict_proba(test.x)
    assert proba.shape == (len(test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    # the CLI's numbers are exactly those of the loaded predictor
    result = run_module("heartjax.evaluate", "--checkpoint", ptb_run,
                        "--data", ptb_tables / "heart_test.parq", "--json")
    assert result.returncode == 0, result.stderr
    m = json.loads(result.stdout)
    assert {"accuracy", "macro_precision", "macro_recall", "macro_f1", "per_class",
            "confusion_matrix", "roc_auc", "auc_pr"} <= set(m)
    assert set(m["per_class"]) == {"normal", "abnormal"}
    assert m["accuracy"] == pytest.approx(float((pred == test.y).mean()))
    assert np.asarray(m["confusion_matrix"]).sum() == len(test)
    # a second load predicts identically (weights restored, not re-initialised)
    np.testing.assert_array_equal(heartjax.load_checkpoint(ptb_run).predict_proba(test.x), proba)


def test_ensemble_averages_its_members(ptb_run, ptb_tables):
    import dataclasses

    import jax

    from heartjax.checkpoint import Ensemble

    one = heartjax.load_checkpoint(ptb_run)
    other = dataclasses.replace(one, variables=jax.tree.map(lambda v: 0.5 * v, one.variables))
    test = load_table(ptb_tables / "heart_test.parq")
    a, b = one.predict_proba(test.x), other.predict_proba(test.x)
    assert not np.allclose(a, b)
    both = Ensemble([one, other])
    np.testing.assert_allclose(both.predict_proba(test.x), (a + b) / 2, rtol=1e-6)
    np.testing.assert_array_equal(both.predict(test.x), ((a + b) / 2).argmax(1))
    assert both.threshold is None and both.class_names == one.class_names
    with pytest.raises(UserError, match="an ensemble needs models of one dataset"):
        Ensemble([one, dataclasses.replace(one, class_names=("N", "S", "V", "F", "Q"))])
    # the CLI: two checkpoints are their ensemble; the same one twice is that model
    single = run_module("heartjax.evaluate", "--checkpoint", ptb_run,
                        "--data", ptb_tables / "heart_test.parq", "--json")
    twice = run_module("heartjax.evaluate", "--checkpoint", ptb_run, ptb_run,
                       "--data", ptb_tables / "heart_test.parq", "--json")
    assert twice.returncode == 0, twice.stderr
    m1, m2 = json.loads(single.stdout), json.loads(twice.stdout)
    # (no stored threshold applies to a mean: compare what does not depend on one)
    assert m2["roc_auc"] == pytest.approx(m1["roc_auc"]) and m2["auc_pr"] == pytest.approx(m1["auc_pr"])
    assert m2["checkpoint"].count(",") == 1


def test_load_checkpoint_from_a_relative_path(ptb_run, monkeypatch):
    monkeypatch.chdir(ptb_run.parent)
    model = heartjax.load_checkpoint(ptb_run.name)
    assert model.path.is_absolute() and model.predict(np.zeros((3, 187), np.float32)).shape == (3,)


def test_evaluate_text_and_plot(ptb_run, ptb_tables, tmp_path):
    png = tmp_path / "cm.png"
    result = run_module("heartjax.evaluate", "--checkpoint", ptb_run,
                        "--data", ptb_tables / "heart_test.parq", "--plot", png)
    assert result.returncode == 0, result.stderr
    assert "confusion matrix" in result.stdout and "abnormal" in result.stdout
    assert png.stat().st_size > 10_000


def test_predict_rejects_bad_beats(ptb_run):
    model = heartjax.load_checkpoint(ptb_run)
    with pytest.raises(UserError, match="187"):
        model.predict(np.zeros((4, 100), np.float32))
    with pytest.raises(UserError, match="NaN"):
        model.predict(np.full((2, 187), np.nan, np.float32))


def test_threshold_for_target_recall_is_stored_and_applied(ptb_tables, tmp_path):
    config = load_config("configs/ptb.py:smoke")
    config.data.dir = str(ptb_tables)
    config.train.epochs = 2
    config.train.target_recall = 0.99
    train_and_evaluate(config, tmp_path / "run", progress=False)
    model = heartjax.load_checkpoint(tmp_path / "run")
    assert model.threshold is not None
    # the stored rule reaches the target on the validation split it was chosen on
    _, val = load_splits(config)
    pred = model.predict(val.x)
    abnormal = val.y == 1
    assert (pred[abnormal] == 1).mean() >= 0.99
    # and it is the rule predict applies
    np.testing.assert_array_equal(pred, model.predict_proba(val.x)[:, 1] >= model.threshold)


def test_corrupt_checkpoint_is_one_line_error(ptb_run, ptb_tables, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(ptb_run, broken)
    for f in (broken / "checkpoints").rglob("*"):
        if f.is_file() and "variables" in f.parts:
            f.write_bytes(b"garbage")
    result = run_module("heartjax.evaluate", "--checkpoint", broken,
                        "--data", ptb_tables / "heart_test.parq")
    assert_one_line_error(result, "corrupt")


def test_augmentations_change_beats_as_described():
    import jax
    import jax.numpy as jnp
    import ml_collections

    from heartjax.steps import augment

    t = np.arange(187)
    x = jnp.asarray(np.tile(np.exp(-0.5 * ((t - 60) / 4.0) ** 2), (256, 1)), jnp.float32)
    key = jax.random.key(0)

    def aug(**on):
        return np.asarray(augment(x, key, ml_collections.ConfigDict(
            {"scale": 0.0, "noise": 0.0, "wander": 0.0, "motion": 0.0, "shift": 0, "stretch": 0.0,
                 "real_noise": 0.0, "real_noise_snr": (0.0, 24.0),
             **on})))

    np.testing.assert_array_equal(aug(), x)  # all off: the beat is untouched
    peak = aug(scale=0.2).max(1)
    assert 0.8 <= peak.min() < 0.9 and 1.1 < peak.max() <= 1.2
    moved = aug(shift=3).argmax(1)
    assert set(moved.tolist()) == set(range(57, 64))
    warped = aug(stretch=0.1).argmax(1)  # the wave at 60 lands at 60 / factor
    assert 54 <= warped.min() < 57 and 63 < warped.max() <= 67
    assert abs((aug(noise=0.05) - np.asarray(x)).std() - 0.05) < 0.002
    # the old four keep their draws when the warp is off
    np.testing.assert_array_equal(aug(scale=0.2, stretch=0.0), aug(scale=0.2))
    # electrode motion: smooth transients no higher than 3 x motion, beside the untouched beat
    moved = aug(motion=0.2) - np.asarray(x)
    assert 0.1 < np.abs(moved).max() <= 0.6 + 1e-6
    assert np.abs(np.diff(moved, axis=1)).max() < 0.1  # smooth: no step from one sample to the next
    assert len({row.argmax() for row in np.abs(moved)}) > 50  # anywhere in the beat
    np.testing.assert_array_equal(aug(scale=0.2, motion=0.0), aug(scale=0.2))


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--config", "configs/nope.py"], "not found"),
        (["--config", "configs/ptb.py:huge"], "no variant"),
        (["--config", "configs/ptb.py", "--config.train.loss=hinge"], "train.loss"),
        (["--config", "configs/ptb.py", "--config.train.nope=1"], "no field"),
        (["--config", "configs/ptb.py", "--config.train.epochs=many"], "train.epochs"),
        (["--config", "configs/ptb.py", "--config.data.val_fraction=1.5"], "val_fraction"),
        (["--config", "configs/ptb.py", "--config.model.name=lstm"], "unknown model"),
        (["--config", "configs/ptb.py", "--config.data.dir=/nonexistent"], "heart_train.parq"),
        (["--config", "configs/ptb.py", "--config.train.augment.noise=-0.1"], "augment.noise"),
        (["--config", "configs/ptb.py", "--config.train.augment.motion=-0.1"], "augment.motion"),
        (["--config", "configs/ptb.py", "--config.data.val_by=patients"], "data.val_by"),
        (["--config", "configs/ptb.py", "--config.data.folds=3"], "data.folds=3"),
        (["--config", "configs/ptb.py", "--config.train.eval_every=0"],
         "train.eval_every=0 must be >= 1"),
        (["--config", "configs/ptb.py", "--config.train.class_weight_scale=(1,-1)"],
         "must hold factors > 0"),
        (["--config", "configs/ptb.py", "--config.train.class_weight_scale=(1,2,3)"],
         "one factor per class (normal, abnormal)"),
    ],
)
def test_bad_config_is_one_line_error(args, needle, tmp_path):
    result = run_module("heartjax.train", *args, "--workdir", tmp_path / "w", timeout=120)
    assert_one_line_error(result, needle)
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_existing_run_is_not_overwritten(ptb_run, ptb_tables):
    before = (ptb_run / "metrics.jsonl").read_text()
    result = run_module("heartjax.train", "--config", "configs/ptb.py:smoke",
                        f"--config.data.dir={ptb_tables}", "--workdir", ptb_run)
    assert_one_line_error(result, "--overwrite")
    assert (ptb_run / "metrics.jsonl").read_text() == before


def test_evaluate_rejects_other_dataset(ptb_run, mitbih_tables):
    result = run_module("heartjax.evaluate", "--checkpoint", ptb_run,
                        "--data", mitbih_tables / "heart_big_test.parq")
    assert_one_line_error(result, "mitbih")


def test_cnn1d_beats_majority_baseline_on_real_ptb(ptb_tables, tmp_path):
    """A few epochs of the default PTB cnn1d clearly beat always-abnormal (72%) on test."""
    config = load_config("configs/ptb.py")
    config.data.dir = str(ptb_tables)
    config.train.epochs = 12
    train_and_evaluate(config, tmp_path / "run", progress=False)
    test = load_table(ptb_tables / "heart_test.parq")
    acc = float((heartjax.load_checkpoint(tmp_path / "run").predict(test.x) == test.y).mean())
    majority = max(np.mean(test.y), 1 - np.mean(test.y))
    assert majority == pytest.approx(0.72, abs=0.01)
    assert acc > majority + 0.06, acc


def test_transfer_config_without_its_source_model_is_one_line(ptb_tables, tmp_path):
    result = run_module("heartjax.train", "--config", "configs/ptb.py:best",
                        f"--config.data.dir={ptb_tables}",
                        f"--config.train.init_from={tmp_path / 'no-source'}",
                        "--workdir", tmp_path / "run")
    assert_one_line_error(result, "train.init_from", "no-source")
    assert not (tmp_path / "run" / "checkpoints").exists()



@pytest.mark.parametrize("module, args, needle", [
    ("heartjax.train", ["--config", "configs/ptb.py:smoke"], "--workdir"),
    ("heartjax.train", ["--config", "configs/ptb.py:smoke", "--workdir", "w", "--bogus"], "--bogus"),
    ("heartjax.evaluate", ["--checkpoint"], "--checkpoint"),
    ("heartjax.report", [], "RUN_DIR"),
])
def test_bad_flags_are_one_line(module, args, needle):
    assert_one_line_error(run_module(module, *args), needle)


def test_missing_second_lead_table_is_one_line_error(mitbih_tables, tmp_path):
    result = run_module("heartjax.train", "--config", "configs/mitbih.py:interpatient_ds1",
                        f"--config.data.dir={mitbih_tables}",
                        f"--config.data.extra_train={tmp_path / 'nope.parq'}",
                        "--workdir", tmp_path / "w", timeout=120)
    assert_one_line_error(result, "data.extra_train", "table not found", "--leads V1,V2,V4,V5")
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_with_model_changes_the_mix_of_the_same_weights(mitbih_model, mitbih_tables):
    from heartjax.data import load_dataset

    model = heartjax.load_checkpoint(mitbih_model)
    own = (0.75, 0.75, 0.4, 0.75, 0.75)
    assert tuple(model.config.model.morph_mix) == own
    test = load_dataset(mitbih_tables, "mitbih", "test").subset(np.arange(2000))

    def proba(m):
        return m.predict_proba(test.x, test.rr, test.records)

    np.testing.assert_allclose(proba(model.with_model(morph_mix=own)), proba(model), atol=1e-6)
    same = proba(model.with_model(morph_mix=(0.75,)))  # one mix for every class
    shape_only = proba(model.with_model(morph_mix=()))
    half = proba(model.with_model(morph_mix=(0.375,)))
    assert np.abs(shape_only - same).max() > 0.05  # the mix matters to these beats
    assert np.abs(proba(model) - same).max() > 1e-3  # and V's own mix to some
    # the mixture is linear in the mix: 0.375 lies halfway between 0 and 0.75
    np.testing.assert_allclose(half, (shape_only + same) / 2, atol=1e-5)
    # V's own mix: the one-mix probabilities of 0.4 for V, 0.75 for the others, renormalised
    at_04 = proba(model.with_model(morph_mix=(0.4,)))
    mixed = np.concatenate([same[:, :2], at_04[:, 2:3], same[:, 3:]], axis=1)
    np.testing.assert_allclose(proba(model), mixed / mixed.sum(1, keepdims=True), atol=1e-5)
    assert tuple(model.config.model.morph_mix) == own  # the loaded model is left as it was


def _as_saved_before(config: dict) -> dict:
    """`config` as heartjax saved it before model.context and the one morph_mix: use_rr and
    use_template, morph_mix beside morph_mix_by_class, the inputs since removed (off), and
    without the fields added since (here at their defaults)."""
    c = json.loads(json.dumps(config))
    model = c["model"]
    parts, mix = model.pop("context"), model.pop("morph_mix")
    model.update(use_rr="rr" in parts, use_template="template" in parts, morph_mix=0.75,
                 morph_mix_by_class=mix, use_rhythm=False, use_irregularity=False,
                 use_size=False, use_median_diff=False)
    c["data"]["irregular_copies"] = 0.0
    for section, field in (("model", "conv_impl"), ("train", "eval_every"),
                           ("train", "record_balance_classes")):
        del c[section][field]
    del c["train"]["augment"]["motion"]
    return c


def test_a_checkpoint_saved_before_todays_fields_loads_as_it_was(mitbih_model, mitbih_tables,
                                                                 tmp_path):
    from heartjax.checkpoint import best_checkpoint
    from heartjax.data import load_dataset

    step, _ = best_checkpoint(mitbih_model)
    shutil.copytree(step, tmp_path / "old")
    meta_file = tmp_path / "old" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["config"] = _as_saved_before(meta["config"])
    meta_file.write_text(json.dumps(meta))
    model, old = heartjax.load_checkpoint(mitbih_model), heartjax.load_checkpoint(tmp_path / "old")
    def saved(m):
        return json.loads(json.dumps(m.config.to_dict()))

    assert saved(old) == saved(model)
    test = load_dataset(mitbih_tables, "mitbih", "test").subset(np.arange(500))
    np.testing.assert_array_equal(old.predict_proba(test.x, test.rr, test.records),
                                  model.predict_proba(test.x, test.rr, test.records))
    meta["config"]["model"]["use_size"] = True  # an input heartjax no longer has
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(UserError, match="model.use_size=True.*commit 1daa95e"):
        heartjax.load_checkpoint(tmp_path / "old")


def test_migrate_maps_the_old_fields():
    from heartjax.config import base_config, migrate

    saved = base_config("ptb", "cnn1d").to_dict()
    del saved["model"]["context"], saved["train"]["eval_every"]
    saved["model"].update(use_rr=False, use_template=False, morph_mix=0.0)
    new = migrate(saved)
    assert new["model"]["context"] == () and new["model"]["morph_mix"] == ()
    assert new["train"]["eval_every"] == 1 and "use_rr" not in new["model"]
    assert "use_rr" in saved["model"]  # the saved dict is left as it was
    saved["model"].update(use_rr=True, morph_mix=0.5)
    assert migrate(saved)["model"]["context"] == ("rr",)
    assert migrate(saved)["model"]["morph_mix"] == (0.5,)
    assert migrate(new) == new  # today's config is left as it is
