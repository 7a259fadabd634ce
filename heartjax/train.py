"""Training: one function, `train_and_evaluate(config, workdir)`, serves the CLI, every Ray trial
and every experiment.

Reads top to bottom: the optimiser and schedule, the train state, the pure train/eval steps,
the jitted epoch (a `lax.scan` over batches of data that stays on the device), then the loop with
validation, early stopping, Orbax checkpoints and logs.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

from heartjax import checkpoint as ckpt
from heartjax import losses, metrics, population, predict
from heartjax.config import validate
from heartjax.data import (
    CONTEXT_WIDTH,
    RR_COLUMNS,
    BeatTable,
    context_features,
    load_dataset,
    load_table,
    stratified_split,
    train_val_split,
)
from heartjax.errors import UserError, cli_entry
from heartjax.models import build_model

Metrics = dict[str, Any]
# Called after every epoch with (epoch, flat validation metrics, checkpoint dir or None).
ReportFn = Callable[[int, dict[str, float], "Path | None"], None]


class Arrays(NamedTuple):
    """A split as device arrays: beats (N, 187), labels (N,), R-R and template features (N, 6)."""

    x: jax.Array
    y: jax.Array
    rr: jax.Array


class TrainState(train_state.TrainState):
    """Flax TrainState plus batch-norm statistics (an empty dict for models without them) and
    the key stream of dropout and augmentation (its own per population member)."""

    batch_stats: Any = None
    rng: Any = None


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs across processes (trials, reruns): compiling the scanned
    epoch costs seconds, often more than a small trial's training. HEARTJAX_XLA_CACHE="" disables."""
    path = os.environ.get("HEARTJAX_XLA_CACHE", str(Path.home() / ".cache" / "heartjax" / "xla"))
    if path and jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def to_arrays(table: BeatTable) -> Arrays:
    """Put a beat table on the device once with its context features (`heartjax.data.template`);
    they are zeros when the table has no R-R columns (models without use_rr ignore them)."""
    rr = (
        context_features(table.x, table.rr, table.records)
        if table.rr is not None
        else np.zeros((len(table), CONTEXT_WIDTH), np.float32)
    )
    return Arrays(jnp.asarray(table.x), jnp.asarray(table.y, jnp.int32), jnp.asarray(rr))


# ----------------------------------------------------------------------------- optimiser


# The schedule's shape is laid over this many nominal steps and stretched to a run's length by an
# injected factor: runs of any length (epochs, fidelity rungs) share one compiled program.
NOMINAL_STEPS = 1 << 20


def create_learning_rate_fn(t: ml_collections.ConfigDict, steps_per_epoch: float, peak: float) -> optax.Schedule:
    """The schedule named by `train.schedule` with maximum `peak`, in optimiser steps."""
    total = max(round(t.epochs * steps_per_epoch), 1)
    warmup = int(t.warmup_epochs * steps_per_epoch)
    if t.schedule == "constant":
        return optax.constant_schedule(peak)
    if t.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, min(warmup, total - 1), total)
    if t.schedule == "onecycle":
        return optax.cosine_onecycle_schedule(total, peak)
    if t.schedule == "exponential":
        return optax.exponential_decay(peak, steps_per_epoch, t.decay_rate)
    raise UserError(f"bad config: train.schedule={t.schedule!r}")


def _optimizer(
    learning_rate: jax.Array,
    weight_decay: jax.Array,
    stretch: jax.Array,
    *,
    name: str,
    momentum: float,
    grad_clip: float,
    shape: optax.Schedule,
) -> optax.GradientTransformation:
    """adam, adamw (decoupled decay) or sgd+momentum, scaled by
    `learning_rate * shape(step * stretch)` (`shape` spans NOMINAL_STEPS)."""
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip > 0 else []
    if name == "adam":
        parts.append(optax.scale_by_adam())
    elif name == "adamw":
        parts += [optax.scale_by_adam(), optax.add_decayed_weights(weight_decay)]
    else:
        parts += [optax.add_decayed_weights(weight_decay), optax.trace(decay=momentum)]
    parts += [optax.scale_by_schedule(lambda count: shape(count * stretch)),
              optax.scale(-learning_rate)]
    return optax.chain(*parts)


def create_optimizer(t: ml_collections.ConfigDict, steps_per_epoch: float) -> optax.GradientTransformation:
    """The optimiser of `train.optimizer` with the schedule's shape and gradient clipping.

    Learning rate, weight decay and the schedule's stretch (NOMINAL_STEPS / the run's steps)
    are injected hyperparameters (arrays in the optimiser state, not constants in the
    program): trials that differ only in them, or in their length, share one compiled
    program, and a population can give each member its own values.
    """
    if t.optimizer not in ("adam", "adamw", "sgd"):
        raise UserError(f"bad config: train.optimizer={t.optimizer!r}")
    inject = optax.inject_hyperparams(
        _optimizer, static_args=("name", "momentum", "grad_clip", "shape")
    )
    return inject(
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        stretch=schedule_stretch(t, steps_per_epoch),
        name=t.optimizer,
        momentum=t.momentum,
        grad_clip=t.grad_clip,
        shape=create_learning_rate_fn(t, NOMINAL_STEPS / t.epochs, 1.0),
    )


def schedule_stretch(t: ml_collections.ConfigDict, steps_per_epoch: float) -> float:
    """The factor that maps a run's steps onto the schedule's NOMINAL_STEPS."""
    return NOMINAL_STEPS / max(t.epochs * steps_per_epoch, 1)


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, seed: int, init_from: Any = None,
    compiled: bool = False,
) -> TrainState:
    """Initialise parameters (and batch stats) from `seed`, then copy in `init_from`'s
    variables wherever the path and shape match (transfer learning: all but a resized head).

    `compiled` runs the initialisation as one jitted program instead of op by op: seconds
    faster for an architecture the process has not built before (tuning trials), with the same
    random draws up to the last bit of the scaling."""
    x = jnp.zeros((2, 187), jnp.float32)
    k_init, k_train = jax.random.split(jax.random.PRNGKey(seed))
    init = functools.partial(model.init, train=False)
    if compiled:
        init = jax.jit(init)
    variables = init(k_init, x, jnp.ones((2, CONTEXT_WIDTH), jnp.float32))
    if init_from is not None:
        variables = transfer_variables(variables, init_from)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        rng=k_train,
    )


def transfer_variables(target: Any, source: Any) -> Any:
    """`target` with each leaf replaced by `source`'s leaf of the same path and shape."""
    flat_src = traverse_util.flatten_dict(dict(source))
    flat = traverse_util.flatten_dict(dict(target))
    copied = {k: flat_src[k] for k, v in flat.items() if k in flat_src and flat_src[k].shape == v.shape}
    if not any(k[0] == "params" for k in copied):
        raise UserError("train.init_from: no parameter of that checkpoint fits this model; "
                        "use the same model config as the checkpoint")
    flat.update(copied)
    return traverse_util.unflatten_dict(flat)


def freeze_all_but_head(tx: optax.GradientTransformation, params: Any) -> optax.GradientTransformation:
    """Only the classification head (the `Head_*` module) is trained; the rest stays fixed."""
    labels = {k: ("train" if k.startswith("Head") else "freeze") for k in params}
    return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


# ----------------------------------------------------------------------------- steps


def augment(x: jax.Array, key: jax.Array, a: ml_collections.ConfigDict) -> jax.Array:
    """Random amplitude scaling, baseline wander, noise, time shift and time warp (all off by
    default): what another recorder, lead, patient or heart rate changes in a beat."""
    b, n = x.shape
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    k6 = jax.random.fold_in(key, 5)  # a new key leaves the other five (and old runs) unchanged
    if a.scale > 0:
        x = x * jax.random.uniform(k1, (b, 1), minval=1 - a.scale, maxval=1 + a.scale)
    if a.wander > 0:
        t = jnp.arange(n) / 125.0
        freq = jax.random.uniform(k2, (b, 1), minval=0.05, maxval=0.5)  # Hz: breathing, motion
        phase = jax.random.uniform(k3, (b, 1), maxval=2 * jnp.pi)
        x = x + a.wander * jnp.sin(2 * jnp.pi * freq * t + phase)
    if a.noise > 0:
        x = x + a.noise * jax.random.normal(k4, x.shape)
    if a.shift > 0:
        s = jax.random.randint(k5, (b, 1), -a.shift, a.shift + 1)
        idx = jnp.clip(jnp.arange(n)[None, :] - s, 0, n - 1)
        x = jnp.take_along_axis(x, idx, axis=1)
    if a.stretch > 0:
        # sample t * factor (linear interpolation): > 1 compresses the beat, < 1 stretches it;
        # the window starts at the R peak, which stays in place
        factor = jax.random.uniform(k6, (b, 1), minval=1 - a.stretch, maxval=1 + a.stretch)
        src = jnp.clip(jnp.arange(n)[None, :] * factor, 0, n - 1)
        lo = jnp.floor(src).astype(jnp.int32)
        hi = jnp.minimum(lo + 1, n - 1)
        w = src - lo
        x = (1 - w) * jnp.take_along_axis(x, lo, axis=1) + w * jnp.take_along_axis(x, hi, axis=1)
    return x


def _apply(state: TrainState, params: Any, x, rr, rng):
    """Training forward pass; returns (logits, new batch stats) whether or not the model has any."""
    variables = predict.variables_of(params, state.batch_stats)
    if state.batch_stats:
        logits, upd = state.apply_fn(
            variables, x, rr, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
        )
        return logits, upd["batch_stats"]
    return state.apply_fn(variables, x, rr, train=True, rngs={"dropout": rng}), state.batch_stats


def train_step(state, batch, class_weights, *, loss_fn, aug):
    """One optimiser step on a batch (x, y, rr); returns the new state and the batch loss."""
    x, y, rr = batch
    rng, k_aug, k_drop = jax.random.split(state.rng, 3)
    x = augment(x, k_aug, aug)

    def loss_of(params):
        logits, stats = _apply(state, params, x, rr, k_drop)
        return loss_fn(logits, y, class_weights).mean(), stats

    (loss, stats), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=stats, rng=rng)
    return state, loss


def make_train_chunk(t: ml_collections.ConfigDict) -> Callable:
    """Jit a `lax.scan` over a chunk of batches; the data stays on the device."""
    loss_fn = losses.get_loss(t.loss, t.focal_gamma)
    aug = t.augment

    def train_chunk(state, data: Arrays, perm, class_weights):
        # perm: (steps, batch) indices into data; one scan = many steps with no host round trip.
        def body(state, idx):
            batch = (data.x[idx], data.y[idx], data.rr[idx])
            return train_step(state, batch, class_weights, loss_fn=loss_fn, aug=aug)

        state, loss = jax.lax.scan(body, state, perm)
        return state, loss.mean()

    return jax.jit(train_chunk, donate_argnums=0)


class EpochPlan(NamedTuple):
    """How an epoch is cut: `calls` jitted calls of `chunk` steps of `batch` beats each."""

    calls: int
    chunk: int
    batch: int

    @classmethod
    def of(cls, n: int, batch_size: int, calls: int) -> EpochPlan:
        """Plan for `n` beats; the < calls*batch leftover beats are dropped (reshuffled each epoch)."""
        batch = max(min(batch_size, n), 1)
        steps = n // batch
        calls = max(min(calls, steps), 1)
        return cls(calls, steps // calls, batch)

    @property
    def steps(self) -> int:
        return self.calls * self.chunk

    @property
    def beats(self) -> int:
        return self.steps * self.batch


def run_epoch(
    train_chunk: Callable,
    state: Any,
    data: Arrays,
    plan: EpochPlan,
    rng: jax.Array,
    *chunk_args: Any,
    on_chunk: Callable[[], None] | None = None,
) -> tuple[Any, np.ndarray]:
    """One epoch over a permutation of `data` drawn from `rng`: `plan.calls` calls of
    `train_chunk`. Returns the new state and the chunk losses (one per call; a population's
    have a member axis). `on_chunk` runs after each call has finished (progress, timing).
    """
    perm = jax.random.permutation(rng, data.x.shape[0])[: plan.beats]
    perm = perm.reshape(plan.calls, plan.chunk, plan.batch)
    chunk_losses = []
    for i in range(plan.calls):
        state, loss = train_chunk(state, data, perm[i], *chunk_args)
        chunk_losses.append(loss)
        if on_chunk is not None:
            loss.block_until_ready()  # honest progress; ~10 syncs an epoch cost nothing
            on_chunk()
    return state, np.asarray(jax.device_get(chunk_losses))


# ----------------------------------------------------------------------------- the loop


def load_splits(config: ml_collections.ConfigDict) -> tuple[BeatTable, BeatTable]:
    """Training table minus the stratified validation split, and that split."""
    d = config.data
    table = load_table(d.train_file, d.dataset) if d.train_file else load_dataset(
        d.dir, d.dataset, "train"
    )
    if table.dataset != d.dataset:
        raise UserError(f"{table.path}: holds {table.dataset} beats but data.dataset={d.dataset}")
    if config.model.get("use_rr", False) and table.rr is None:
        raise UserError(
            f"{table.path}: model.use_rr needs the R-R columns {', '.join(RR_COLUMNS)}; "
            "rebuild the tables with "
            "`python -m heartjax.data build` or set --config.model.use_rr=False"
        )
    train, val = train_val_split(table, d.val_fraction, d.seed, d.val_by)
    if 0 < d.train_limit < len(train):  # quick runs: a stratified subsample of the training part
        keep, _ = stratified_split(train.y, 1 - d.train_limit / len(train), d.seed)
        train = train.subset(np.sort(keep))
    return train, val


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="beat", unit_scale=True, leave=False, disable=not enabled)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    members: list[dict[str, Any]] | None = None,
    report: ReportFn | None = None,
    progress: bool = True,
    splits: tuple[BeatTable, BeatTable] | None = None,
    overwrite: bool = False,
) -> Metrics:
    """Train `config` into `workdir`; return the best validation metrics (and where they are).

    Keeps the best-k checkpoints by `train.select_metric`, stops after `train.patience` epochs
    without improvement, and logs every epoch to `metrics.jsonl` and TensorBoard.

    `members` (dicts over `population.MEMBER_FIELDS`, e.g. `{"train.learning_rate": 3e-4}`)
    trains that many models at once in one program. Each epoch every member is evaluated;
    `members.jsonl` logs all of them, `metrics.jsonl` and the checkpoints follow the best one.
    """
    validate(config)
    enable_compilation_cache()
    workdir = Path(workdir)
    if ckpt.has_checkpoints(workdir) and not overwrite:
        raise UserError(
            f"{workdir} already holds a trained run; pick a new --workdir or pass --overwrite"
        )
    configs = population.member_configs(config, members) if members else [config]
    if overwrite:
        ckpt.clear_run(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t = config.train
    train_table, val_table = splits or load_splits(config)
    class_names = train_table.class_names
    num_classes = len(class_names)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    model = build_model(config.model, num_classes)
    plan = EpochPlan.of(len(train_table), t.batch_size, t.log_every_calls)
    tx = create_optimizer(t, plan.steps)
    source = _init_source(config, class_names)
    if t.trainable == "head":
        shapes = jax.eval_shape(lambda: create_train_state(model, tx, t.seed).params)
        tx = freeze_all_but_head(tx, shapes)

    def create(seed: int) -> TrainState:
        return create_train_state(model, tx, seed, source)

    if members:
        state = population.create_population_state(create, configs)
        train_chunk = population.make_population_chunk(t)
        weights = population.class_weights(train_table.y, num_classes, configs)
    else:
        state = create(t.seed)
        train_chunk = make_train_chunk(t)
        weights = jnp.asarray(losses.loss_weights(train_table.y, num_classes, t))
    predict_fn = predict.make_predict_fn(model.apply)
    train = to_arrays(train_table)
    val = to_arrays(val_table)
    one = population.unstack(state, 0) if members else state
    params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(one.params))

    manager = ckpt.Manager(workdir, t.select_metric, t.keep_checkpoints)
    writer = _tensorboard(workdir)
    rng = jax.random.PRNGKey(t.seed + 1)
    best: Metrics = {}
    best_score, since_best = -math.inf, 0
    compile_s = None
    try:
        for epoch in range(1, t.epochs + 1):
            rng, k_epoch = jax.random.split(rng)
            t0 = time.perf_counter()
            with _progress(plan.beats, f"epoch {epoch}/{t.epochs}", progress) as bar:

                def on_chunk(t0: float = t0) -> None:
                    nonlocal compile_s
                    if compile_s is None:
                        compile_s = time.perf_counter() - t0
                    bar.update(plan.chunk * plan.batch)

                state, epoch_losses = run_epoch(
                    train_chunk, state, train, plan, k_epoch, weights, on_chunk=on_chunk
                )
            train_s = time.perf_counter() - t0
            # the first epoch includes compilation; count only the steps after the first call
            timed = train_s - (compile_s if epoch == 1 else 0.0)
            beats = (plan.calls - (1 if epoch == 1 else 0)) * plan.chunk * plan.batch
            member_loss = np.atleast_1d(epoch_losses.mean(axis=0))
            if not np.isfinite(member_loss).any():
                raise FloatingPointError(f"training diverged at epoch {epoch} (loss {member_loss})")
            rows, evals = [], []
            for i in range(len(configs)):
                one = population.unstack(state, i) if members else state
                variables = predict.variables_of(one.params, one.batch_stats)
                proba = predict.predict_proba(predict_fn, variables, val.x, val.rr, t.eval_batch_size)
                val_m = metrics.evaluate_predictions(val_table.y, proba, class_names)
                evals.append((one, val_m, proba))
                rows.append({
                    "epoch": epoch,
                    "train_loss": float(member_loss[i]),
                    "beats_per_s": beats / timed if timed > 0 and beats else float("nan"),
                    "epoch_s": train_s,
                    **metrics.flat_scalars(val_m, "val_"),
                    **({"member": i} if members else {}),
                })
            # a diverged member (NaN loss) never leads; the others go on
            scores = [val_m[t.select_metric] if math.isfinite(r["train_loss"]) else -math.inf
                      for r, (_, val_m, _) in zip(rows, evals)]
            lead = int(np.argmax(scores))
            row, (one, val_m, proba) = rows[lead], evals[lead]
            improved = scores[lead] > best_score
            ckpt_dir = None
            if improved:
                best_score, since_best = scores[lead], 0
                meta = _meta(configs[lead], class_names, epoch, val_m, params, val_table, proba)
                ckpt_dir = manager.save(epoch, one, meta, scores[lead])
                best = {"epoch": epoch, "val": val_m, "checkpoint": str(ckpt_dir), "params": params}
                if members:
                    best.update(member=lead, member_values=members[lead])
            else:
                since_best += 1
            row["final"] = int(epoch == t.epochs or since_best >= t.patience)
            _log(workdir / "metrics.jsonl", writer, row)
            if members:
                with (workdir / "members.jsonl").open("a") as f:
                    for r, m in zip(rows, members):
                        f.write(json.dumps({**r, **m}) + "\n")
            if progress:
                print(_epoch_line(row, t.select_metric, improved), flush=True)
            if report is not None:
                # Ray may end this process right after a report: the save must be on disk
                manager.wait()
                report(epoch, {**row, "params": params}, ckpt_dir)
            if since_best >= t.patience:
                if progress:
                    print(f"early stop: no better {t.select_metric} for {t.patience} epochs")
                break
    finally:
        manager.close()
        if writer is not None:
            writer.close()
    best["compile_s"] = compile_s
    (workdir / "best.json").write_text(json.dumps(best, indent=2))
    return best


def _init_source(config: ml_collections.ConfigDict, class_names: tuple[str, ...]) -> Any:
    """Variables of the checkpoint named by `train.init_from`, or None."""
    if not config.train.init_from:
        return None
    from heartjax.checkpoint import load_checkpoint

    try:
        source = load_checkpoint(config.train.init_from)
    except UserError as e:
        raise UserError(f"train.init_from={config.train.init_from!r}: {e} (train the source model "
                        "first, or point init_from at a trained run)") from None
    if source.config.model.name != config.model.name:
        raise UserError(
            f"train.init_from: the checkpoint is a {source.config.model.name}, this config a "
            f"{config.model.name}; set --config.model.name={source.config.model.name}"
        )
    return source.variables


def _meta(config, class_names, epoch, val_m, params, val_table, proba) -> dict[str, Any]:
    """What makes a checkpoint self-describing: config, classes, metrics, decision rule."""
    meta = {
        "config": config.to_dict(),
        "dataset": config.data.dataset,
        "class_names": list(class_names),
        "epoch": epoch,
        "params": params,
        "val": metrics.flat_scalars(val_m),
        "threshold": None,
    }
    if len(class_names) == 2 and config.train.target_recall > 0:
        # recall first: chosen on validation, never on test
        meta["threshold"] = metrics.threshold_for_recall(
            val_table.y, proba[:, 1], config.train.target_recall
        )
    return meta


def _epoch_line(row: dict[str, float], select: str, improved: bool) -> str:
    star = " *" if improved else ""
    return (
        f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  "
        f"val acc {row['val_accuracy']:.4f}  macro recall {row['val_macro_recall']:.4f}  "
        f"macro F1 {row['val_macro_f1']:.4f}  {row['beats_per_s']:,.0f} beats/s{star}"
    )


def _tensorboard(workdir: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # logging to TensorBoard is a convenience, not a requirement
        return None
    return SummaryWriter(str(workdir / "tensorboard"))


def _log(path: Path, writer, row: dict[str, float]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k, v, row["epoch"])
        writer.flush()


# ----------------------------------------------------------------------------- CLI


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """`python -m heartjax.train --config configs/mitbih.py --workdir DIR`."""
    from heartjax.cli import parse_config_flags

    config, args = parse_config_flags(
        argv,
        "Train one model from a config file; keeps its best checkpoints in WORKDIR/checkpoints.",
        extra=[
            ("--workdir", dict(required=True, help="output folder (created if missing)")),
            ("--overwrite", dict(action="store_true", help="replace a run already in WORKDIR")),
        ],
    )
    best = train_and_evaluate(config, args.workdir, overwrite=args.overwrite)
    val = best["val"]
    print(
        f"best epoch {best['epoch']}: val accuracy {val['accuracy']:.4f}, macro recall "
        f"{val['macro_recall']:.4f}, macro F1 {val['macro_f1']:.4f} -> {best['checkpoint']}"
    )


if __name__ == "__main__":
    main()
