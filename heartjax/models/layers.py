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

from heartjax.data.tables import SIGNAL_LEN
from heartjax.errors import UserError

NORMS = ("batch", "layer", "none")
CONV_IMPLS = ("auto", "patch", "xla")

NUM_RR_FEATURES = 9  # logs of the 4 intervals, of prev and next over local, of prev, next, local over record
NUM_RR = 4  # R-R columns at the start of a model's `context` input; the template features follow
NUM_TEMPLATE_FEATURES = 2  # the QRS's correlation with its record's median QRS, RMS difference
NUM_RHYTHM_FEATURES = 4  # irregularity, prev/next over the local median, prev over the record's
NUM_SIZE_FEATURES = 2  # the QRS's spread and steepest slope against its record's median QRS (logs)
NUM_MEDIAN_DIFF = SIGNAL_LEN  # the beat minus its record's median beat, sample by sample
# heartjax.data.context: R-R, template, rhythm, size, the beat against its record's median
SIZE_START = NUM_RR + NUM_TEMPLATE_FEATURES + NUM_RHYTHM_FEATURES
MEDIAN_DIFF_START = SIZE_START + NUM_SIZE_FEATURES
CONTEXT_WIDTH = MEDIAN_DIFF_START + NUM_MEDIAN_DIFF


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
    """Validate the fields every model shares (norm, dropout, conv_impl) and positive ints."""
    require(m.norm in NORMS, "norm", m.norm, f"choose one of {', '.join(NORMS)}")
    require(0.0 <= m.dropout < 1.0, "dropout", m.dropout, "must be in [0, 1)")
    require(0.0 <= m.morph_dropout < 1.0, "morph_dropout", m.morph_dropout, "must be in [0, 1)")
    require(m.use_rr or m.morph_dropout == 0.0, "morph_dropout", m.morph_dropout,
            "needs model.use_rr=True (without R-R features the head would see nothing)")
    require(0.0 <= m.morph_mix <= 1.0, "morph_mix", m.morph_mix, "must be in [0, 1]")
    by_class = tuple(m.morph_mix_by_class)
    require(not by_class or (len(by_class) == m.num_classes and all(0.0 <= v <= 1.0 for v in by_class)),
            "morph_mix_by_class", by_class,
            f"give one weight in [0, 1] per class ({m.num_classes}), or () for morph_mix's")
    require(not by_class or m.morph_dropout > 0.0, "morph_mix_by_class", by_class,
            "needs model.morph_dropout > 0 (only morphology dropout trains the head without "
            "the beat's shape)")
    require(m.morph_mix == 0.0 or m.morph_dropout > 0.0, "morph_mix", m.morph_mix,
            "needs model.morph_dropout > 0 (only morphology dropout trains the head without "
            "the beat's shape)")
    require(m.use_rr or not m.use_template, "use_template", m.use_template,
            "needs model.use_rr=True (the template features travel with the R-R features)")
    require(m.use_rr or not m.use_rhythm, "use_rhythm", m.use_rhythm,
            "needs model.use_rr=True (the rhythm features travel with the R-R features)")
    require(m.use_rr or not m.use_irregularity, "use_irregularity", m.use_irregularity,
            "needs model.use_rr=True (the rhythm features travel with the R-R features)")
    require(m.use_rr or not m.use_size, "use_size", m.use_size,
            "needs model.use_rr=True (the size features travel with the R-R features)")
    require(m.use_rr or not m.use_median_diff, "use_median_diff", m.use_median_diff,
            "needs model.use_rr=True (the record's median beat travels with the R-R features)")
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


# --- RR features and the classification head ------------------------------------------------


def rr_features(rr: jnp.ndarray, seconds: bool = True) -> jnp.ndarray:
    """(B, 4) prev/next/local-mean/record-mean R-R in seconds -> (B, 9) log features: the four
    intervals, prev and next over the local mean, prev, next and local over the record mean.
    `seconds=False` leaves out the four intervals themselves (B, 5): only the ratios remain.

    Logs make a ratio a difference and put 0.3 s and 2 s on one scale; the ratios to the
    record's mean say "premature for this patient", which transfers across patients where
    seconds do not (DS1 -> DS2: a logistic regression on these alone finds 62% of S beats).
    """
    if rr.ndim != 2 or rr.shape[-1] != NUM_RR:
        raise ValueError(f"rr must have shape (batch, {NUM_RR}), got {rr.shape}")
    log = jnp.log(jnp.maximum(rr, 1e-3))  # a zero interval (missing neighbours) stays finite
    local, record = log[:, 2:3], log[:, 3:4]
    ratios = [log[:, :2] - local, log[:, :3] - record]
    return jnp.concatenate([log, *ratios] if seconds else ratios, axis=-1)


def template_features(t: jnp.ndarray) -> jnp.ndarray:
    """(B, 2k) (correlation with, RMS difference from) the record's median, for k windows of the
    beat (`heartjax.data.template`) -> the correlations, then the logs of the differences (as for
    R-R, a ratio becomes a difference)."""
    return jnp.concatenate([t[:, 0::2], jnp.log(jnp.maximum(t[:, 1::2], 1e-3))], axis=-1)


class Classifier(nn.Module):
    """What every model shares: the number of classes and the head's fields (`Head`). A model
    subclasses it, adds its own fields (and may change these defaults), and ends its
    `__call__` with `self.head(features, context, train)`."""

    num_classes: int = 0  # set by heartjax.models.build_model from the dataset
    dropout: float = 0.0
    head_hidden: Sequence[int] = ()
    use_rr: bool = False
    morph_dropout: float = 0.0
    use_template: bool = False
    morph_mix: float = 0.0
    morph_mix_by_class: tuple[float, ...] = ()
    rr_seconds: bool = True
    use_rhythm: bool = False
    use_irregularity: bool = False
    use_size: bool = False
    use_median_diff: bool = False

    def beat_channels(self, x: jnp.ndarray, context: jnp.ndarray | None) -> jnp.ndarray:
        """The convolutions' input: (B, 187, 1) the beat, or with `use_median_diff` (B, 187, 2)
        the beat and the beat minus its record's median beat (context's last columns), a shape
        that the patient's own usual beat does not explain."""
        if not self.use_median_diff:
            return x[..., None]
        check_context(context)
        diff = context[:, MEDIAN_DIFF_START:].astype(x.dtype)
        return jnp.stack([x, diff], axis=-1)

    def head(self, h: jnp.ndarray, context: jnp.ndarray | None, train: bool) -> jnp.ndarray:
        return Head(num_classes=self.num_classes, hidden=self.head_hidden, dropout=self.dropout,
                    use_rr=self.use_rr, morph_dropout=self.morph_dropout,
                    use_template=self.use_template, morph_mix=self.morph_mix,
                    morph_mix_by_class=self.morph_mix_by_class, rr_seconds=self.rr_seconds,
                    use_rhythm=self.use_rhythm, use_irregularity=self.use_irregularity,
                    use_size=self.use_size)(h, context, train)


def check_context(context: jnp.ndarray | None) -> None:
    """A model that reads its context needs all of it: (batch, CONTEXT_WIDTH)."""
    if context is None or context.ndim != 2 or context.shape[-1] != CONTEXT_WIDTH:
        raise ValueError(f"the model reads its context (use_rr): pass context, shape (batch, {CONTEXT_WIDTH})")


class Head(nn.Module):
    """Pooled features (+ R-R features when use_rr, + template features when use_template,
    + rhythm features when use_rhythm, their irregularity alone when use_irregularity, + size
    features when use_size) -> Dense/ReLU/Dropout per hidden -> logits.

    `context` is (B, CONTEXT_WIDTH): the R-R intervals (`heartjax.data.RR_COLUMNS`), then the
    beat's similarity to its record's median beat (`heartjax.data.template`), then the rhythm
    around the beat (`heartjax.data.rhythm`), then the beat's QRS size and slope against its
    record's median QRS (`heartjax.data.template.size_features`).

    `morph_dropout`: in training, the whole pooled beat-shape vector of a beat is zeroed with
    this probability, so the head must also classify from the R-R features alone. Shapes are
    patient-specific and the rhythm is not: this keeps a network trained on some patients from
    ignoring prematurity when it meets new ones.

    `morph_mix`: morphology dropout trains two classifiers in one, with and without the beat's
    shape. At evaluation the class probabilities are (1 - morph_mix) x those with the shape +
    morph_mix x those without it (returned as their logs, so a softmax gives the mixture back):
    the shape-free half transfers to new patients, the other knows the shapes. Training is
    unchanged; 0 evaluates with the shape only. `morph_mix_by_class` (one weight per class;
    () = morph_mix for all) weighs each class's two probabilities apart, then renormalises: a
    V beat is told by its shape, an S beat by its rhythm. While it is set, morph_mix is not
    read (clear it, `morph_mix_by_class=()`, to use one mix again).

    `rr_seconds`: the head sees the R-R intervals in seconds as well as their ratios; False
    keeps only the ratios, which do not carry the patient's heart rate.

    `use_rhythm`: the head also sees how irregular the rhythm around the beat is and its
    intervals against the local and record medians, so a short interval in atrial fibrillation
    need not read as a premature beat. `use_irregularity` shows it the irregularity alone (no
    interval against a median rhythm, so an ectopic rhythm that is the record's usual one still
    reads as premature); use_rhythm includes it.

    `use_size`: the head also sees how the beat's QRS differs in size and slope from its
    record's usual QRS (a ventricular complex is often larger and wider), which the shape-free
    half otherwise knows only as a correlation and an RMS difference."""

    num_classes: int
    hidden: Sequence[int] = ()
    dropout: float = 0.0
    use_rr: bool = False
    morph_dropout: float = 0.0
    use_template: bool = False
    morph_mix: float = 0.0
    morph_mix_by_class: tuple[float, ...] = ()
    rr_seconds: bool = True
    use_rhythm: bool = False
    use_irregularity: bool = False
    use_size: bool = False

    @nn.compact
    def __call__(self, h: jnp.ndarray, context: jnp.ndarray | None, train: bool) -> jnp.ndarray:
        h = h.reshape(h.shape[0], -1)
        by_class = tuple(self.morph_mix_by_class) or (self.morph_mix,)
        mix = max(by_class) if self.use_rr and not train else 0.0
        if self.use_rr:
            check_context(context)
            context = context.astype(h.dtype)
            if train and self.morph_dropout > 0:
                # one mask entry per beat drops the beat's whole shape. Unlike nn.Dropout, the
                # kept shapes are not scaled up by 1 / (1 - p): the head learns two modes, the
                # shape as it is and no shape, and evaluation meets each as trained, not a shape
                # 1 - p times the size of any it saw (that cost 16 points of kaggle accuracy).
                keep = jax.random.bernoulli(
                    self.make_rng("dropout"), 1.0 - self.morph_dropout, (h.shape[0], 1)
                )
                h = h * keep.astype(h.dtype)
            if mix > 0:  # the same head, run on the beats with their shapes and without
                h = jnp.concatenate([h, jnp.zeros_like(h)], axis=0)
                context = jnp.concatenate([context, context], axis=0)
            parts = [h, rr_features(context[:, :NUM_RR], self.rr_seconds)]
            if self.use_template:
                parts.append(template_features(context[:, NUM_RR:NUM_RR + NUM_TEMPLATE_FEATURES]))
            rhythm = NUM_RR + NUM_TEMPLATE_FEATURES
            if self.use_rhythm:
                parts.append(context[:, rhythm:SIZE_START])
            elif self.use_irregularity:  # the first rhythm column
                parts.append(context[:, rhythm:rhythm + 1])
            if self.use_size:
                parts.append(context[:, SIZE_START:MEDIAN_DIFF_START])
            h = jnp.concatenate(parts, axis=-1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(int(width))(h))
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        logits = nn.Dense(self.num_classes)(h)
        if mix > 0:
            with_shape, without = jnp.split(jax.nn.log_softmax(logits), 2, axis=0)
            m = jnp.asarray(by_class, with_shape.dtype)
            mixed = jnp.logaddexp(jnp.log1p(-m) + with_shape, jnp.log(m) + without)
            if self.morph_mix_by_class:  # the classes' shares no longer sum to one
                mixed = mixed - jax.nn.logsumexp(mixed, axis=-1, keepdims=True)
            return mixed
        return logits
