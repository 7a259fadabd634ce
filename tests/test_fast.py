"""The fast tier end to end on synthetic data (no ../shared): small beat tables of both
datasets and made-up raw records go through the commands a user runs, from building tables to
annotating records (and, in the slow tier, a tuning run and its report)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest
import wfdb

import heartjax
from heartjax import annotate, cluster, evaluate, score
from heartjax.config import base_config
from heartjax.data import TABLE_FILES, load_dataset, load_table
from heartjax.data.__main__ import main as data_main
from heartjax.errors import UserError
from heartjax.report.cli import main as report_main
from tests.conftest import REPO, SLOW_TESTS, train_run

FS = 360  # Hz, as MIT-BIH's raw records


@pytest.fixture(scope="module")
def mitbih_run(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch `heartjax.train` run of the MIT-BIH smoke config on the synthetic tables."""
    return train_run("configs/mitbih.py:smoke", synthetic_dir,
                     tmp_path_factory.mktemp("fast") / "run", epochs=1)


def write_record(folder: Path, name: str, seed: int, seconds: float = 60) -> int:
    """A raw WFDB record (lead MLII at 360 Hz) of narrow upright N and wide inverted V beats, and
    its reference annotation RECORD.atr; returns its number of beats."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS))
    peaks = np.cumsum(rng.uniform(0.7, 0.9, int(seconds / 0.7)) * FS).astype(int)
    peaks = peaks[(peaks > FS) & (peaks < len(t) - FS)]
    symbols = np.where(np.arange(len(peaks)) % 5 == 4, "V", "N")
    signal = 0.05 * rng.standard_normal(len(t))
    for p, s in zip(peaks, symbols):
        height, width = (1.5, 4.0) if s == "N" else (-1.2, 12.0)
        signal += height * np.exp(-0.5 * ((t - p) / width) ** 2)
        signal += 0.3 * np.exp(-0.5 * ((t - p - 0.25 * FS) / 20) ** 2)  # the T wave
    wfdb.wrsamp(name, fs=FS, units=["mV"], sig_name=["MLII"], p_signal=signal[:, None],
                fmt=["212"], write_dir=str(folder))
    wfdb.wrann(name, "atr", peaks, symbols, fs=FS, write_dir=str(folder))
    return len(peaks)


def test_tables_load_split_and_check(synthetic_dir, tmp_path, capsys):
    mitbih = load_dataset(synthetic_dir, "mitbih", "train")
    assert mitbih.x.shape == (500, 187) and mitbih.rr.shape == (500, 4)
    assert np.bincount(mitbih.y).tolist() == [100] * 5 and len(set(mitbih.records)) == 6
    data_main(["split", str(synthetic_dir / "ptb" / "heart_train.parq"), "--out", str(tmp_path)])
    train, test = (load_table(tmp_path / name, "ptb") for name in TABLE_FILES["ptb"])
    assert (len(train), len(test)) == (240, 60)  # 20% of each class held out
    assert np.bincount(test.y).tolist() == [30, 30]
    data_main(["check", str(tmp_path / "heart_test.parq"), "--plot", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert "rows: 60" in out and out.rstrip().endswith("ok")
    assert len(list((tmp_path / "plots").glob("*.png"))) == 3


def test_one_epoch_training_evaluates_as_its_checkpoint_predicts(mitbih_run, synthetic_dir, capsys):
    assert len((mitbih_run / "metrics.jsonl").read_text().splitlines()) == 1
    table = synthetic_dir / "heart_big_test.parq"
    evaluate.main(["--checkpoint", str(mitbih_run), "--data", str(table), "--json"])
    m = json.loads(capsys.readouterr().out)
    assert m["rows"] == 125 and np.sum(m["confusion_matrix"]) == 125
    model = heartjax.load_checkpoint(mitbih_run)
    test = load_table(table)
    pred = model.predict(test.x, test.rr if model.needs_rr else None)
    assert (pred == test.y).mean() == pytest.approx(m["accuracy"])
    twice = heartjax.load_ensemble([mitbih_run, mitbih_run])  # the mean of equal members
    np.testing.assert_array_equal(twice.predict(test.x, test.rr if model.needs_rr else None), pred)


def test_made_up_records_are_built_annotated_and_scored(mitbih_run, tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    beats = {name: write_record(raw, name, seed) for seed, name in enumerate(("100", "101"))}
    (raw / "RECORDS").write_text("100\n101\n")
    data_main(["build", "mitbih", "--raw", str(raw), "--out", str(tmp_path / "built"),
               "--split", "none"])
    built = load_table(tmp_path / "built" / "heart_big_all.parq")
    assert len(built) == sum(beats.values()) and set(built.records) == {"100", "101"}
    assert set(np.unique(built.y)) == {0, 2}  # N and V
    annotate.main([str(raw / "100"), str(raw / "101"), "--checkpoint", str(mitbih_run),
                   "--out", str(out)])
    assert len(pd.read_csv(out / "100.csv")) == beats["100"]
    result = score.score(raw, out, start_s=0.0)
    assert result["gross"]["qrs"] == {"se": 1.0, "p": 1.0}  # every beat found, none made up
    assert np.sum(result["confusion"]) == sum(beats.values())


@pytest.mark.slow  # Ray's start, two trials and the winner's training: ~35 s of the fast tier's 3 min
def test_a_two_trial_ladder_tune_and_its_report(synthetic_tune_run, tmp_path, capsys):
    run = synthetic_tune_run
    trials = pd.read_csv(run / "trials.csv", dtype={"trial_id": str})
    rungs = pd.read_csv(run / "rungs.csv", dtype={"trial_id": str})
    assert len(trials) == 2 and json.loads((run / "summary.json").read_text())["configurations"] == 2
    assert rungs.groupby("rung")["trial_id"].nunique().tolist() == [2, 1]  # one of two promoted
    assert heartjax.load_checkpoint(run).path.is_relative_to(run / "best")
    report_main([str(run), "--out", str(tmp_path / "report"), "--no-test"])
    assert "2 trials" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "report" / "summary.csv")) == 2
    assert (tmp_path / "report" / "rungs.png").is_file()


def test_cluster_helpers(tmp_path):
    t = base_config("ptb", "cnn1d").tune
    t.cpus_per_trial, t.gpus_per_trial, t.resources = 2, 0.5, "worker=1"
    assert cluster.trial_resources(t) == {"cpu": 2, "gpu": 0.5, "worker": 1.0}
    assert cluster.task_options(t) == {"num_cpus": 2, "num_gpus": 0.5, "resources": {"worker": 1.0}}
    assert cluster.trial_env(t)["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.450"
    assert "sees no GPU" in cluster.device_error(t, "cpu", "")
    assert cluster.device_error(t, "gpu", "0") is None
    run = tmp_path / "run"
    assert cluster.experiment_dir("", run) == run / "ray"
    assert cluster.experiment_dir(str(tmp_path / "s"), run) == tmp_path / "s" / "run"
    assert cluster.saved_storage(run) == ""  # no run there yet
    run.mkdir()
    saved = base_config("ptb", "cnn1d")
    saved.tune.storage = "/mnt/s"
    (run / "config.json").write_text(saved.to_json())
    assert cluster.saved_storage(run) == "/mnt/s"
    cluster.check_storage(tmp_path / "storage")  # creatable and writable
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create or write"):
        cluster.check_storage(tmp_path / "file" / "storage")
    assert cluster.where()["backend"] == jax.default_backend()


def test_every_test_named_slow_in_conftest_still_exists():
    for entry in SLOW_TESTS:
        path, name = entry.split("::")
        assert f"def {name}(" in (REPO / path).read_text(), f"conftest.SLOW_TESTS: {entry} is gone"
