"""Tuning: search-space validation, conditional sampling, and real Ray Tune runs on PTB beats."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

import heartjax
from heartjax import space
from heartjax.cli import load_config
from heartjax.data import load_dataset
from heartjax.errors import UserError
from tests.conftest import REPO, assert_one_line_error, run_module


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"train": {"nope": ("uniform", 0.0, 1.0)}}, "no field train.nope"),
        ({"train": {"loss": ("choice", [])}}, "non-empty"),
        ({"train": {"learning_rate": ("loguniform", 1e-2, 1e-4)}}, "low"),
        ({"train": {"learning_rate": ("loguniform", 0.0, 1e-4)}}, "low > 0"),
        ({"train": {"learning_rate": ("gaussian", 0.0, 1.0)}}, "kind"),
        ({"model": {"height": ("choice", [16, 24])}}, "model.name"),
        ({"model": {"name": ("choice", ["cnn2d", "lstm"])}}, "unknown model"),
        ({"model": {"height": ("choice", [16], "model.name=cnn2d")}}, None),  # valid
    ],
)
def test_search_space_validation(bad, needle):
    config = load_config("configs/ptb.py:smoke")
    if needle is None:
        config.tune.search_space = {"model": {"name": ("choice", ["cnn1d", "cnn2d"]), **bad["model"]}}
        assert [p.path for p in space.parse(config.tune.search_space, config)][-1] == "model.height"
        return
    config.tune.search_space = bad
    with pytest.raises(UserError, match=needle):
        space.parse(config.tune.search_space, config)


def test_conditional_fields_are_sampled_only_for_their_model():
    config = load_config("configs/ptb.py:smoke")
    config.tune.search_space = {
        "model": {"name": ("choice", ["cnn1d", "cnn2d"]), "height": ("choice", [16, 24], "model.name=cnn2d")},
        "train": {"learning_rate": ("loguniform", 1e-4, 1e-2)},
    }
    sampler = space.DefineByRun(tuple(space.parse(config.tune.search_space, config)))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        values = sampler(study.ask())["params"]
        seen.add(values["model.name"])
        assert ("model.height" in values) == (values["model.name"] == "cnn2d")
        c = space.apply(config, values)
        assert c.model.name == values["model.name"] and 1e-4 <= c.train.learning_rate <= 1e-2
        if values["model.name"] == "cnn2d":
            assert c.model.height == values["model.height"] and "channels" in c.model
    assert seen == {"cnn1d", "cnn2d"}


@pytest.mark.parametrize(
    "override, needle",
    [
        ("--config.tune.search_alg=grid", "search_alg"),
        ("--config.tune.scheduler=pbt", "scheduler"),
        ("--config.tune.search_space.train.learning_rate=('loguniform', 1e-2, 1e-4)", "low"),
        ("--config.tune.num_samples=0", "num_samples"),
        ("--config.tune.ladder=(500,100)", "shrink"),
        ("--config.tune.time_budget_s=-1", "time_budget_s"),
        ("--config.tune.start_points=({'model.name': 'cnn2d'},)", "does not search"),
        ("--config.tune.folds=3", "tune.folds=3"),  # folds need a ladder and whole records
        ("--config.tune.batch_folds=sometimes", "batch_folds"),
        ("--config.tune.gpus_per_trial=1.5", "gpus_per_trial"),
    ],
)
def test_bad_tune_config_fails_before_ray(override, needle, ptb_tables, tmp_path):
    result = run_module("heartjax.tune", "--config", "configs/ptb.py:smoke",
                        f"--config.data.dir={ptb_tables}", override, "--workdir", tmp_path / "run")
    assert_one_line_error(result, needle)
    assert not (tmp_path / "run" / "ray").exists()


def _tune_cmd(ptb_tables: Path, workdir: Path, *extra: str, config: str = "configs/ptb.py:smoke",
              report: bool = False) -> list[str]:
    return [sys.executable, "-m", "heartjax.tune", "--config", config,
            f"--config.data.dir={ptb_tables}", "--workdir", str(workdir), "--verbose", "0",
            *([] if report else ["--no-report"]), *extra]


LADDER = ("--config.tune.ladder=(200,0)", "--config.tune.rung_beats=512",
          "--config.tune.reduction_factor=2", "--config.tune.num_samples=6",
          "--config.tune.time_budget_s=0", "--config.train.epochs=2",
          "--config.tune.max_concurrent_trials=2")


def test_ladder_tune_retrains_the_winner_and_reports_it_beside_the_original(ptb_tables, tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        _tune_cmd(ptb_tables, workdir, *LADDER, config="configs/ptb.py:tune_cnn2d", report=True),
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_csv(workdir / "trials.csv", dtype={"trial_id": str})
    rungs = pd.read_csv(workdir / "rungs.csv", dtype={"trial_id": str})
    summary = json.loads((workdir / "summary.json").read_text())
    assert len(trials) == 6 and set(rungs["budget"]) <= {512, 1024}
    assert [r["trials"] for r in summary["ladder"]][0] == 6 == summary["configurations"]
    assert summary["ladder"][1]["trials"] == rungs.loc[rungs["rung"] == 1, "trial_id"].nunique()
    train_rows = json.loads((workdir / "dataset.json").read_text())["train_rows"]
    pools = [r["pool"] for r in summary["ladder"]]
    assert 195 <= pools[0] <= 200 and pools[1] == train_rows  # a stratified 200, then all
    assert pools == rungs.groupby("rung")["pool"].first().tolist()
    # the untuned original (the start point) is one of the trials
    assert ((trials["param:model.cnn2d.channels"] == 16) & (trials["param:model.cnn2d.num_blocks"] == 1)
            & (trials["param:train.learning_rate"] == 1e-3)).any()
    # the winner, retrained at full fidelity, is the run's checkpoint; the original beside it
    best = heartjax.load_checkpoint(workdir)
    assert best.path.is_relative_to(workdir / "best") and best.meta["epoch"] <= 2
    assert summary["retrained"]["trial_id"] == trials.iloc[0]["trial_id"]
    assert (workdir / "original" / "best.json").exists()
    compared = pd.read_csv(workdir / "report" / "original_vs_tuned.csv")
    assert compared["model"].tolist() == ["untuned original", "tuned"]
    assert compared["architecture"].tolist() == ["cnn2d", "cnn2d"]
    md = (workdir / "report" / "summary.md").read_text()
    assert "untuned original beside the tuned model" in md and "Fidelity ladder" in md
    assert (workdir / "report" / "rungs.png").exists()
    assert (workdir / "report" / "best_so_far.png").exists()


def test_a_search_scored_by_cross_validation_trains_every_fold(mitbih_tables, tmp_path):
    workdir = tmp_path / "cv"
    cmd = [sys.executable, "-m", "heartjax.tune", "--config", "configs/mitbih.py:smoke",
           f"--config.data.dir={mitbih_tables}", "--config.data.val_by=records",
           "--config.data.train_limit=1500", "--config.tune.folds=3",
           "--config.tune.ladder=(200,0)", "--config.tune.rung_beats=512",
           "--config.tune.reduction_factor=2", "--config.tune.num_samples=2",
           "--config.tune.retrain=False", "--workdir", str(workdir), "--verbose", "0",
           "--no-report"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    folds = json.loads((workdir / "dataset.json").read_text())["folds"]
    records = load_dataset(mitbih_tables, "mitbih", "train").records
    assert len(folds) == 3 and sorted(sum(folds, [])) == sorted(set(records.astype(str)))
    rungs = pd.read_csv(workdir / "rungs.csv", dtype={"trial_id": str})
    assert len(rungs) >= 2 and (rungs["beats_seen"] >= 3 * rungs["budget"]).all()
    assert rungs["val_nsv_recall"].between(0, 1).all()
    report = run_module("heartjax.report", workdir, "--out", workdir / "report", "--no-test",
                        timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "cross-validation over 3 folds of records" in (workdir / "report" / "summary.md").read_text()


@pytest.fixture(scope="module")
def smoke_run(ptb_tables, tmp_path_factory) -> Path:
    """The PTB smoke tune: 8 trials with ASHA on the real beats."""
    workdir = tmp_path_factory.mktemp("tune") / "run"
    result = subprocess.run(_tune_cmd(ptb_tables, workdir), cwd=REPO, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_smoke_tune_runs_trials_and_asha_stops_some(smoke_run):
    trials = pd.read_csv(smoke_run / "trials.csv")
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert (trials["status"] == "stopped").any() and (trials["status"] == "finished").any()
    assert trials["val_macro_recall"].notna().all()
    epochs = pd.read_csv(smoke_run / "epochs.csv")
    assert set(epochs["trial_id"]) == set(trials["trial_id"])
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["trials"] == 8 and summary["best"]["trial_id"] == trials.iloc[0]["trial_id"]
    assert json.loads((smoke_run / "dataset.json").read_text())["dataset"] == "ptb"


def test_best_checkpoint_of_run_loads_and_evaluates(smoke_run, ptb_tables):
    trials = pd.read_csv(smoke_run / "trials.csv")
    model = heartjax.load_checkpoint(smoke_run)
    # ray/trial_<id>/checkpoint_<n>/checkpoints/<step>: the trial's run folder as Ray keeps it
    assert model.path.is_relative_to(trials.iloc[0]["workdir"])
    assert model.path.parts[-4] == f"trial_{trials.iloc[0]['trial_id']}"
    assert model.meta["score"] == pytest.approx(trials["val_macro_recall"].max())
    result = run_module("heartjax.evaluate", "--checkpoint", smoke_run,
                        "--data", ptb_tables / "heart_test.parq", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["checkpoint"] == str(model.path)


def test_existing_run_needs_resume(smoke_run, ptb_tables):
    before = (smoke_run / "trials.csv").read_text()
    result = subprocess.run(_tune_cmd(ptb_tables, smoke_run), cwd=REPO, capture_output=True, text=True)
    assert_one_line_error(result, "--resume")
    assert (smoke_run / "trials.csv").read_text() == before


def test_interrupted_run_resumes_without_losing_or_repeating_trials(ptb_tables, tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_tune_cmd(ptb_tables, workdir), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # interrupt (Ctrl-C) once a few trials have reported
    deadline = time.time() + 300
    while time.time() < deadline and len(list(workdir.glob("ray/trial_*/checkpoint_*/metrics.jsonl"))) < 3:
        time.sleep(1)
    assert len(list(workdir.glob("ray/trial_*/checkpoint_*/metrics.jsonl"))) >= 3, "no trial reported in 300 s"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    assert proc.returncode == 130  # interrupted, not finished
    first = pd.read_csv(workdir / "trials.csv") if (workdir / "trials.csv").exists() else None
    assert first is None or (first["status"] != "finished").any() or len(first) < 8
    result = subprocess.run(_tune_cmd(ptb_tables, workdir, "--resume"), cwd=REPO,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_csv(workdir / "trials.csv")
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"finished", "stopped"}
    if first is not None:  # every trial seen before the interruption is still there
        assert set(first["trial_id"]) <= set(trials["trial_id"])


def test_ctrl_c_on_a_ladder_says_how_to_resume_and_resume_finishes(ptb_tables, tmp_path):
    workdir = tmp_path / "run"
    # enough trials that the search is still running when the first rung reports (with one
    # promotion in two per rung, six trials can finish within seconds)
    cmd = _tune_cmd(ptb_tables, workdir, *LADDER, "--config.tune.num_samples=16",
                    config="configs/ptb.py")
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list(workdir.glob("ray/trial_*/checkpoint_*/rungs.jsonl")):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("interrupted:") and "--resume" in last and "Traceback" not in err
    assert not (workdir / "best").exists()  # no winner from a cut search
    result = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_csv(workdir / "trials.csv")
    assert len(trials) == 16 and set(trials["status"]) <= {"finished", "stopped"}
    assert heartjax.load_checkpoint(workdir).path.is_relative_to(workdir / "best")


@pytest.mark.parametrize(
    "error, state, metrics, cut, status",
    [
        (None, "TERMINATED", {"final": 1}, False, "finished"),
        (None, "TERMINATED", {"final": 0}, False, "stopped"),
        # HyperBandForBOHB can leave a trial that reported its last epoch PAUSED
        (None, "PAUSED", {"final": 1}, True, "finished"),
        # ... and one it paused at a rung, then stopped, in a search that ended by itself
        (None, "PAUSED", {"final": 0}, False, "stopped"),
        (None, "PAUSED", {"final": 0}, True, "interrupted"),  # Ctrl-C: --resume goes on
        (None, "RUNNING", {}, True, "interrupted"),
        (RuntimeError("x"), "TERMINATED", {"final": 1}, False, "error"),
        (None, "ERROR", None, False, "error"),
    ],
)
def test_trial_status(error, state, metrics, cut, status):
    from types import SimpleNamespace

    from heartjax.tune_tables import trial_status

    assert trial_status(SimpleNamespace(error=error, metrics=metrics), state, cut) == status


def test_a_search_is_cut_when_trials_are_left_to_run():
    from heartjax.tune_tables import run_was_cut

    assert not run_was_cut({"a": "TERMINATED", "b": "PAUSED", "c": "ERROR"})
    assert run_was_cut({"a": "TERMINATED", "b": "PAUSED", "c": "PENDING"})
    assert run_was_cut({"a": "RUNNING"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_bohb_with_its_hyperband(ptb_tables, tmp_path):
    result = subprocess.run(
        _tune_cmd(ptb_tables, tmp_path / "run", "--config.tune.search_alg=bohb",
                  "--config.tune.scheduler=hyperband", "--config.tune.num_samples=4",
                  "--config.train.epochs=2"),
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert len(trials) == 4 and set(trials["status"]) <= {"finished", "stopped"}
    # BOHB proposed the values: each trial's own, inside the smoke space's ranges
    assert trials["param:train.learning_rate"].between(3e-4, 3e-3).all()
    assert trials["param:train.learning_rate"].nunique() == 4


def test_tune_on_a_separately_started_ray_head(ptb_tables, tmp_path):
    ray = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    # --block keeps the head in this one process: ending it stops this head only, not any
    # other Ray on the machine (`ray stop` would stop them all)
    # a private temp dir: `ray start` records its address in /tmp/ray, where later plain
    # ray.init() calls on the machine would find it after this head is gone
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    head = subprocess.Popen([ray, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        result = subprocess.run(
            _tune_cmd(ptb_tables, tmp_path / "run", f"--ray_address=127.0.0.1:{port}",
                      "--config.tune.num_samples=2", "--config.train.epochs=1"),
            cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        trials = pd.read_csv(tmp_path / "run" / "trials.csv")
        assert len(trials) == 2 and (trials["status"] == "finished").all()
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_local_run_ignores_a_stale_ray_start_address(ptb_tables, tmp_path):
    # `ray start` records its address in $RAY_TMPDIR/ray; a plain ray.init() would join it even
    # after that cluster is gone, and hang: a local tune must start its own Ray
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")
    try:
        result = subprocess.run(
            _tune_cmd(ptb_tables, tmp_path / "run", "--config.tune.num_samples=1",
                      "--config.train.epochs=1"),
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={**os.environ, "RAY_TMPDIR": str(ray_tmp)})
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(pd.read_csv(tmp_path / "run" / "trials.csv")) == 1


def test_mlflow_logs_every_trial(ptb_tables, tmp_path):
    mlflow = pytest.importorskip("mlflow")
    workdir = tmp_path / "run"
    result = subprocess.run(
        _tune_cmd(ptb_tables, workdir, "--mlflow", "--config.tune.num_samples=2",
                  "--config.train.epochs=1"),
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    assert len(runs) == 2 and runs["metrics.val_macro_recall"].notna().all()


def test_population_tune_reports_trials_and_configurations_truthfully(ptb_tables, tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        _tune_cmd(ptb_tables, workdir, "--config.tune.population=3", "--config.tune.num_samples=2",
                  "--config.train.epochs=1", "--config.tune.scheduler=fifo"),
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 configurations" in result.stdout
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["trials"], summary["population"], summary["configurations"]) == (2, 3, 6)
    members = pd.read_csv(workdir / "members.csv")
    assert len(members) == 6 and set(members["member"]) == {0, 1, 2}
    trials = pd.read_csv(workdir / "trials.csv")
    for _, trial in trials.iterrows():  # a trial's values and metric are its best member's
        mine = members[members["trial_id"] == trial["trial_id"]]
        lead = mine.loc[mine["val_macro_recall"].idxmax()]
        assert trial["member"] == lead["member"]
        assert trial["param:train.learning_rate"] == pytest.approx(lead["train.learning_rate"])
        assert trial["val_macro_recall"] == pytest.approx(lead["val_macro_recall"])


def test_a_population_climbs_the_ladder_and_its_best_member_is_retrained(ptb_tables, tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run(
        _tune_cmd(ptb_tables, workdir, *LADDER, "--config.tune.population=3",
                  "--config.tune.num_samples=3", config="configs/ptb.py:tune_cnn2d"),
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert (summary["trials"], summary["configurations"]) == (3, 9)  # every member counts
    members = pd.read_csv(workdir / "members.csv", dtype={"trial_id": str})
    trials = pd.read_csv(workdir / "trials.csv", dtype={"trial_id": str})
    assert len(members) == 9 and (members.groupby("trial_id")["rung"].nunique() == 1).all()
    winner = trials.iloc[0]
    mine = members[members["trial_id"] == winner["trial_id"]]
    lead = mine.loc[mine["val_macro_recall"].idxmax()]
    assert winner["member"] == lead["member"]
    # the winner's full training trains its best member's values, not the searcher's
    best = heartjax.load_checkpoint(workdir)
    assert best.config.train.learning_rate == pytest.approx(lead["train.learning_rate"])
    assert summary["best_values"]["train.learning_rate"] == pytest.approx(lead["train.learning_rate"])
