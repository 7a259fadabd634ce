"""Checkpoints load on whatever device this process has: one saved on a GPU names `cuda:0` in
its Orbax sharding metadata, which a CPU-only machine does not have."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import heartjax
from heartjax import checkpoint as ckpt
from heartjax.cli import load_config
from heartjax.data import load_table
from heartjax.errors import UserError
from heartjax.train import _init_source
from tests.conftest import assert_one_line_error, run_module


def _as_if_saved_on_a_gpu(run: Path, to: Path) -> Path:
    """A copy of the train workdir `run` whose sharding metadata names `cuda:0` (as a checkpoint
    saved on a GPU does) instead of this machine's `cpu:0`."""
    shutil.copytree(run, to)
    files = list((to / ckpt.CHECKPOINTS).rglob("_sharding"))
    assert files
    for f in files:
        text = f.read_text()
        assert "cpu:0" in text
        f.write_text(text.replace("cpu:0", "cuda:0"))
    return to


def test_a_gpu_checkpoint_loads_here_with_the_same_predictions(ptb_run, ptb_tables, tmp_path):
    gpu = _as_if_saved_on_a_gpu(ptb_run, tmp_path / "gpu")
    step, _ = ckpt.best_checkpoint(gpu)
    # the copy really names a device this machine lacks: Orbax alone refuses it
    with pytest.raises(ValueError, match="[Tt]opology"):
        ocp.StandardCheckpointer().restore(step.absolute() / "variables")
    beats = load_table(ptb_tables / "heart_test.parq", "ptb").x
    want = heartjax.load_checkpoint(ptb_run).predict_proba(beats)
    got = heartjax.load_checkpoint(gpu).predict_proba(beats)
    assert np.array_equal(got, want)
    # transfer learning starts from the same weights
    config = load_config("configs/ptb.py:smoke")
    config.train.init_from = str(gpu)
    source = _init_source(config, ("normal", "abnormal"))
    original = heartjax.load_checkpoint(ptb_run).variables
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(
        lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), source, original))


def test_a_topology_error_is_named_as_such(ptb_run, tmp_path, monkeypatch):
    gpu = _as_if_saved_on_a_gpu(ptb_run, tmp_path / "gpu")
    # without a target on this device, Orbax follows the metadata to the missing cuda:0
    monkeypatch.setattr(ckpt, "_on_this_device", lambda target: target)
    with pytest.raises(UserError) as e:
        heartjax.load_checkpoint(gpu)
    message = str(e.value)
    assert "saved on another device topology" in message and "\n" not in message
    assert "corrupt" not in message


def test_a_corrupt_gpu_checkpoint_is_still_one_line_about_corruption(ptb_run, ptb_tables,
                                                                     tmp_path):
    gpu = _as_if_saved_on_a_gpu(ptb_run, tmp_path / "gpu")
    for f in (gpu / ckpt.CHECKPOINTS).rglob("*"):  # damaged weights, intact sharding metadata
        if f.is_file() and "variables" in f.parts and f.name != "_sharding":
            f.write_bytes(b"garbage")
    result = run_module("heartjax.evaluate", "--checkpoint", gpu,
                        "--data", ptb_tables / "heart_test.parq")
    assert_one_line_error(result, "cannot restore the weights", "corrupt or incomplete checkpoint")
    assert "topology" not in result.stderr


def test_the_last_state_names_no_device(tmp_path):
    """The resumable state is host numpy in msgpack: nothing in it ties it to a device."""
    last = ckpt.LastState(tmp_path)
    tree = {"w": jax.numpy.arange(6.0).reshape(2, 3), "key": jax.random.PRNGKey(3)}
    last.save(tree, {"epoch": 2})
    assert b"cpu" not in last.path.read_bytes()
    restored, loop = last.restore(tree)
    assert loop == {"epoch": 2}
    for k in tree:
        assert isinstance(restored[k], np.ndarray)
        assert np.array_equal(restored[k], np.asarray(tree[k]))
