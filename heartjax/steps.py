"""Train state and steps: the optimiser and its schedule, the train state, the pure train step
and the jitted chunk of an epoch (a `lax.scan` over batches of data that stays on the device).

`heartjax.train` (one model), `heartjax.population` (K models in one program),
`heartjax.fidelity` (tuning rungs) and `heartjax.bench` all train with these pieces.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state

from heartjax import losses, predict
from heartjax.data import SIGNAL_LEN, BeatTable, context_features, context_width
from heartjax.errors import UserError
from heartjax.models import build_model
from heartjax.noise import NoiseBank


class Arrays(NamedTuple):
    """A split as device arrays: beats (N, 187), labels (N,) and each beat's context: the
    columns of the parts its model reads (`heartjax.data.context_features`; (N, 0) for none)."""

    x: jax.Array
    y: jax.Array
    context: jax.Array


class TrainState(train_state.TrainState):
    """Flax TrainState plus batch-norm statistics (an empty dict for models without them) and
    the key stream of dropout and augmentation (its own per population member)."""

    batch_stats: Any = None
    rng: Any = None


def to_arrays(table: BeatTable, parts: Sequence[str]) -> Arrays:
    """Put a beat table on the device once with the context `parts` (`model.context`)."""
    context = context_features(table.x, table.rr, table.records, parts)
    return Arrays(jnp.asarray(table.x), jnp.asarray(table.y, jnp.int32), jnp.asarray(context))


def record_sampling_of(table: BeatTable, t: ml_collections.ConfigDict,
                       rows: np.ndarray | None = None) -> np.ndarray | None:
    """Each training beat's probability of being drawn under `t.record_balance` for the
    classes `t.record_balance_classes` names (`heartjax.losses.record_sampling`), over `rows`
    of the table when given; None for 0."""
    if t.record_balance == 0:
        return None
    if table.records is None:
        raise UserError(f"{table.path or 'the training table'}: train.record_balance needs a "
                        "'record' column; rebuild the tables with `python -m heartjax.data build` "
                        "or set --config.train.record_balance=0")
    rows = np.arange(len(table)) if rows is None else rows
    named = tuple(t.record_balance_classes)
    classes = [table.class_names.index(c) for c in named] if named else None
    return losses.record_sampling(table.y[rows], table.records[rows], t.record_balance, classes)


# ----------------------------------------------------------------------------- optimiser


# The schedule's shape is laid over this many nominal steps and stretched to a run's length by an
# injected factor: runs of any length (epochs, fidelity rungs) share one compiled program.
NOMINAL_STEPS = 1 << 20


def create_learning_rate_fn(t: ml_collections.ConfigDict, steps_per_epoch: float, peak: float) -> optax.Schedule:
    """The schedule named by `train.schedule` with maximum `peak`, in optimiser steps."""
    total = max(round(t.epochs * steps_per_epoch), 1)
    warmup = int(t.warmup_epochs * steps_per_epoch)
    schedules = {  # the names of heartjax.config.SCHEDULES, checked there
        "constant": lambda: optax.constant_schedule(peak),
        "cosine": lambda: optax.warmup_cosine_decay_schedule(0.0, peak, min(warmup, total - 1), total),
        "onecycle": lambda: optax.cosine_onecycle_schedule(total, peak),
        "exponential": lambda: optax.exponential_decay(peak, steps_per_epoch, t.decay_rate),
    }
    return schedules[t.schedule]()


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
    x = jnp.zeros((2, SIGNAL_LEN), jnp.float32)
    k_init, k_train = jax.random.split(jax.random.PRNGKey(seed))
    init = functools.partial(model.init, train=False)
    if compiled:
        init = jax.jit(init)
    variables = init(k_init, x, jnp.ones((2, context_width(model.context)), jnp.float32))
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


def augment(x: jax.Array, key: jax.Array, a: ml_collections.ConfigDict,
            noise: NoiseBank | None = None) -> jax.Array:
    """Random amplitude scaling, baseline wander, noise, electrode motion, time shift, time
    warp and real recorder noise from `noise` (all off by default): what another recorder,
    lead, patient or heart rate changes in a beat."""
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
    if a.motion > 0:
        # electrode motion: three smooth transients of either sign, 40-250 ms wide, anywhere
        kc, kw, ka = jax.random.split(jax.random.fold_in(key, 6), 3)
        centre = jax.random.uniform(kc, (b, 3, 1), maxval=n)
        width = jax.random.uniform(kw, (b, 3, 1), minval=5.0, maxval=31.0)  # samples at 125 Hz
        height = jax.random.uniform(ka, (b, 3, 1), minval=-a.motion, maxval=a.motion)
        x = x + (height * jnp.exp(-0.5 * ((jnp.arange(n) - centre) / width) ** 2)).sum(1)
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
    # last: the electrodes' noise is not warped with the beat (an augment config saved before
    # real noise existed has no such field)
    if a.get("real_noise", 0.0) > 0:
        if noise is None:
            raise ValueError("train.augment.real_noise > 0 needs the noise bank (heartjax.noise.bank_of)")
        x = add_real_noise(x, jax.random.fold_in(key, 7), noise, a.real_noise,
                           tuple(a.real_noise_snr))
    return x


def add_real_noise(x: jax.Array, key: jax.Array, noise: NoiseBank, share: float,
                   snr: tuple[float, float]) -> jax.Array:
    """Add to a `share` of the beats a random beat-long segment of a random kind (and channel)
    of the real noise in `noise`, at an SNR drawn uniformly in `snr` (dB) as EC57 defines it:
    S = (peak-to-peak QRS amplitude)^2 / 8, taken as (max - min of the beat)^2 / 8, over N =
    the segment's mean square (its own mean removed: an offset is no noise). A beat's zero
    padding stays zero, as in a beat cut from a noisy record: S and N are measured on the
    beat before it."""
    b, n = x.shape
    k_kind, k_chan, k_start, k_snr, k_on = jax.random.split(key, 5)
    kinds, channels, _ = noise.signal.shape
    kind = jax.random.randint(k_kind, (b,), 0, kinds)
    chan = jax.random.randint(k_chan, (b,), 0, channels)
    last = noise.length[kind] - n  # the last start inside the kind's samples
    start = jnp.floor(jax.random.uniform(k_start, (b,)) * (last + 1)).astype(jnp.int32)
    idx = jnp.minimum(start, last)[:, None] + jnp.arange(n)
    seg = noise.signal[kind[:, None], chan[:, None], idx]
    beat = jnp.flip(jnp.cumsum(jnp.flip(x != 0, axis=1), axis=1), axis=1) > 0  # not padding
    count = jnp.maximum(beat.sum(axis=1, keepdims=True), 1)
    seg = seg - jnp.where(beat, seg, 0.0).sum(axis=1, keepdims=True) / count
    power = jnp.where(beat, seg ** 2, 0.0).sum(axis=1, keepdims=True) / count
    top = jnp.where(beat, x, -jnp.inf).max(axis=1, keepdims=True)
    bottom = jnp.where(beat, x, jnp.inf).min(axis=1, keepdims=True)
    signal = jnp.where(jnp.isfinite(top), (top - bottom) ** 2 / 8, 0.0)
    db = jax.random.uniform(k_snr, (b, 1), minval=snr[0], maxval=snr[1])
    gain = jnp.sqrt(signal / jnp.maximum(power, 1e-12) * 10.0 ** (-db / 10))
    on = jax.random.uniform(k_on, (b, 1)) < share
    return x + jnp.where(on & beat, gain * seg, 0.0)


def _apply(state: TrainState, params: Any, x, context, rng):
    """Training forward pass; returns (logits, new batch stats) whether or not the model has any."""
    variables = predict.variables_of(params, state.batch_stats)
    if state.batch_stats:
        logits, upd = state.apply_fn(
            variables, x, context, train=True, rngs={"dropout": rng}, mutable=["batch_stats"]
        )
        return logits, upd["batch_stats"]
    return state.apply_fn(variables, x, context, train=True, rngs={"dropout": rng}), state.batch_stats


def train_step(state, batch, class_weights, noise=None, *, loss_fn, aug):
    """One optimiser step on a batch (x, y, context); returns the new state and the batch loss.
    `noise`: the noise bank of `train.augment.real_noise` (None when it is off)."""
    x, y, context = batch
    rng, k_aug, k_drop = jax.random.split(state.rng, 3)
    x = augment(x, k_aug, aug, noise)

    def loss_of(params):
        logits, stats = _apply(state, params, x, context, k_drop)
        return loss_fn(logits, y, class_weights).mean(), stats

    (loss, stats), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads, batch_stats=stats, rng=rng)
    return state, loss


def make_train_chunk(t: ml_collections.ConfigDict) -> Callable:
    """Jit a `lax.scan` over a chunk of batches; the data stays on the device, and so does
    the noise bank (`noise`: an argument, not a constant of the program; None when off)."""
    loss_fn = losses.get_loss(t.loss, t.focal_gamma)
    aug = t.augment

    def train_chunk(state, data: Arrays, perm, class_weights, noise=None):
        # perm: (steps, batch) indices into data; one scan = many steps with no host round trip.
        def body(state, idx):
            batch = (data.x[idx], data.y[idx], data.context[idx])
            return train_step(state, batch, class_weights, noise, loss_fn=loss_fn, aug=aug)

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
    sampling: jax.Array | None = None,
) -> tuple[Any, np.ndarray]:
    """One epoch over a permutation of `data` drawn from `rng`: `plan.calls` calls of
    `train_chunk`. Returns the new state and the chunk losses (one per call; a population's
    have a member axis). `on_chunk` runs after each call has finished (progress, timing).
    `sampling`: each beat's probability (`heartjax.losses.record_sampling`); the epoch's beats
    are then drawn with replacement instead.
    """
    n = data.x.shape[0]
    perm = (jax.random.permutation(rng, n)[: plan.beats] if sampling is None
            else jax.random.choice(rng, n, (plan.beats,), p=sampling))
    perm = perm.reshape(plan.calls, plan.chunk, plan.batch)
    chunk_losses = []
    for i in range(plan.calls):
        state, loss = train_chunk(state, data, perm[i], *chunk_args)
        chunk_losses.append(loss)
        if on_chunk is not None:
            loss.block_until_ready()  # honest progress; ~10 syncs an epoch cost nothing
            on_chunk()
    return state, np.asarray(jax.device_get(chunk_losses))


class Program(NamedTuple):
    """What a config compiles to, before any data: the model, how an epoch is cut, the
    optimiser (head-only when `train.trainable=head`) and the variables to start from."""

    model: nn.Module
    plan: EpochPlan
    tx: optax.GradientTransformation
    init_from: Any = None

    def create(self, seed: int) -> TrainState:
        """A fresh train state from `seed` (with `init_from`'s variables where they fit)."""
        return create_train_state(self.model, self.tx, seed, self.init_from)


def build_program(
    config: ml_collections.ConfigDict, num_train: int, num_classes: int, init_from: Any = None
) -> Program:
    """The model, epoch plan and optimiser of `config` for `num_train` training beats."""
    t = config.train
    model = build_model(config.model, num_classes)
    plan = EpochPlan.of(num_train, t.batch_size, t.calls_per_epoch)
    tx = create_optimizer(t, plan.steps)
    if t.trainable == "head":
        shapes = jax.eval_shape(lambda: create_train_state(model, tx, t.seed).params)
        tx = freeze_all_but_head(tx, shapes)
    return Program(model, plan, tx, init_from)
