"""Building blocks shared by the models: convolution, pooling, normalisation, positions, head.

On the CPU, convolutions are "patch-matmul": the k shifted slices of the padded input are
concatenated on the channel axis, `(B, L, k*C_in)`, and multiplied once by the kernel. It computes
exactly what `nn.Conv` computes, with the same parameters, but XLA:CPU differentiates a matmul much
faster than a convolution (measured, fwd+bwd+Adam: cnn2d ~10x, resnet1d ~20x faster).
`impl="xla"` keeps the native conv (GPUs have tuned kernels for it); `impl="auto"`, the models'
default, picks patch on the CPU backend and xla elsewhere.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax import lax

from heartjax.data.context import PARTS, context_width
from heartjax.data.tables import RR_COLUMNS
from heartjax.errors import UserError

NORMS = ("batch", "layer", "none")
CONV_IMPLS = ("auto", "patch", "xla")


# --- configuration helpers ------------------------------------------------------------------


def model_fields(model_cls: type) -> dict[str, dataclasses.Field]:
    """The tunable fields of a model class (its dataclass fields but `num_classes`)."""
    skip = {"parent", "name", "num_classes"}
    return {f.name: f for f in dataclasses.fields(model_cls) if f.name not in skip and f.init}


def config_of(model_cls: type, name: str) -> ml_collections.ConfigDict:
    """A ConfigDict of the model's field defaults plus `name` (the fields are the one source)."""
    cfg = {"name": name}
    cfg.update({k: f.default for k, f in model_fields(model_cls).items()})
    return ml_collections.ConfigDict(cfg)


def require(ok: bool, field: str, value: object, why: str) -> None:
    """Raise a one-line UserError naming `model.<field>` unless `ok`."""
    if not ok:
        raise UserError(f"model.{field}={value!r} is invalid: {why}")


def check_common(m: nn.Module, positive: Sequence[str] = ()) -> None:
    """Validate the fields every model shares (norm, dropout, the head's, conv_impl) and the
    model's `positive` ints."""
    require(m.norm in NORMS, "norm", m.norm, f"choose one of {', '.join(NORMS)}")
    require(0.0 <= m.dropout < 1.0, "dropout", m.dropout, "must be in [0, 1)")
    parts = tuple(m.context)
    require(set(parts) <= set(PARTS) and len(set(parts)) == len(parts), "context", parts,
            f"name each of {', '.join(PARTS)} at most once, or () for none")
    require(0.0 <= m.morph_dropout < 1.0, "morph_dropout", m.morph_dropout, "must be in [0, 1)")
    require(bool(parts) or m.morph_dropout == 0.0, "morph_dropout", m.morph_dropout,
            "needs model.context (without it the head would see nothing)")
    mix = tuple(m.morph_mix)
    require(len(mix) in (0, 1, m.num_classes) and all(0.0 <= v <= 1.0 for v in mix),
            "morph_mix", mix, f"give one weight in [0, 1], one per class ({m.num_classes}), "
            "or () for none")
    require(max(mix, default=0.0) == 0.0 or m.morph_dropout > 0.0, "morph_mix", mix,
            "needs model.morph_dropout > 0 (only morphology dropout trains the head without "
            "the beat's shape)")
    if hasattr(m, "conv_impl"):
        require(m.conv_impl in CONV_IMPLS, "conv_impl", m.conv_impl,
                f"choose one of {', '.join(CONV_IMPLS)}")
    for field in positive:
        value = getattr(m, field)
        require(value >= 1, field, value, "must be >= 1")
    for width in m.head_hidden:
        require(int(width) >= 1, "head_hidden", m.head_hidden, "widths must be >= 1")


# --- convolution and pooling ----------------------------------------------------------------


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """XLA/TF 'SAME' padding (what nn.Conv uses): output ceil(size/s), extra pad at the end."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def extract_patches(
    x: jnp.ndarray, kernel_size: Sequence[int], strides: Sequence[int], padding: str
) -> jnp.ndarray:
    """(B, *spatial, C) -> (B, *out_spatial, prod(kernel_size) * C), in kernel.reshape order."""
    spatial = x.shape[1:-1]
    if padding == "SAME":
        pads = [_same_pads(n, k, s) for n, k, s in zip(spatial, kernel_size, strides)]
    elif padding == "VALID":
        pads = [(0, 0)] * len(spatial)
    else:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    x = jnp.pad(x, [(0, 0), *pads, (0, 0)])
    out = [
        (n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(spatial, pads, kernel_size, strides)
    ]
    slices = []
    for offsets in itertools.product(*(range(k) for k in kernel_size)):
        index = tuple(slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offsets, out, strides))
        slices.append(x[(slice(None), *index, slice(None))])
    return slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)


def conv_impl_for(impl: str) -> str:
    """`impl` with "auto" resolved for the default backend: "patch" on the CPU, else "xla"."""
    if impl != "auto":
        return impl
    return "patch" if jax.default_backend() == "cpu" else "xla"


class Conv(nn.Module):
    """`nn.Conv` for 'SAME'/'VALID' padding and strides, same params; patch-matmul or XLA conv."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] | None = None
    padding: str = "SAME"
    use_bias: bool = True
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k = tuple(self.kernel_size)
        s = tuple(self.strides) if self.strides is not None else (1,) * len(k)
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (*k, x.shape[-1], self.features)
        )
        impl = conv_impl_for(self.impl)
        if impl == "patch":
            y = extract_patches(x, k, s, self.padding) @ kernel.reshape(-1, self.features)
        elif impl == "xla":
            spec = "N" + "HWD"[: len(k)] + "C"
            dims = (spec, spec[1:-1] + "IO", spec)
            y = lax.conv_general_dilated(x, kernel, s, self.padding, dimension_numbers=dims)
        else:
            raise ValueError(f"impl must be one of {CONV_IMPLS}, got {self.impl!r}")
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y


def max_pool(
    x: jnp.ndarray,
    window: Sequence[int],
    strides: Sequence[int] | None = None,
    impl: str = "slices",
) -> jnp.ndarray:
    """'VALID' max pooling of (B, *spatial, C): elementwise max of the strided slices, or "xla".

    XLA:CPU differentiates reduce_window (nn.max_pool) through a slow select-and-scatter; the max
    of the window's strided slices differentiates elementwise: measured 1.2-4x faster fwd+bwd
    (and faster than a reshape + max when the stride equals the window).
    """
    window = tuple(window)
    strides = tuple(strides) if strides is not None else window
    if impl == "xla":
        return nn.max_pool(x, window, strides, padding="VALID")
    if impl != "slices":
        raise ValueError(f"max_pool impl must be 'slices' or 'xla', got {impl!r}")
    out = [(n - w) // s + 1 for n, w, s in zip(x.shape[1:-1], window, strides)]
    y = None
    for offsets in itertools.product(*(range(w) for w in window)):
        index = tuple(slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offsets, out, strides))
        piece = x[(slice(None), *index, slice(None))]
        y = piece if y is None else jnp.maximum(y, piece)
    return y


def pooled_length(length: int, window: int, stride: int) -> int:
    """Output length of a 'VALID' pooling (0 when the input is shorter than the window)."""
    return max((length - window) // stride + 1, 0)


# --- normalisation, positions ---------------------------------------------------------------


# batch norm's running statistics keep this share of themselves at each training step;
# 0.9 = PyTorch's 0.1: short runs need statistics that catch up quickly
BN_MOMENTUM = 0.9


def norm(kind: str, train: bool) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """Normalisation over the channel axis: "batch" | "layer" | "none" (call inside compact)."""
    if kind == "batch":
        return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM)
    if kind == "layer":
        return nn.LayerNorm()
    if kind == "none":
        return lambda x: x
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def sinusoidal_positions(length: int, dim: int) -> np.ndarray:
    """(length, dim) sine/cosine position encoding of Vaswani et al. 2017 (a constant)."""
    pos = np.arange(length)[:, None]
    freq = np.exp(-np.log(10000.0) * np.arange(0, dim, 2) / dim)
    pe = np.zeros((length, dim), np.float32)
    pe[:, 0::2] = np.sin(pos * freq)
    pe[:, 1::2] = np.cos(pos * freq[: dim // 2])
    return pe


# --- the context parts and the classification head ------------------------------------------


def rr_features(rr: jnp.ndarray, seconds: bool = True) -> jnp.ndarray:
    """(B, 4) prev/next/local-mean/record-mean R-R in seconds -> (B, 9) log features: the four
    intervals, prev and next over the local mean, prev, next and local over the record mean.
    `seconds=False` leaves out the four intervals themselves (B, 5): only the ratios remain.

    Logs make a ratio a difference and put 0.3 s and 2 s on one scale; the ratios to the
    record's mean say "premature for this patient", which transfers across patients where
    seconds do not (DS1 -> DS2: a logistic regression on these alone finds 62% of S beats).
    """
    if rr.ndim != 2 or rr.shape[-1] != len(RR_COLUMNS):
        raise ValueError(f"rr must have shape (batch, {len(RR_COLUMNS)}), got {rr.shape}")
    log = jnp.log(jnp.maximum(rr, 1e-3))  # a zero interval (missing neighbours) stays finite
    local, record = log[:, 2:3], log[:, 3:4]
    ratios = [log[:, :2] - local, log[:, :3] - record]
    return jnp.concatenate([log, *ratios] if seconds else ratios, axis=-1)


def template_features(t: jnp.ndarray) -> jnp.ndarray:
    """(B, 2k) (correlation with, RMS difference from) the record's median, for k windows of the
    beat (`heartjax.data.template`) -> the correlations, then the logs of the differences (as for
    R-R, a ratio becomes a difference)."""
    return jnp.concatenate([t[:, 0::2], jnp.log(jnp.maximum(t[:, 1::2], 1e-3))], axis=-1)


# How the head reads each part of `heartjax.data.context.PARTS`: (its columns, the head) -> inputs.
READERS: dict[str, Callable[[jnp.ndarray, Head], jnp.ndarray]] = {
    "rr": lambda columns, head: rr_features(columns, head.rr_seconds),
    "template": lambda columns, head: template_features(columns),
}


def check_context(context: jnp.ndarray | None, parts: Sequence[str]) -> None:
    """A model that reads its context needs the columns of its parts: (batch, width)."""
    width = context_width(parts)
    if context is None or context.ndim != 2 or context.shape[-1] != width:
        raise ValueError(f"model.context={tuple(parts)} reads {width} context columns: pass "
                         f"context of shape (batch, {width})")


def drop_shapes(h: jnp.ndarray, rate: float, key: jax.Array) -> jnp.ndarray:
    """Morphology dropout: each beat's whole shape vector zeroed with probability `rate`.

    Unlike nn.Dropout, the kept shapes are not scaled up by 1 / (1 - rate): the head learns two
    modes, the shape as it is and no shape, and evaluation meets each as trained, not a shape
    1 - rate times the size of any it saw (that cost 16 points of kaggle accuracy)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, (h.shape[0], 1))
    return h * keep.astype(h.dtype)


def mix_shapes(logits: jnp.ndarray, weights: Sequence[float]) -> jnp.ndarray:
    """Log-probabilities of the mix of the two halves of `logits` (the beats with their shapes,
    then without): (1 - w) x with + w x without, for one weight or one per class (whose shares
    no longer sum to one, so they are renormalised)."""
    with_shape, without = jnp.split(jax.nn.log_softmax(logits), 2, axis=0)
    w = jnp.asarray(weights, with_shape.dtype)
    mixed = jnp.logaddexp(jnp.log1p(-w) + with_shape, jnp.log(w) + without)
    if len(weights) > 1:
        mixed = mixed - jax.nn.logsumexp(mixed, axis=-1, keepdims=True)
    return mixed


class Classifier(nn.Module):
    """What every model shares: the number of classes and the head's fields (`Head`). A model
    subclasses it, adds its own fields (and may change these defaults), and ends its
    `__call__` with `self.head(features, context, train)`."""

    num_classes: int = 0  # set by heartjax.models.build_model from the dataset
    dropout: float = 0.0
    head_hidden: Sequence[int] = ()
    context: tuple[str, ...] = ()
    rr_seconds: bool = True
    morph_dropout: float = 0.0
    morph_mix: tuple[float, ...] = ()

    def head(self, h: jnp.ndarray, context: jnp.ndarray | None, train: bool) -> jnp.ndarray:
        return Head(self.num_classes, self.head_hidden, self.dropout, self.context,
                    self.rr_seconds, self.morph_dropout, self.morph_mix)(h, context, train)


class Head(nn.Module):
    """Pooled features (+ the inputs of the context parts, `context`) -> Dense/ReLU/Dropout per
    hidden -> logits.

    `context` names the parts of the model's context input (`heartjax.data.context.PARTS`,
    e.g. ("rr", "template")), in the order of their columns: the R-R intervals, read as
    `rr_features` (`rr_seconds=False` keeps only their ratios, which do not carry the
    patient's heart rate), and the beat's QRS against its record's median QRS.

    `morph_dropout`: in training, the whole pooled beat-shape vector of a beat is zeroed with
    this probability (`drop_shapes`), so the head must also classify from the context alone.
    Shapes are patient-specific and the rhythm is not: this keeps a network trained on some
    patients from ignoring prematurity when it meets new ones.

    `morph_mix`: morphology dropout trains two classifiers in one, with and without the beat's
    shape. At evaluation the class probabilities are (1 - w) x those with the shape + w x those
    without it (`mix_shapes`; returned as their logs, so a softmax gives the mixture back): the
    shape-free half transfers to new patients, the other knows the shapes. One weight serves
    every class; one per class weighs each apart (a V beat is told by its shape, an S beat by
    its rhythm); () evaluates with the shape only. Training is unchanged."""

    num_classes: int
    hidden: Sequence[int] = ()
    dropout: float = 0.0
    context: tuple[str, ...] = ()
    rr_seconds: bool = True
    morph_dropout: float = 0.0
    morph_mix: tuple[float, ...] = ()

    @nn.compact
    def __call__(self, h: jnp.ndarray, context: jnp.ndarray | None, train: bool) -> jnp.ndarray:
        h = h.reshape(h.shape[0], -1)
        mixing = bool(self.context) and not train and max(self.morph_mix, default=0.0) > 0
        if self.context:
            check_context(context, self.context)
            context = context.astype(h.dtype)
            if train and self.morph_dropout > 0:
                h = drop_shapes(h, self.morph_dropout, self.make_rng("dropout"))
            if mixing:  # the same head, run on the beats with their shapes and without
                h = jnp.concatenate([h, jnp.zeros_like(h)], axis=0)
                context = jnp.concatenate([context, context], axis=0)
            h = jnp.concatenate([h, *self.context_inputs(context)], axis=-1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(int(width))(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        logits = nn.Dense(self.num_classes)(h)
        return mix_shapes(logits, self.morph_mix) if mixing else logits

    def context_inputs(self, context: jnp.ndarray) -> list[jnp.ndarray]:
        """Each named part's columns of `context`, as the head reads them (READERS)."""
        inputs, start = [], 0
        for name in self.context:
            stop = start + len(PARTS[name].columns)
            inputs.append(READERS[name](context[:, start:stop], self))
            start = stop
        return inputs
