"""Ray clusters on this machine: a head and a worker node, a storage apart from the run folder,
trials sharing a (declared) GPU, and each trial's environment."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

import heartjax
from heartjax import cluster
from heartjax.config import base_config
from tests.conftest import REPO, assert_one_line_error, run_module

LADDER = ("--config.tune.ladder=(200,0)", "--config.tune.rung_beats=512",
          "--config.tune.reduction_factor=2", "--config.tune.num_samples=4",
          "--config.train.epochs=2")
EPOCHS = ("--config.tune.ladder=()", "--config.tune.num_samples=3", "--config.train.epochs=2")


@contextlib.contextmanager
def _cluster(**worker):
    """A head node (one CPU, no trial resources) and one worker node with `worker`'s resources;
    yields (address, the worker's node id). Its temp folder is gone when it ends."""
    from ray.cluster_utils import Cluster

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are limited
    memory = 200 * 1024**2
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "temp_dir": temp, "include_dashboard": False,
        "object_store_memory": memory})
    try:
        node = c.add_node(object_store_memory=memory, temp_dir=temp, **worker)
        c.wait_for_nodes()
        yield c.address, node.node_id
    finally:
        c.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def _tune(ptb_tables: Path, workdir: Path, *extra: str, timeout: float = 900):
    cmd = [sys.executable, "-m", "heartjax.tune", "--config", "configs/ptb.py:tune_cnn2d",
           f"--config.data.dir={ptb_tables}", "--workdir", str(workdir), "--verbose", "0",
           "--no-report", "--config.tune.time_budget_s=0", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          # the test's clusters run without Ray's token authentication
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
                               "RAY_AUTH_MODE": "disabled"})


@pytest.mark.parametrize("ladder", [True, False], ids=["ladder", "epochs"])
def test_a_two_node_cluster_keeps_the_whole_run_in_its_storage(ladder, ptb_tables, tmp_path):
    workdir, storage = tmp_path / "run", tmp_path / "storage"
    knobs = (*(LADDER if ladder else EPOCHS), "--config.tune.train_original=False",
             "--config.tune.resources=trial_node=1")  # only the worker node has it
    with _cluster(num_cpus=2, resources={"trial_node": 2}) as (address, worker):
        if not ladder:  # several nodes write to one place only through a storage
            refused = _tune(ptb_tables, tmp_path / "refused", f"--ray_address={address}", *knobs)
            assert_one_line_error(refused, "--storage", "2 nodes")
            assert not (tmp_path / "refused" / "ray").exists()
        result = _tune(ptb_tables, workdir, f"--ray_address={address}", f"--storage={storage}",
                       *knobs)
        assert result.returncode == 0, result.stderr[-3000:]
    # the cluster and its temp folders are gone: everything is read from the storage
    trials = pd.read_csv(workdir / "trials.csv", dtype={"trial_id": str})
    summary = json.loads((workdir / "summary.json").read_text())
    assert len(trials) == (4 if ladder else 3) and set(trials["status"]) <= {"finished", "stopped"}
    assert trials["node"].str.endswith(worker[:8]).all()  # every trial ran on the worker node
    assert not (workdir / "ray").exists()
    on_storage = trials[trials["workdir"] != str(workdir / "best")]["workdir"]
    assert on_storage.map(lambda w: Path(w).is_relative_to(storage / "run")).all()
    model = heartjax.load_checkpoint(workdir)
    if ladder:  # the winner's full training ran as a Ray task on the worker node too
        assert summary["retrained"]["node"].endswith(worker[:8])
        assert model.path.is_relative_to(workdir / "best")
    else:
        assert model.path.is_relative_to(storage / "run")
        assert model.meta["score"] == pytest.approx(trials["val_macro_recall"].max())
    report = run_module("heartjax.report", workdir, "--out", workdir / "report", timeout=600)
    assert report.returncode == 0, report.stderr[-3000:]
    assert "unusable" not in (workdir / "report" / "summary.md").read_text()
    # --resume finds the run in the storage it was started with, on a fresh cluster
    with _cluster(num_cpus=2, resources={"trial_node": 2}) as (address, _):
        again = _tune(ptb_tables, workdir, f"--ray_address={address}", *knobs, "--resume")
        assert again.returncode == 0, again.stderr[-3000:]
    resumed = pd.read_csv(workdir / "trials.csv", dtype={"trial_id": str})
    assert sorted(resumed["trial_id"]) == sorted(trials["trial_id"])


def test_trials_share_a_gpu_by_its_fraction_and_see_their_share(tmp_path):
    import ray
    from ray import tune

    t = base_config("ptb", "cnn1d").tune
    t.gpus_per_trial = 0.5

    def record(config):
        start = time.time()
        time.sleep(3)
        keys = ("CUDA_VISIBLE_DEVICES", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                "XLA_PYTHON_CLIENT_PREALLOCATE", "JAX_PLATFORMS")
        row = {"start": start, "end": time.time(), **{k: os.environ.get(k) for k in keys}}
        out = Path(config["out"]) / f"{tune.get_context().get_trial_id()}.json"
        out.write_text(json.dumps(row))
        tune.report({"done": 1})

    with _cluster(num_cpus=8, num_gpus=1) as (address, _):  # a GPU Ray counts, JAX cannot see
        ray.init(address=address, runtime_env={"env_vars": cluster.trial_env(t)},
                 include_dashboard=False, log_to_driver=False)
        try:
            tune.Tuner(tune.with_resources(record, cluster.trial_resources(t)),
                       param_space={"out": str(tmp_path)},
                       tune_config=tune.TuneConfig(num_samples=6),
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"),
                                                 verbose=0)).fit()
        finally:
            ray.shutdown()
    rows = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    assert len(rows) == 6
    running = [sum(r["start"] <= s["start"] < r["end"] for r in rows) for s in rows]
    assert max(running) == 2  # eight CPUs free, but two halves of one GPU
    assert {r["CUDA_VISIBLE_DEVICES"] for r in rows} == {"0"}
    assert {r["XLA_PYTHON_CLIENT_MEM_FRACTION"] for r in rows} == {"0.450"}
    assert {r["XLA_PYTHON_CLIENT_PREALLOCATE"] for r in rows} == {"false"}


def test_a_trial_given_a_gpu_jax_cannot_see_ends_the_run(ptb_tables, tmp_path):
    with _cluster(num_cpus=2, num_gpus=1) as (address, _):
        result = _tune(ptb_tables, tmp_path / "run", f"--ray_address={address}",
                       f"--storage={tmp_path / 'storage'}", "--config.tune.gpus_per_trial=0.5",
                       *EPOCHS, timeout=300)
    assert_one_line_error(result, "gpus_per_trial=0.5", "sees no GPU")
    assert not (tmp_path / "storage" / "run").exists()  # no trial started


@pytest.mark.parametrize("gpus, cpus", [(0.0, 1), (0.0, 2), (0.25, 1)])
def test_each_trial_environment_is_one_jax_accepts(gpus, cpus):
    t = base_config("ptb", "cnn1d").tune
    t.gpus_per_trial, t.cpus_per_trial = gpus, cpus
    env = cluster.trial_env(t)
    assert all(f.startswith("--") for f in env["XLA_FLAGS"].split())
    assert ("--xla_cpu_multi_thread_eigen=false" in env["XLA_FLAGS"]) == (gpus == 0 and cpus == 1)
    assert env["JAX_PLATFORMS"] == ("cpu" if gpus == 0 else os.environ.get("JAX_PLATFORMS", ""))
    assert env.get("XLA_PYTHON_CLIENT_MEM_FRACTION") == ("0.225" if gpus else None)
    # XLA refuses a flag it does not know: the trial's JAX must start with these
    check = subprocess.run([sys.executable, "-c", "import jax.numpy as j; print(j.ones(2).sum())"],
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and check.stdout.strip() == "2.0", check.stderr[-2000:]


@pytest.mark.parametrize("field, value, needle", [
    ("gpus_per_trial", 1.5, "gpus_per_trial"),
    ("cpus_per_trial", 0, "cpus_per_trial"),
    ("max_concurrent_trials", -1, "max_concurrent_trials"),
    ("resources", "worker", "NAME=AMOUNT"),
    ("resources", "worker=0", "amount > 0"),
    ("storage", "s3://bucket/runs", "folder"),
])
def test_bad_resources_are_one_line(field, value, needle):
    t = base_config("ptb", "cnn1d").tune
    setattr(t, field, value)
    with pytest.raises(heartjax.errors.UserError, match=needle):
        cluster.check_resources(t)


def test_a_storage_that_cannot_be_written_fails_before_ray(ptb_tables, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the storage folder would be
    result = _tune(ptb_tables, tmp_path / "run", f"--storage={blocked / 'storage'}", *EPOCHS,
                   timeout=120)
    assert_one_line_error(result, "storage", "cannot create or write")


def test_resources_no_node_offers_are_one_line_not_a_wait(ptb_tables, tmp_path):
    result = _tune(ptb_tables, tmp_path / "run", "--config.tune.resources=gpu_node=1", *EPOCHS,
                   timeout=300)
    assert_one_line_error(result, "no node of the Ray cluster offers", "gpu_node=1")
    assert not (tmp_path / "run" / "ray").exists()
