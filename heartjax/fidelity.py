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
  did not train on it, at folds times the cost. With `tune.batch_folds` the folds' models
  train in one program (vmapped over a fold axis of the state, the padded data, the index
  chunks and the loss weights; each fold's indices drawn in numpy as in the loop) and
  predict in one: the same rows up to float rounding. "auto" batches off the CPU only: on
  two CPU cores four folds of `:tune_interpatient`'s rung 0 took 15.4 s looped and 16.0 s
  batched, 13.4 and 15.5 CPU seconds (experiments/fidelity_batching.py).
- With `members` (`heartjax.population`: learning rate, weight decay, class-weight power,
  seed) a rung trains K members in one program (vmapped over a member axis; both axes with
  batched folds). The row is the best member's by `tune.metric`, and lists every member:
  each is a configuration the search tried. On two CPU cores a population of 8 trained rung 0
  no faster than 8 trials in turn (36 s each way): it can gain only where one small model
  leaves the device idle (a GPU; not measured yet).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from heartjax import losses, metrics, population, predict, steps
from heartjax.data import BeatTable
from heartjax.errors import UserError
from heartjax.models import build_model
from heartjax.noise import bank_of
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
    batch_folds(tune, 0)  # a bad tune.batch_folds fails here, before any trial
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


def _table_key(table: BeatTable, rows: int, parts: Sequence[str]) -> tuple:
    """Tells tables apart cheaply: path, length, a sample's checksum, the padded length and the
    context parts."""
    return (table.path, len(table), float(table.x[:: max(len(table) // 101, 1)].sum()),
            int(table.y.sum()), rows, tuple(parts))


def _cached(key: tuple, keep: int, build: Callable[[], steps.Arrays]) -> steps.Arrays:
    """`build()` once per key and process: a Ray worker runs trial after trial on the same
    splits (each trial gets a fresh copy of the tables from Ray). `keep`: the entries of one
    run; a new key beyond them is another run's, and the old ones go."""
    if key not in _ARRAYS:
        if len(_ARRAYS) >= keep:
            _ARRAYS.clear()
        _ARRAYS[key] = build()
    return _ARRAYS[key]


def _padded(table: BeatTable, rows: int, parts: Sequence[str]) -> steps.Arrays:
    """`heartjax.steps.to_arrays` with zero rows appended up to `rows`."""
    a = steps.to_arrays(table, parts)
    pad = max(rows - len(table), 0)
    return steps.Arrays(*(jnp.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1))
                          for v in a)) if pad else a


def device_arrays(table: BeatTable, parts: Sequence[str], keep: int = 2,
                  rows: int = 0) -> steps.Arrays:
    """`heartjax.steps.to_arrays` once per table, context parts and process. `keep`: the
    tables of one run (a training and a validation table per fold). `rows`: zero rows are
    appended up to that length (no pool draws them and no score reads them), so that folds of
    different sizes share one compiled program."""
    return _cached(_table_key(table, rows, parts), keep, lambda: _padded(table, rows, parts))


def stacked_arrays(tables: Sequence[BeatTable], parts: Sequence[str], rows: int,
                   keep: int = 2) -> steps.Arrays:
    """The folds' tables padded to `rows` and stacked on a leading fold axis, once per process
    (a fold-batched rung's data: one copy, not one per fold and one stacked)."""
    def build() -> steps.Arrays:
        folds = [_padded(t, rows, parts) for t in tables]
        return steps.Arrays(*(jnp.stack(vs) for vs in zip(*folds)))

    return _cached(tuple(_table_key(t, rows, parts) for t in tables), keep, build)


BATCH_FOLDS = ("auto", "on", "off")


def batch_folds(tune: ml_collections.ConfigDict, num_folds: int) -> bool:
    """Whether a rung trains its folds' models in one program (`tune.batch_folds`); "auto"
    does off the CPU only (see the module's docstring)."""
    value = tune.batch_folds
    if value not in BATCH_FOLDS:
        raise UserError(f"bad config: tune.batch_folds={value!r}; use one of "
                        f"{', '.join(BATCH_FOLDS)}")
    if num_folds < 2:
        return False
    return jax.default_backend() != "cpu" if value == "auto" else value == "on"


def _index_stream(pool: np.ndarray, rng: np.random.Generator, sampling: np.ndarray | None = None):
    """Endless epochs over the pool, each a new permutation, or drawn with replacement by
    `sampling` (one probability per pool row: train.record_balance)."""
    while True:
        yield from (rng.permutation(pool) if sampling is None
                    else rng.choice(pool, size=len(pool), p=sampling))


class Trainer:
    """One trial's model, optimiser and compiled programs, shared by all its rungs: a rung is
    a fresh state whose schedule is stretched to the rung's length (one compilation).

    The state holds one model, or with `members` (dicts over `population.MEMBER_FIELDS`) one
    per member on a leading member axis; with `folds` > 0 all that once per fold on a leading
    fold axis before it, so that one program trains (and predicts for) every fold at once.
    """

    def __init__(self, config: ml_collections.ConfigDict, num_classes: int,
                 members: Sequence[Mapping[str, Any]] | None = None, folds: int = 0) -> None:
        t = config.train
        self.config = config
        self.configs = population.member_configs(config, members) if members else None
        self.folds = folds
        self.axes = int(folds > 0) + int(bool(members))  # the state's leading model axes
        self.model = build_model(config.model, num_classes)
        self.batch = t.batch_size
        self.chunk = max(CHUNK_BEATS // self.batch, 1)
        self.tx = steps.create_optimizer(t, 1.0)
        one = population.make_population_chunk(t) if members else steps.make_train_chunk(t)
        # the noise bank of train.augment.real_noise (None when off) serves every fold
        self.train_chunk = (jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, None)), donate_argnums=0)
                            if folds else one)
        self.noise = bank_of(config)
        predict_fn = predict.make_predict_fn(self.model.apply)
        if members:  # every member predicts the same beats
            predict_fn = jax.jit(jax.vmap(predict_fn, in_axes=(0, None, None)))
        self.predict_fn = jax.jit(jax.vmap(predict_fn)) if folds else predict_fn

    def fresh_state(self, num_steps: int) -> Any:
        """Newly initialised weights with the schedule spanning `num_steps`: each member from
        its own seed with its learning rate and weight decay; every fold starts alike."""
        if self.configs:
            state = population.create_population_state(
                lambda seed: self._fresh(num_steps, seed), self.configs)
        else:
            state = self._fresh(num_steps, self.config.train.seed)
        return population.stack([state] * self.folds) if self.folds else state

    def _fresh(self, num_steps: int, seed: int) -> Any:
        t = self.config.train
        state = steps.create_train_state(self.model, self.tx, seed, compiled=True)
        stretch = jnp.asarray(steps.schedule_stretch(t, num_steps / t.epochs), jnp.float32)
        return state.replace(opt_state=optax.tree_utils.tree_set(state.opt_state, stretch=stretch))

    def loss_weights(self, y: np.ndarray, num_classes: int) -> np.ndarray:
        """The loss's class weights for training labels `y`: (C,), or (K, C) with members."""
        if not self.configs:
            return losses.loss_weights(y, num_classes, self.config.train)
        return np.stack([losses.loss_weights(y, num_classes, c.train) for c in self.configs])

    def param_count(self, state: Any) -> int:
        """Parameters of one model of `state`."""
        return sum(int(np.prod(p.shape[self.axes:]))
                   for p in jax.tree_util.tree_leaves(state.params))


def train_rung(
    trainer: Trainer,
    train: steps.Arrays,
    pools: Sequence[np.ndarray],
    weights: np.ndarray,
    budget: int,
    seed: int,
    samplings: Sequence[np.ndarray | None] | None = None,
) -> tuple[Any, np.ndarray, dict[str, float]]:
    """Fresh models trained on `budget` beats each with the config's schedule: one pool (drawn
    by its sampling when given) per fold of a fold-batched trainer, else one pool. Each pool
    has its own index stream from `seed`, drawn in numpy as a lone fold's would be. Returns
    the state, the last call's mean loss per model (the state's leading axes) and timings
    (compile_s: the first call's time beyond a steady call's)."""
    batch, chunk = trainer.batch, trainer.chunk
    calls = max(round(budget / (chunk * batch)), 1)
    state = trainer.fresh_state(calls * chunk)
    samplings = samplings or [None] * len(pools)
    streams = [_index_stream(p, np.random.default_rng(seed), s) for p, s in zip(pools, samplings)]
    w = jnp.asarray(weights)
    t0 = time.perf_counter()
    first_s, loss = 0.0, jnp.zeros(())
    for i in range(calls):
        idx = np.stack([np.fromiter(s, np.int32, chunk * batch).reshape(chunk, batch)
                        for s in streams])
        idx = jnp.asarray(idx if trainer.folds else idx[0])
        state, loss = trainer.train_chunk(state, train, idx, w, trainer.noise)
        if i == 0:
            loss.block_until_ready()
            first_s = time.perf_counter() - t0  # compilation (or a cache load) + one call
    loss = np.asarray(loss)
    train_s = time.perf_counter() - t0
    per_call = (train_s - first_s) / (calls - 1) if calls > 1 else 0.0
    beats = calls * chunk * batch * len(pools)  # a member's beats: the members share them
    return state, loss, {
        "beats_seen": beats,
        "compile_s": max(first_s - per_call, 0.0),
        "train_s": train_s,
        "beats_per_s": beats / calls / per_call if per_call > 0 else float("nan"),
    }


def predict_rung(trainer: Trainer, state: Any, val: steps.Arrays) -> np.ndarray:
    """Class probabilities of the state's models on `val`: (..., N, C), the state's leading
    axes first; `val` has a leading fold axis when the trainer has. The last chunk of beats
    is padded, as in `heartjax.predict.predict_proba`."""
    n = val.x.shape[-2]
    batch = max(min(trainer.config.train.eval_batch_size, n), 1)
    chunks = max(math.ceil(n / batch), 1)

    def chunked(v: jax.Array) -> jax.Array:
        pad = [(0, 0)] * (v.ndim - 2) + [(0, chunks * batch - n), (0, 0)]
        v = jnp.pad(jnp.asarray(v, jnp.float32), pad)
        return v.reshape(*v.shape[:-2], chunks, batch, v.shape[-1])

    variables = predict.variables_of(state.params, state.batch_stats)
    proba = trainer.predict_fn(variables, chunked(val.x), chunked(val.context))
    return np.asarray(proba.reshape(*proba.shape[:-3], chunks * batch, -1)[..., :n, :])


def train_ladder(
    config: ml_collections.ConfigDict,
    splits: Sequence[tuple[BeatTable, BeatTable]],
    report: RungReport,
    done: Sequence[dict[str, Any]] = (),
    members: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Train `config` up the ladder: at each rung one fresh training per (train, validation)
    pair of `splits` (one pair, or one per fold), then `report(row)` with the validation
    metrics of their pooled predictions; the scheduler stops the trial by not returning from a
    report. `done` holds the rows of rungs an interrupted attempt finished: they are reported
    again as they were, and training continues at the next rung.

    `members` (dicts over `population.MEMBER_FIELDS`, e.g. from `population.sample_members`):
    each rung trains every member at once; the row is the best member's by `tune.metric`
    (`row["member"]`), and `row["members"]` holds every member's values, loss and metrics.
    """
    for row in done:
        report(row)
    rungs = Rungs(config, splits, members)
    for k in range(len(done), len(config.tune.ladder)):
        report(rungs.run(k))


class Rungs:
    """One trial's ladder, set up once: the trainer, the folds' arrays on the device, their
    nested pools and loss weights. With folds batched (`batch_folds`) the folds form one
    group trained by one program; otherwise each fold is a group of its own."""

    def __init__(self, config: ml_collections.ConfigDict,
                 splits: Sequence[tuple[BeatTable, BeatTable]],
                 members: Sequence[Mapping[str, Any]] | None = None) -> None:
        enable_compilation_cache()
        self.config, self.splits, self.members = config, splits, members
        self.class_names = splits[0][0].class_names
        num_classes = len(self.class_names)
        self.batched = batch_folds(config.tune, len(splits))
        self.trainer = Trainer(config, num_classes, members, len(splits) if self.batched else 0)
        lengths = [max(len(pair[i]) for pair in splits) if len(splits) > 1 else 0
                   for i in (0, 1)]
        parts = config.model.context
        if self.batched:
            self.groups = [list(range(len(splits)))]
            self.arrays = [tuple(stacked_arrays([pair[i] for pair in splits], parts, lengths[i])
                                 for i in (0, 1))]
        else:
            self.groups = [[f] for f in range(len(splits))]
            keep = 2 * len(splits)
            self.arrays = [(device_arrays(tr, parts, keep, lengths[0]),
                            device_arrays(va, parts, keep, lengths[1])) for tr, va in splits]
        self.pools = [nested_pools(tr.y, tuple(config.tune.ladder), config.data.seed)
                      for tr, _ in splits]
        self.weights = [self.trainer.loss_weights(tr.y, num_classes) for tr, _ in splits]
        self.y_val = np.concatenate([va.y for _, va in splits])

    def run(self, k: int) -> dict[str, Any]:
        """Rung `k`: fresh models trained on every fold and the rung's row, scored on the
        pooled out-of-fold predictions."""
        config, splits = self.config, self.splits
        budget = rung_budgets(config.tune)[k]
        pools = [p[k] for p in self.pools]
        weights = [w * importance(tr.y, pool, len(self.class_names))
                   for (tr, _), w, pool in zip(splits, self.weights, pools)]
        samplings = [steps.record_sampling_of(tr, config.train, pool)
                     for (tr, _), pool in zip(splits, pools)]
        fold_losses, probas, timings, eval_s = [], [], [], 0.0
        for folds, (train, val) in zip(self.groups, self.arrays):
            w = np.stack([weights[f] for f in folds]) if self.batched else weights[folds[0]]
            state, loss, timing = train_rung(self.trainer, train, [pools[f] for f in folds], w,
                                             budget, config.train.seed + k,
                                             [samplings[f] for f in folds])
            t0 = time.perf_counter()
            proba = predict_rung(self.trainer, state, val)
            eval_s += time.perf_counter() - t0
            if not self.batched:  # the fold axis a batched program's outputs have
                loss, proba = loss[None], proba[None]
            fold_losses += list(loss)
            probas += [p[..., :len(splits[f][1]), :] for f, p in zip(folds, proba)]
            timings.append({**timing, "pool": np.mean([len(pools[f]) for f in folds])})
        row = {**_over_folds(timings), "rung": k, "eval_s": eval_s,
               "params": self.trainer.param_count(state),
               "final": int(k == len(config.tune.ladder) - 1)}
        loss = np.mean(fold_losses, axis=0)  # per model; NaN where any fold diverged
        proba = np.concatenate(probas, axis=-2)  # every fold's validation beats, in order
        if self.members:
            return {**row, **_score_members(self.members, loss, self.y_val, proba,
                                            self.class_names, config.tune.metric)}
        return {**row, **_score_one(float(loss), self.y_val, proba, self.class_names)}


def _score_one(loss: float, y_val: np.ndarray, proba: np.ndarray,
               class_names: Sequence[str]) -> dict[str, float]:
    """The rung's loss and the validation metrics of one configuration's pooled predictions."""
    if not math.isfinite(loss):
        raise FloatingPointError(f"training diverged (loss {loss})")
    val_m = metrics.evaluate_predictions(y_val, proba, class_names)
    return {"train_loss": loss, **metrics.flat_scalars(val_m, "val_")}


def _score_members(members: Sequence[Mapping[str, Any]], loss: np.ndarray, y_val: np.ndarray,
                   proba: np.ndarray, class_names: Sequence[str], metric: str) -> dict[str, Any]:
    """Every member's row (its values, loss and metrics), and the loss and metrics of the best
    by `metric`, as a population trial reports its best member. A diverged member is not
    scored and never leads; only a population that all diverged fails."""
    if not np.isfinite(loss).any():
        raise FloatingPointError(f"training diverged (every member's loss: {loss.tolist()})")
    rows = []
    for i, (values, member_loss) in enumerate(zip(members, loss.tolist())):
        row = {"member": i, **values, "train_loss": member_loss}
        if math.isfinite(member_loss):
            row.update(_score_one(member_loss, y_val, proba[i], class_names))
        rows.append(row)
    scores = [r.get(metric, -math.inf) for r in rows]
    lead = int(np.argmax([s if math.isfinite(s) else -math.inf for s in scores]))
    best = {k: v for k, v in rows[lead].items() if k == "train_loss" or k.startswith("val_")}
    return {**best, "member": lead, "members": rows}


def _over_folds(rows: list[dict[str, float]]) -> dict[str, float]:
    """One rung's timings over its trainings (one per fold, or one of every fold): the beats
    seen and the seconds add up (the rung's cost); the pool (one fold's) and the speed are
    the mean."""
    mean = ("pool", "beats_per_s")
    row = {key: (float(np.mean([r[key] for r in rows])) if key in mean
                 else sum(r[key] for r in rows)) for key in rows[0]}
    return {**row, "pool": round(row["pool"])}
