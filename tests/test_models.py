"""Model zoo: the trainer's contract, learning on synthetic beats, conv/pool equivalence, errors.

XLA:CPU compile time dominates here, so the defaults are checked by shape (`jax.eval_shape`
compiles nothing) and the numeric tests share, per architecture, one small variant whose init,
eval and train-mode functions are compiled once (`trained` fixture).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from heartjax.errors import UserError
from heartjax.models import available_models, build_model, default_model_config, layers

MODELS = ["cnn1d", "cnn2d", "resnet1d", "transformer"]
# "rbg" keys compile several times faster than threefry on CPU (init is mostly RNG)
KEY = jax.random.key(0, impl="rbg")
RNGS = {"params": KEY, "dropout": jax.random.fold_in(KEY, 1)}
SMALL = {
    "cnn1d": {"num_blocks": 2, "channels": 16, "head_hidden": (32,)},
    "cnn2d": {"channels": 8, "head_hidden": (32,)},
    "resnet1d": {"num_blocks": 2, "channels": 8},
    "transformer": {"hidden": 32, "num_heads": 2, "num_blocks": 1, "stem_stride": 4},
}


def synthetic_beats(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes that differ in shape: a narrow early R wave vs a wide late one with a dip;
    their context ("rr", "template"): 4 R-R intervals and 2 template columns."""
    rng = np.random.default_rng(seed)
    t = np.arange(187)[None, :]
    y = np.arange(n) % 2
    shift = rng.integers(-5, 6, size=(n, 1))
    narrow = np.exp(-0.5 * ((t - 40 - shift) / 3.0) ** 2)
    wide = 0.8 * np.exp(-0.5 * ((t - 90 - shift) / 10.0) ** 2) - 0.3 * np.exp(
        -0.5 * ((t - 120 - shift) / 6.0) ** 2
    )
    x = np.where(y[:, None] == 0, narrow, wide) + 0.05 * rng.normal(size=(n, 187))
    rr = np.concatenate([rng.uniform(0.6, 1.2, size=(n, 4)), rng.uniform(0.0, 1.0, size=(n, 2))],
                        axis=1)
    return x.astype(np.float32), rr.astype(np.float32), y.astype(np.int32)


def loss_of(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


class Small:
    """A small variant of one architecture (context ("rr", "template"), dropout 0.2) and its
    jitted functions."""

    def __init__(self, name: str):
        self.model = build_model({"name": name, **SMALL[name], "context": ("rr", "template"),
                                  "dropout": 0.2}, 2)
        self.x, self.rr, self.y = synthetic_beats(32)
        self.variables = jax.jit(self.model.init)(RNGS, self.x, self.rr)
        self.eval = jax.jit(lambda v, x, rr: self.model.apply(v, x, rr))
        self.tx = optax.adam(3e-3)
        self.step = jax.jit(self._step)

    def _step(self, params, stats, opt, key):
        """One Adam step in train mode; also returns the train-mode logits and batch stats."""

        def loss_fn(params):
            logits, updates = self.model.apply(
                {"params": params, "batch_stats": stats},
                self.x,
                self.rr,
                train=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
            return loss_of(logits, self.y), (logits, updates.get("batch_stats", stats))

        grads, (logits, stats) = jax.grad(loss_fn, has_aux=True)(params)
        change, opt = self.tx.update(grads, opt, params)
        return optax.apply_updates(params, change), stats, opt, logits

    def eval_loss(self, params, stats) -> float:
        variables = {"params": params, **({"batch_stats": stats} if stats else {})}
        return float(loss_of(self.eval(variables, self.x, self.rr), self.y))


@pytest.fixture(scope="module", params=MODELS)
def small(request) -> Small:
    return Small(request.param)


# --- the contract, on the defaults (shapes only) ---------------------------------------------


def test_registry_lists_all_models():
    assert available_models() == MODELS
    for name in MODELS:
        cfg = default_model_config(name)
        assert cfg.name == name and {"context", "norm", "dropout", "head_hidden"} <= set(cfg)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes", [5, 2])
def test_default_model_shapes(name, num_classes):
    x, rr, _ = synthetic_beats(3)
    cfg = default_model_config(name)
    cfg.context = ("rr", "template") if num_classes == 2 else ()  # both paths, traced once
    model = build_model(cfg, num_classes)
    variables = jax.eval_shape(model.init, RNGS, x, rr)
    logits = jax.eval_shape(model.apply, variables, x, rr)
    assert logits.shape == (3, num_classes) and logits.dtype == jnp.float32
    logits, _ = jax.eval_shape(
        lambda v: model.apply(v, x, rr, train=True, rngs=RNGS, mutable=["batch_stats"]), variables
    )
    assert logits.shape == (3, num_classes)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_norm_collections(name, norm):
    x, _, _ = synthetic_beats(2)
    cfg = default_model_config(name)
    cfg.norm = norm
    variables = jax.eval_shape(build_model(cfg, 5).init, RNGS, x)
    assert ("batch_stats" in variables) == (norm == "batch")


# --- numerics, on small variants -------------------------------------------------------------


def test_train_mode_uses_dropout_and_batch_stats(small):
    params, stats = small.variables["params"], small.variables.get("batch_stats", {})
    key = jax.random.fold_in(KEY, 2)
    _, new_stats, _, logits = small.step(params, stats, small.tx.init(params), key)
    assert logits.shape == (32, 2) and np.isfinite(np.asarray(logits)).all()
    eval1 = small.eval(small.variables, small.x, small.rr)
    np.testing.assert_array_equal(eval1, small.eval(small.variables, small.x, small.rr))
    assert not np.allclose(logits, eval1)  # dropout (and batch statistics) act in train mode only
    if stats:
        changed = [
            not np.allclose(a, b)
            for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(new_stats))
        ]
        assert any(changed)  # the running statistics were updated


def test_the_context_is_read_as_named(small):
    logits = small.eval(small.variables, small.x, small.rr)
    for part in (slice(0, 4), slice(4, 6)):  # each part moves the logits
        moved = small.rr.copy()
        moved[:, part] *= 1.5
        assert not np.allclose(logits, small.eval(small.variables, small.x, moved))
    with pytest.raises(ValueError, match="reads 6 context columns"):
        jax.eval_shape(small.model.apply, small.variables, small.x)
    with pytest.raises(ValueError, match="reads 4 context columns"):  # ("rr",): 4 columns
        jax.eval_shape(small.model.clone(context=("rr",)).init, RNGS, small.x, small.rr)
    for bad in (("rhythm",), ("rr", "rr")):
        with pytest.raises(UserError, match="model.context.*at most once"):
            build_model({"name": "cnn1d", "context": bad}, 5)
    with pytest.raises(UserError, match="model.context.*wrong type"):
        build_model({"name": "cnn1d", "context": (1,)}, 5)


def test_every_context_part_has_a_reader():
    from heartjax.data import PARTS, context_width

    assert set(layers.READERS) == set(PARTS) == {"rr", "template"}
    assert context_width(("rr", "template")) == 6 and context_width(()) == 0


def head_inputs(n: int, seed: int) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Pooled features (n, 6) and an R-R context (n, 4)."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, 6))), jnp.asarray(rng.uniform(0.5, 1, (n, 4)))


def test_morph_dropout_drops_whole_beat_shapes():
    head = layers.Head(3, (), context=("rr",), morph_dropout=0.5)
    h, rr = head_inputs(64, 0)
    variables = head.init(KEY, h, rr, False)
    dropped = head.apply(variables, h, rr, True, rngs={"dropout": KEY})
    zero = head.apply(variables, jnp.zeros_like(h), rr, False)
    # kept shapes are not rescaled: the head sees in training what it sees in evaluation
    kept = head.apply(variables, h, rr, False)
    is_zero = np.isclose(dropped, zero, atol=1e-5).all(1)
    is_kept = np.isclose(dropped, kept, atol=1e-5).all(1)
    assert (is_zero | is_kept).all() and 10 < is_zero.sum() < 54
    np.testing.assert_allclose(head.apply(variables, h, rr, False),  # evaluation keeps all
                               layers.Head(3, (), context=("rr",)).apply(variables, h, rr, False))
    with pytest.raises(UserError, match="model.morph_dropout.*needs model.context"):
        build_model({"name": "resnet1d", "morph_dropout": 0.5}, 5)


def test_morph_mix_averages_the_predictions_with_and_without_the_shape():
    h, rr = head_inputs(16, 1)
    plain = layers.Head(3, (8,), context=("rr",), morph_dropout=0.8)
    mixed = layers.Head(3, (8,), context=("rr",), morph_dropout=0.8, morph_mix=(0.25,))
    variables = plain.init(KEY, h, rr, False)  # the mix adds no parameters
    with_shape = jax.nn.softmax(plain.apply(variables, h, rr, False))
    without = jax.nn.softmax(plain.apply(variables, jnp.zeros_like(h), rr, False))
    assert not np.allclose(with_shape, without, atol=1e-3)
    np.testing.assert_allclose(jax.nn.softmax(mixed.apply(variables, h, rr, False)),
                               0.75 * with_shape + 0.25 * without, rtol=1e-5, atol=1e-6)
    # training is unchanged: the same dropout draw gives the same logits
    np.testing.assert_allclose(mixed.apply(variables, h, rr, True, rngs={"dropout": KEY}),
                               plain.apply(variables, h, rr, True, rngs={"dropout": KEY}))
    # one weight per class: each class's two probabilities weighed apart, then renormalised
    by_class = layers.Head(3, (8,), context=("rr",), morph_dropout=0.8, morph_mix=(0.25, 0.25, 0.9))
    want = np.asarray(with_shape) * [0.75, 0.75, 0.1] + np.asarray(without) * [0.25, 0.25, 0.9]
    np.testing.assert_allclose(jax.nn.softmax(by_class.apply(variables, h, rr, False)),
                               want / want.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    same = layers.Head(3, (8,), context=("rr",), morph_dropout=0.8, morph_mix=(0.25,) * 3)
    np.testing.assert_allclose(same.apply(variables, h, rr, False),  # as one weight for all
                               mixed.apply(variables, h, rr, False), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="model.morph_mix.*morph_dropout"):
        build_model({"name": "resnet1d", "context": ("rr",), "morph_mix": (0.5,)}, 5)
    with pytest.raises(UserError, match="model.morph_mix.*one weight in \\[0, 1\\], one per class"):
        build_model({"name": "resnet1d", "context": ("rr",), "morph_dropout": 0.5,
                     "morph_mix": (0.5, 0.5)}, 5)
    model = build_model({"name": "resnet1d", "context": ["rr"], "morph_dropout": 0.5,
                         "morph_mix": [0.75, 0.75, 0.4, 0.75, 1]}, 5)
    assert model.morph_mix == (0.75, 0.75, 0.4, 0.75, 1.0)  # numbers, as floats
    assert model.context == ("rr",)
    with pytest.raises(UserError, match="model.morph_mix.*in \\[0, 1\\]"):
        build_model({"name": "resnet1d", "context": ("rr",), "morph_dropout": 0.5,
                     "morph_mix": (2.0,)}, 5)


def test_conv_impls_give_the_same_model(small):
    xla = small.model.clone(conv_impl="xla")
    want = small.eval(small.variables, small.x, small.rr)
    np.testing.assert_allclose(
        jax.jit(xla.apply)(small.variables, small.x, small.rr), want, rtol=1e-4, atol=1e-5
    )


def test_auto_conv_impl_picks_patch_on_the_cpu(small):
    """The default "auto" is the patch-matmul on XLA:CPU (native conv on other backends): the
    same program, so the same outputs to the bit."""
    chosen = "patch" if jax.default_backend() == "cpu" else "xla"
    assert small.model.conv_impl == "auto" and layers.conv_impl_for("auto") == chosen
    assert layers.conv_impl_for("xla") == "xla"  # an explicit choice (an old checkpoint's) stays
    explicit = small.model.clone(conv_impl=chosen)
    np.testing.assert_array_equal(small.eval(small.variables, small.x, small.rr),
                                  jax.jit(explicit.apply)(small.variables, small.x, small.rr))
    program = str(jax.make_jaxpr(small.model.apply)(small.variables, small.x, small.rr))
    assert ("conv_general_dilated" in program) == (chosen == "xla")
    with pytest.raises(UserError, match="model.conv_impl.*auto, patch, xla"):
        build_model({"name": small.model.__module__.rsplit(".", 1)[1], "conv_impl": "fft"}, 2)


def test_adam_lowers_loss_on_synthetic_beats(small):
    """30 Adam steps on one batch of two beat shapes at least halve the (eval-mode) loss."""
    params, stats = small.variables["params"], small.variables.get("batch_stats", {})
    opt = small.tx.init(params)
    initial = small.eval_loss(params, stats)
    for i in range(30):
        params, stats, opt, _ = small.step(params, stats, opt, jax.random.fold_in(KEY, 100 + i))
    final = small.eval_loss(params, stats)
    assert final < 0.5 * initial, (initial, final)


def test_template_features():
    f = layers.template_features(jnp.array([[0.9, 0.05], [0.1, 0.0]]))
    np.testing.assert_allclose(
        f, [[0.9, np.log(0.05)], [0.1, np.log(1e-3)]], rtol=1e-5, atol=1e-7
    )


def test_rr_features():
    rr = jnp.array([[0.8, 1.0, 0.5, 2.0], [1.0, 1.0, 0.0, 0.0]])
    f = layers.rr_features(rr)
    np.testing.assert_allclose(np.exp(f[0]), [0.8, 1.0, 0.5, 2.0, 1.6, 2.0, 0.4, 0.5, 0.25],
                               rtol=1e-5)
    assert f.shape == (2, 9)
    assert np.isfinite(np.asarray(f)).all()  # a zero mean stays finite
    # ratios only: the same numbers without the intervals in seconds, so doubling every
    # interval (a slower heart) changes nothing
    ratios = layers.rr_features(rr, seconds=False)
    np.testing.assert_allclose(ratios, f[:, 4:], rtol=1e-6)
    np.testing.assert_allclose(layers.rr_features(rr[:1] * 2, seconds=False), ratios[:1], atol=1e-6)


# --- the patch-matmul convolution and the pooling variants -----------------------------------


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [(5,), (4,), (3, 3), (2, 3)])
def test_patch_conv_equals_flax_conv(padding, stride, kernel):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 187, 3) if len(kernel) == 1 else (2, 16, 11, 3)).astype(np.float32)
    strides = (stride,) * len(kernel)
    params = {
        "params": {
            "kernel": rng.normal(size=(*kernel, 3, 4)).astype(np.float32),
            "bias": rng.normal(size=(4,)).astype(np.float32),
        }
    }
    ref = nn.Conv(4, kernel, strides=strides, padding=padding)
    ours = layers.Conv(4, kernel, strides=strides, padding=padding, impl="patch")
    shapes = jax.tree.map(jnp.shape, jax.eval_shape(ours.init, KEY, x))
    assert shapes == jax.tree.map(jnp.shape, params)  # same parameter layout as nn.Conv
    want, got = jax.jit(lambda p, x: (ref.apply(p, x), ours.apply(p, x)))(params, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "window,strides,shape",
    [((2,), (2,), (2, 187, 3)), ((5,), (2,), (2, 92, 3)), ((2, 2), (2, 2), (2, 16, 11, 3))],
)
def test_max_pool_equals_flax(window, strides, shape):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)

    def ref(x):
        return nn.max_pool(x, window, strides, padding="VALID")

    def ours(x):
        return layers.max_pool(x, window, strides)

    @jax.jit
    def both(x):
        grads = [jax.grad(lambda x, f=f: (f(x) ** 2).sum())(x) for f in (ours, ref)]
        return ours(x), ref(x), *grads

    got, want, grad_got, grad_want = both(x)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(grad_got, grad_want, rtol=1e-6)


# --- architecture facts and configuration errors ---------------------------------------------


def test_resnet1d_default_is_kachuee():
    model = build_model(default_model_config("resnet1d"), 5)
    params = jax.eval_shape(model.init, RNGS, synthetic_beats(1)[0])["params"]
    kernels = [p for p in jax.tree.leaves(params) if p.ndim == 3]
    assert len(kernels) == 11  # stem + 5 blocks x 2
    assert all(k.shape[0] == 5 and k.shape[-1] == 32 for k in kernels)
    dense = [p.shape for p in jax.tree.leaves(params["Head_0"]) if p.ndim == 2]
    assert dense == [(64, 32), (32, 32), (32, 5)]  # 187 -> 92 -> 44 -> 20 -> 8 -> 2 samples x 32


def test_cnn2d_shape_is_validated():
    with pytest.raises(UserError, match="height"):
        build_model({"name": "cnn2d", "height": 15, "width": 12}, 5)  # 180 < 187
    with pytest.raises(UserError, match="num_blocks"):
        build_model({"name": "cnn2d", "num_blocks": 4}, 5)  # 16x12 halved 4 times
    model = build_model({"name": "cnn2d", "height": 8, "width": 24}, 5)  # 192 as 8x24
    x = synthetic_beats(2)[0]
    assert jax.eval_shape(model.apply, jax.eval_shape(model.init, RNGS, x), x).shape == (2, 5)


def test_registry_errors_name_the_problem():
    with pytest.raises(
        UserError, match="unknown model 'x'; choose one of cnn1d, cnn2d, resnet1d, transformer"
    ):
        build_model({"name": "x"}, 5)
    with pytest.raises(UserError, match="unknown model"):
        default_model_config("nope")
    with pytest.raises(UserError, match="model.hiden"):
        build_model({"name": "cnn2d", "hiden": 8}, 5)
    with pytest.raises(UserError, match="model.channels"):
        build_model({"name": "cnn2d", "channels": "wide"}, 5)
    with pytest.raises(UserError, match="model.norm"):
        build_model({"name": "cnn1d", "norm": "group"}, 5)
    with pytest.raises(UserError, match="model.num_heads"):
        build_model({"name": "transformer", "num_heads": 3}, 5)
    with pytest.raises(UserError, match="model.dropout"):
        build_model({"name": "resnet1d", "dropout": 1.0}, 5)


def test_registry_accepts_configdict_overrides():
    cfg = default_model_config("cnn1d")
    cfg.head_hidden = [32, 16]  # a list (from a command line) becomes a tuple
    cfg.width_mult = 1  # an int where a float is expected
    model = build_model(cfg, 2)
    assert model.head_hidden == (32, 16) and model.width_mult == 1.0


def test_sinusoidal_positions():
    pe = layers.sinusoidal_positions(63, 7)
    assert pe.shape == (63, 7)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1, 0], atol=1e-7)
