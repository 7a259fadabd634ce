"""The training loop end to end on a small synthetic table (no ../shared needed): it learns,
keeps its best checkpoint, and a run interrupted after an epoch resumes to the same metrics."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import heartjax
from heartjax import fidelity, population, steps
from heartjax.cli import load_config
from heartjax.data import SIGNAL_LEN, BeatTable
from heartjax.errors import UserError
from heartjax.metrics import flat_scalars
from heartjax.train import Training, train_and_evaluate

TIMING = ("beats_per_s", "epoch_s")


def _table(n: int, seed: int) -> BeatTable:
    """Two classes a model can tell apart: an upward (normal) or a downward (abnormal) bump,
    anywhere in the beat, in noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int32)
    t = np.arange(SIGNAL_LEN)
    centre = rng.integers(30, 150, n)[:, None]
    bump = np.exp(-((t[None, :] - centre) / 8.0) ** 2) * np.where(y == 1, -1.0, 1.0)[:, None]
    x = bump + 0.1 * rng.standard_normal((n, SIGNAL_LEN))
    return BeatTable(x.astype(np.float32), y, "ptb")


@pytest.fixture(scope="module")
def splits():
    return _table(512, 0), _table(256, 1)


def _config(epochs: int = 4):
    c = load_config("configs/ptb.py:smoke")
    c.train.epochs = epochs
    c.train.patience = epochs
    c.train.target_recall = 0.0  # arg-max decisions: the checkpoint predicts what validation scored
    return c


def _rows(workdir) -> list[dict]:
    rows = [json.loads(ln) for ln in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


class Interrupt(Exception):
    pass


def _stop_after(epoch: int):
    def report(e, row, ckpt_dir):
        if e == epoch:
            raise Interrupt
    return report


def test_the_loop_learns_and_keeps_its_best(splits, tmp_path):
    best = train_and_evaluate(_config(), tmp_path / "run", splits=splits, progress=False)
    assert best["val"]["macro_recall"] > 0.9  # the bump's position is easy to learn
    model = heartjax.load_checkpoint(tmp_path / "run")
    pred = model.predict(splits[1].x)
    assert (pred == splits[1].y).mean() == pytest.approx(best["val"]["accuracy"], abs=1e-6)
    assert len(_rows(tmp_path / "run")) == 4


def test_resume_continues_to_the_uninterrupted_metrics(splits, tmp_path):
    whole = train_and_evaluate(_config(), tmp_path / "whole", splits=splits, progress=False)
    with pytest.raises(Interrupt):
        train_and_evaluate(_config(), tmp_path / "cut", splits=splits, progress=False,
                           report=_stop_after(2))
    assert len(_rows(tmp_path / "cut")) == 2
    with pytest.raises(UserError, match="--resume"):  # no silent restart over a run
        train_and_evaluate(_config(), tmp_path / "cut", splits=splits, progress=False)
    epochs = []
    resumed = train_and_evaluate(_config(), tmp_path / "cut", splits=splits, progress=False,
                                 resume=True, report=lambda e, row, c: epochs.append(e))
    assert epochs == [3, 4]  # the epochs after the interruption, not a restart
    resumes = (tmp_path / "cut" / "resumes.jsonl").read_text().splitlines()
    assert [json.loads(r)["after_epoch"] for r in resumes] == [2]
    assert _rows(tmp_path / "cut") == _rows(tmp_path / "whole")
    assert resumed["epoch"] == whole["epoch"]
    assert flat_scalars(resumed["val"]) == flat_scalars(whole["val"])


def test_population_resumes_too(splits, tmp_path):
    members = [{"train.learning_rate": 1e-3}, {"train.learning_rate": 3e-3}]
    whole = population.train_population(_config(3), tmp_path / "whole", members, splits=splits,
                                        progress=False)
    with pytest.raises(Interrupt):
        population.train_population(_config(3), tmp_path / "cut", members, splits=splits,
                                    progress=False, report=_stop_after(1))
    resumed = population.train_population(_config(3), tmp_path / "cut", members, splits=splits,
                                          progress=False, resume=True)
    lines = (tmp_path / "cut" / "members.jsonl").read_text().splitlines()
    assert len(lines) == 3 * len(members)  # no rows of the cut attempt left twice
    assert flat_scalars(resumed["val"]) == flat_scalars(whole["val"])
    assert resumed["member"] == whole["member"]


def test_a_damaged_last_state_is_one_line(splits, tmp_path):
    with pytest.raises(Interrupt):
        train_and_evaluate(_config(), tmp_path / "run", splits=splits, progress=False,
                           report=_stop_after(1))
    (tmp_path / "run" / "last_state.msgpack").write_bytes(b"not a state")
    with pytest.raises(UserError, match="corrupt"):
        train_and_evaluate(_config(), tmp_path / "run", splits=splits, progress=False, resume=True)


def _every(epochs: int, every: int):
    c = _config(epochs)
    c.train.eval_every = every
    return c


def test_eval_every_validates_every_nth_and_the_last_epoch(splits, tmp_path, monkeypatch):
    reported = []
    whole = train_and_evaluate(_every(3, 2), tmp_path / "whole", splits=splits, progress=False,
                               report=lambda e, row, c: reported.append(e))
    rows = _rows(tmp_path / "whole")
    assert [r["epoch"] for r in rows] == [2, 3] == reported
    assert [r["final"] for r in rows] == [0, 1]
    assert whole["epoch"] in (2, 3)
    steps_saved = {int(d.name) for d in (tmp_path / "whole" / "checkpoints").iterdir()
                   if d.name.isdigit()}
    assert steps_saved and steps_saved <= {2, 3}
    # cut after epoch 1, which is not validated: its state is saved all the same
    save_last = Training.save_last

    def save_then_stop(self, state):
        save_last(self, state)
        if self.epoch == 1:
            raise Interrupt

    monkeypatch.setattr(Training, "save_last", save_then_stop)
    with pytest.raises(Interrupt):
        train_and_evaluate(_every(3, 2), tmp_path / "cut", splits=splits, progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "cut" / "metrics.jsonl").exists()
    resumed = train_and_evaluate(_every(3, 2), tmp_path / "cut", splits=splits, progress=False,
                                 resume=True)
    resumes = (tmp_path / "cut" / "resumes.jsonl").read_text().splitlines()
    assert [json.loads(r)["after_epoch"] for r in resumes] == [1]
    assert _rows(tmp_path / "cut") == rows
    assert resumed["epoch"] == whole["epoch"]
    assert flat_scalars(resumed["val"]) == flat_scalars(whole["val"])


def test_patience_counts_epochs_when_validating_every_few(splits, tmp_path):
    c = _every(10, 2)
    c.train.patience = 3
    c.train.learning_rate = 1e-12  # the weights stay put: no validation after the first is better
    c.model.norm = "none"  # nor do batch statistics move the predictions
    best = train_and_evaluate(c, tmp_path / "run", splits=splits, progress=False)
    # epoch 4 is 2 epochs after the best (2) and goes on; epoch 6 is 4 >= 3 after it and stops
    assert [r["epoch"] for r in _rows(tmp_path / "run")] == [2, 4, 6]
    assert best["epoch"] == 2
    c.train.eval_every = 0
    with pytest.raises(UserError, match=r"^bad config: train.eval_every=0 must be >= 1"):
        train_and_evaluate(c, tmp_path / "bad", splits=splits, progress=False)


def test_an_epoch_draws_its_beats_by_the_sampling_probabilities():
    data = steps.Arrays(jnp.zeros((40, SIGNAL_LEN)), jnp.zeros(40, jnp.int32), jnp.zeros((40, 1)))
    plan = steps.EpochPlan.of(40, batch_size=8, calls=5)

    def chunk(drawn, data, idx):  # stands in for the jitted training: keeps what it was given
        return drawn + [np.asarray(idx)], jnp.zeros(())

    drawn, _ = steps.run_epoch(chunk, [], data, plan, jax.random.PRNGKey(0))
    assert sorted(np.concatenate(drawn).ravel()) == list(range(40))  # each beat once
    p = np.where(np.arange(40) < 10, 0.1, 0.0)  # only the first ten can be drawn
    drawn, _ = steps.run_epoch(chunk, [], data, plan, jax.random.PRNGKey(0), sampling=jnp.asarray(p))
    drawn = np.concatenate(drawn).ravel()
    assert len(drawn) == 40 and drawn.max() < 10 and len(set(drawn)) > 5


def test_record_balance_trains_on_records_and_needs_them(splits, tmp_path):
    train, val = splits
    c = _config(epochs=2)
    c.train.record_balance = 1.0
    with pytest.raises(UserError, match="record_balance needs a 'record' column"):
        train_and_evaluate(c, tmp_path / "no_records", splits=splits, progress=False)
    # record "a" holds 9 of every 10 beats; drawn alike, b's beats come up ~9x as often
    records = np.where(np.arange(len(train)) % 10 == 0, "b", "a")
    train = heartjax.data.BeatTable(train.x, train.y, train.dataset, meta=pd.DataFrame({"record": records}))
    best = train_and_evaluate(c, tmp_path / "run", splits=(train, val), progress=False)
    assert best["val"]["macro_recall"] > 0.8
    # record_balance_classes names the classes drawn alike: here the abnormal beats only
    both = steps.record_sampling_of(train, c.train)
    c.train.record_balance_classes = (train.class_names[1],)
    one = steps.record_sampling_of(train, c.train)
    normal, in_b = train.y == 0, records == "b"
    assert both[normal & in_b].sum() / both[normal].sum() == pytest.approx(0.5)
    assert one[normal & in_b].sum() / one[normal].sum() == pytest.approx(np.mean(in_b[normal]))
    np.testing.assert_allclose(one[~normal], both[~normal])
    c.train.record_balance_classes = ()
    # the tuner's rungs draw their pools the same way
    c.tune.ladder, c.tune.rung_beats, c.tune.reduction_factor = (100, 0), 256, 2
    rows = []
    with pytest.raises(UserError, match="record_balance needs a 'record' column"):
        fidelity.train_ladder(c, [splits], rows.append)
    fidelity.train_ladder(c, [(train, val)], rows.append)
    assert [r["rung"] for r in rows] == [0, 1] and rows[1]["beats_seen"] >= 512
