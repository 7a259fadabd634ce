"""Cheap fidelities for tuning: class-stratified training pools and the ladder of rungs.

A tuning trial's budget is training beats seen. The ladder (`tune.ladder`) lists one training
pool per rung; rung k trains `tune.rung_beats * tune.reduction_factor**k` beats drawn from its
pool, so ASHA's milestones (grace period x reduction factor^k) fall exactly on the rung ends.

- A pool is a class-stratified subset of the training split that takes beats from the largest
  class first (MIT-BIH's N, 83%): every class keeps min(its count, c) beats, with c set so the
  pool has the asked size. Rare classes keep all they have unless the pool is tiny. Pools are
  nested (each holds the smaller ones) and 0 means the whole split.
- The loss weights are multiplied per class by (class share of the split / share of the pool):
  a pool trains towards the same objective as the whole split, so `train.loss` and the class
  weighting mean the same at every rung.
- Each rung trains a fresh model over its whole budget with the config's schedule (a short
  complete training, not a snapshot in a long schedule's warm-up), then evaluates the whole
  validation split once. Validation is the same at every rung, so rungs compare; it runs once
  per rung, not per epoch, so it stays a small share of a cheap rung.
- With folds (`tune.folds`, cross-validation by whole records) a rung trains one such model
  per fold, each on its fold's training records, and scores the pooled predictions on every
  held-out record: a configuration is judged on all the records, each seen by a model that
  did not train on it, at folds times the cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from heartjax import losses, metrics, predict, steps
from heartjax.data import BeatTable
from heartjax.errors import UserError
from heartjax.models import build_model
from heartjax.runtime import enable_compilation_cache

CHUNK_BEATS = 4096  # beats per jitted call: a rung's steps are whole calls of this size
RungReport = Callable[[dict[str, Any]], None]


def pool_counts(counts: Sequence[int], size: int) -> np.ndarray:
    """Beats per class in a pool of `size`: each class min(count, c), the largest c that fits."""
    counts = np.asarray(counts, np.int64)
    if size <= 0 or size >= counts.sum():
        return counts.copy()
    lo, hi = 0, int(counts.max())
    while lo < hi:  # the largest cap c with sum(min(counts, c)) <= size
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if np.minimum(counts, mid).sum() <= size else (lo, mid - 1)
    return np.minimum(counts, lo)


def nested_pools(y: np.ndarray, sizes: Sequence[int], seed: int) -> list[np.ndarray]:
    """Row indices of one pool per size; a smaller pool's rows are in every larger one."""
    y = np.asarray(y)
    num_classes = int(y.max()) + 1
    counts = np.bincount(y, minlength=num_classes)
    rng = np.random.default_rng(seed)
    order = [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]
    pools = []
    for size in sizes:
        take = pool_counts(counts, size)
        pools.append(np.sort(np.concatenate([o[:k] for o, k in zip(order, take)])))
    return pools


def importance(y: np.ndarray, pool: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class factor (share in `y` / share in the pool): the pool's weighted loss is the
    whole split's in expectation; the average pool beat keeps weight 1."""
    full = np.bincount(y, minlength=num_classes) / len(y)
    part = np.bincount(y[pool], minlength=num_classes) / max(len(pool), 1)
    return np.where(part > 0, full / np.maximum(part, 1e-12), 0.0).astype(np.float32)


def rung_budgets(tune: ml_collections.ConfigDict) -> list[int]:
    """Training beats each rung sees: rung_beats x reduction_factor^k."""
    return [int(tune.rung_beats * tune.reduction_factor**k) for k in range(len(tune.ladder))]


def check_ladder(tune: ml_collections.ConfigDict) -> None:
    """One line for a ladder that cannot run."""
    ladder = tuple(tune.ladder)
    if not ladder:
        return
    if tune.rung_beats < 1:
        raise UserError(f"bad config: tune.rung_beats={tune.rung_beats} must be >= 1 with a ladder")
    if any(not isinstance(p, int) or p < 0 for p in ladder):
        raise UserError(f"bad config: tune.ladder={ladder} must hold pool sizes >= 0 (0: the "
                        "whole training split)")
    grown = [p if p > 0 else math.inf for p in ladder]
    if any(b < a for a, b in zip(grown, grown[1:])):
        raise UserError(f"bad config: tune.ladder={ladder}: pools must not shrink from one rung "
                        "to the next")
    if tune.reduction_factor < 2:
        raise UserError(f"bad config: tune.reduction_factor={tune.reduction_factor} must be >= 2")


_ARRAYS: dict[tuple, steps.Arrays] = {}


def device_arrays(table: BeatTable, keep: int = 2, rows: int = 0) -> steps.Arrays:
    """`heartjax.steps.to_arrays` once per table and process: a Ray worker runs trial after
    trial on the same splits (each trial gets a fresh copy of the tables from Ray). `keep`:
    the tables of one run (a training and a validation table per fold). `rows`: zero rows are
    appended up to that length (no pool draws them and no score reads them), so that folds of
    different sizes share one compiled program."""
    key = (table.path, len(table), float(table.x[:: max(len(table) // 101, 1)].sum()),
           int(table.y.sum()), rows)
    if key not in _ARRAYS:
        if len(_ARRAYS) >= keep:  # another run's tables
            _ARRAYS.clear()
        a = steps.to_arrays(table)
        pad = max(rows - len(table), 0)
        _ARRAYS[key] = steps.Arrays(*(jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1))
                                      for v in a)) if pad else a
    return _ARRAYS[key]


def _index_stream(pool: np.ndarray, rng: np.random.Generator, sampling: np.ndarray | None = None):
    """Endless epochs over the pool, each a new permutation, or drawn with replacement by
    `sampling` (one probability per pool row: train.record_balance)."""
    while True:
        yield from (rng.permutation(pool) if sampling is None
                    else rng.choice(pool, size=len(pool), p=sampling))


class Trainer:
    """One trial's model, optimiser and compiled chunk program, shared by all its rungs: a rung
    is a fresh state whose schedule is stretched to the rung's length (one compilation)."""

    def __init__(self, config: ml_collections.ConfigDict, num_classes: int) -> None:
        t = config.train
        self.config = config
        self.model = build_model(config.model, num_classes)
        self.batch = t.batch_size
        self.chunk = max(CHUNK_BEATS // self.batch, 1)
        self.tx = steps.create_optimizer(t, 1.0)
        self.train_chunk = steps.make_train_chunk(t)

    def fresh_state(self, num_steps: int) -> Any:
        """Newly initialised weights with the schedule spanning `num_steps`."""
        t = self.config.train
        state = steps.create_train_state(self.model, self.tx, t.seed, compiled=True)
        stretch = jnp.asarray(steps.schedule_stretch(t, num_steps / t.epochs), jnp.float32)
        return state.replace(opt_state=optax.tree_utils.tree_set(state.opt_state, stretch=stretch))


def train_rung(
    trainer: Trainer,
    train: steps.Arrays,
    pool: np.ndarray,
    weights: np.ndarray,
    budget: int,
    seed: int,
    sampling: np.ndarray | None = None,
) -> tuple[Any, dict[str, float]]:
    """A fresh model trained on `budget` beats of `pool` (drawn by `sampling` when given) with
    the config's schedule; returns its state and timings (compile_s: the first call's time
    beyond a steady call's)."""
    batch, chunk = trainer.batch, trainer.chunk
    calls = max(round(budget / (chunk * batch)), 1)
    state = trainer.fresh_state(calls * chunk)
    train_chunk = trainer.train_chunk
    stream = _index_stream(pool, np.random.default_rng(seed), sampling)
    w = jnp.asarray(weights)
    t0 = time.perf_counter()
    first_s, loss = 0.0, jnp.zeros(())
    for i in range(calls):
        idx = np.fromiter(stream, np.int32, chunk * batch).reshape(chunk, batch)
        state, loss = train_chunk(state, train, jnp.asarray(idx), w)
        if i == 0:
            loss.block_until_ready()
            first_s = time.perf_counter() - t0  # compilation (or a cache load) + one call
    loss = float(loss)
    train_s = time.perf_counter() - t0
    if not math.isfinite(loss):
        raise FloatingPointError(f"training diverged (loss {loss})")
    per_call = (train_s - first_s) / (calls - 1) if calls > 1 else 0.0
    return state, {
        "train_loss": loss,
        "beats_seen": calls * chunk * batch,
        "compile_s": max(first_s - per_call, 0.0),
        "train_s": train_s,
        "beats_per_s": chunk * batch / per_call if per_call > 0 else float("nan"),
    }


def train_ladder(
    config: ml_collections.ConfigDict,
    splits: Sequence[tuple[BeatTable, BeatTable]],
    report: RungReport,
    done: Sequence[dict[str, Any]] = (),
) -> None:
    """Train `config` up the ladder: at each rung one fresh training per (train, validation)
    pair of `splits` (one pair, or one per fold), then `report(row)` with the validation
    metrics of their pooled predictions; the scheduler stops the trial by not returning from a
    report. `done` holds the rows of rungs an interrupted attempt finished: they are reported
    again as they were, and training continues at the next rung."""
    for row in done:
        report(row)
    enable_compilation_cache()
    tune = config.tune
    class_names = splits[0][0].class_names
    num_classes = len(class_names)
    trainer = Trainer(config, num_classes)
    keep = 2 * len(splits)
    lengths = [max(len(pair[i]) for pair in splits) if len(splits) > 1 else 0 for i in (0, 1)]
    arrays = [(device_arrays(tr, keep, lengths[0]), device_arrays(va, keep, lengths[1]))
              for tr, va in splits]
    pools = [nested_pools(tr.y, tuple(tune.ladder), config.data.seed) for tr, _ in splits]
    base_weights = [losses.loss_weights(tr.y, num_classes, config.train) for tr, _ in splits]
    y_val = np.concatenate([va.y for _, va in splits])
    predict_fn = predict.make_predict_fn(trainer.model.apply)
    params = done[0]["params"] if done else None
    for k, budget in enumerate(rung_budgets(tune)):
        if k < len(done):
            continue
        rows, probas, eval_s = [], [], 0.0
        for (table, table_val), (train, val), fold_pools, weights in zip(splits, arrays, pools,
                                                                          base_weights):
            pool = fold_pools[k]
            weights = weights * importance(table.y, pool, num_classes)
            sampling = steps.record_sampling_of(table, config.train, pool)
            state, row = train_rung(trainer, train, pool, weights, budget, config.train.seed + k,
                                    sampling)
            if params is None:
                params = sum(int(np.prod(p.shape))
                             for p in jax.tree_util.tree_leaves(state.params))
            t0 = time.perf_counter()
            variables = predict.variables_of(state.params, state.batch_stats)
            proba = predict.predict_proba(predict_fn, variables, val.x, val.context,
                                          config.train.eval_batch_size)
            probas.append(proba[:len(table_val.y)])
            eval_s += time.perf_counter() - t0
            rows.append({**row, "pool": len(pool)})
        val_m = metrics.evaluate_predictions(y_val, np.concatenate(probas), class_names)
        report({
            **_over_folds(rows),
            "rung": k,
            "eval_s": eval_s,
            "params": params,
            "final": int(k == len(tune.ladder) - 1),
            **metrics.flat_scalars(val_m, "val_"),
        })


def _over_folds(rows: list[dict[str, float]]) -> dict[str, float]:
    """One rung's row over its folds: the beats seen and the seconds add up (the rung's cost);
    the pool (one fold's), the loss and the speed are the folds' mean."""
    mean = ("pool", "train_loss", "beats_per_s")
    row = {key: (float(np.mean([r[key] for r in rows])) if key in mean
                 else sum(r[key] for r in rows)) for key in rows[0]}
    return {**row, "pool": round(row["pool"])}
