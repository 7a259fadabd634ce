"""Model zoo: the trainer's contract, learning on synthetic beats, conv/pool equivalence, errors."""

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
RNGS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def synthetic_beats(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two classes that differ in shape: a narrow early R wave vs a wide late one with a dip."""
    rng = np.random.default_rng(seed)
    t = np.arange(187)[None, :]
    y = np.arange(n) % 2
    shift = rng.integers(-5, 6, size=(n, 1))
    narrow = np.exp(-0.5 * ((t - 40 - shift) / 3.0) ** 2)
    wide = 0.8 * np.exp(-0.5 * ((t - 90 - shift) / 10.0) ** 2) - 0.3 * np.exp(
        -0.5 * ((t - 120 - shift) / 6.0) ** 2
    )
    x = np.where(y[:, None] == 0, narrow, wide) + 0.05 * rng.normal(size=(n, 187))
    rr = rng.uniform(0.6, 1.2, size=(n, 3))
    return x.astype(np.float32), rr.astype(np.float32), y.astype(np.int32)


def init_and_apply(model: nn.Module, x, rr=None, train: bool = False):
    """Init the model, then apply it once (train: dropout rng, mutable batch_stats)."""
    variables = model.init(RNGS, x, rr)
    if not train:
        return model.apply(variables, x, rr), variables
    logits, updates = model.apply(
        variables, x, rr, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
        mutable=["batch_stats"],
    )
    return logits, {**variables, **updates}


def test_registry_lists_all_models():
    assert available_models() == MODELS
    for name in MODELS:
        cfg = default_model_config(name)
        assert cfg.name == name and "use_rr" in cfg and "norm" in cfg and "dropout" in cfg


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_classes", [5, 2])
def test_forward_shape(name, num_classes):
    x, _, _ = synthetic_beats(3)
    model = build_model(default_model_config(name), num_classes)
    logits, _ = init_and_apply(model, x)
    assert logits.shape == (3, num_classes) and logits.dtype == jnp.float32
    assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
def test_train_mode_with_dropout_and_norms(name, norm):
    x, _, _ = synthetic_beats(4)
    cfg = default_model_config(name)
    cfg.norm, cfg.dropout = norm, 0.3
    model = build_model(cfg, 5)
    logits, variables = init_and_apply(model, x, train=True)
    assert logits.shape == (4, 5)
    assert ("batch_stats" in variables) == (norm == "batch")
    # eval is deterministic; train-mode dropout changes the output
    eval1, eval2 = model.apply(variables, x), model.apply(variables, x)
    np.testing.assert_array_equal(eval1, eval2)
    assert not np.allclose(logits, eval1)


@pytest.mark.parametrize("name", MODELS)
def test_use_rr(name):
    x, rr, _ = synthetic_beats(4)
    cfg = default_model_config(name)
    cfg.use_rr = True
    model = build_model(cfg, 5)
    logits, variables = init_and_apply(model, x, rr, train=True)
    assert logits.shape == (4, 5)
    other = model.apply(variables, x, rr * 1.5)
    assert not np.allclose(model.apply(variables, x, rr), other)  # rr is actually used
    with pytest.raises(ValueError, match="rr"):
        model.apply(variables, x)


def test_rr_features():
    rr = jnp.array([[0.8, 1.0, 0.5], [1.0, 1.0, 0.0]])
    f = layers.rr_features(rr)
    np.testing.assert_allclose(f[0], [0.8, 1.0, 0.5, 1.6, 2.0], rtol=1e-6)
    assert np.isfinite(np.asarray(f)).all()


@pytest.mark.parametrize("name", MODELS)
def test_adam_lowers_loss_on_synthetic_beats(name):
    x, rr, y = synthetic_beats(32)
    model = build_model(default_model_config(name), 2)
    variables = model.init(RNGS, x)
    params, stats = variables["params"], variables.get("batch_stats", {})
    tx = optax.adam(1e-3)
    opt = tx.init(params)

    def loss_fn(params, stats, key):
        logits, updates = model.apply(
            {"params": params, "batch_stats": stats}, x, train=True,
            rngs={"dropout": key}, mutable=["batch_stats"],
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    @jax.jit
    def step(params, stats, opt, key):
        (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats, key)
        change, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, change), updates.get("batch_stats", stats), opt, loss

    def eval_loss(params, stats):
        logits = model.apply({"params": params, "batch_stats": stats}, x)
        return float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())

    initial = eval_loss(params, stats)
    for i in range(30):
        params, stats, opt, _ = step(params, stats, opt, jax.random.PRNGKey(i))
    final = eval_loss(params, stats)
    assert final < 0.5 * initial, (initial, final)


@pytest.mark.parametrize("impl", ["patch", "xla"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [(5,), (4,), (3, 3), (2, 3)])
def test_conv_equals_flax_conv(impl, padding, stride, kernel):
    shape = (2, 187, 3) if len(kernel) == 1 else (2, 16, 11, 3)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    strides = (stride,) * len(kernel)
    ref = nn.Conv(4, kernel, strides=strides, padding=padding)
    params = ref.init(jax.random.PRNGKey(1), x)
    params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias too
    ours = layers.Conv(4, kernel, strides=strides, padding=padding, impl=impl)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
        jnp.shape, params
    )
    want = ref.apply(params, x)
    got = ours.apply(params, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reshape", "slices"])
@pytest.mark.parametrize(
    "window,strides,shape",
    [((2,), (2,), (2, 187, 3)), ((5,), (2,), (2, 92, 3)), ((2, 2), (2, 2), (2, 16, 11, 3))],
)
def test_max_pool_equals_flax(impl, window, strides, shape):
    if impl == "reshape" and window != strides:
        pytest.skip("reshape pooling needs stride == window")
    x = jax.random.normal(jax.random.PRNGKey(0), shape)

    def ref(x):
        return nn.max_pool(x, window, strides, padding="VALID")

    def ours(x):
        return layers.max_pool(x, window, strides, impl=impl)

    np.testing.assert_array_equal(ours(x), ref(x))
    grad_ref = jax.grad(lambda x: (ref(x) ** 2).sum())(x)
    grad_ours = jax.grad(lambda x: (ours(x) ** 2).sum())(x)
    np.testing.assert_allclose(grad_ours, grad_ref, rtol=1e-6)


def test_conv_impls_give_the_same_model():
    x, _, _ = synthetic_beats(2)
    patch = build_model({"name": "resnet1d", "conv_impl": "patch"}, 5)
    xla = build_model({"name": "resnet1d", "conv_impl": "xla"}, 5)
    variables = patch.init(RNGS, x)
    np.testing.assert_allclose(patch.apply(variables, x), xla.apply(variables, x), atol=1e-5)


def test_resnet1d_default_is_kachuee():
    model = build_model(default_model_config("resnet1d"), 5)
    params = model.init(RNGS, synthetic_beats(1)[0])["params"]
    kernels = [p for p in jax.tree.leaves(params) if p.ndim == 3]
    assert len(kernels) == 11  # stem + 5 blocks x 2
    assert all(k.shape[0] == 5 and k.shape[-1] == 32 for k in kernels)
    dense = [p.shape for p in jax.tree.leaves(params["Head_0"]) if p.ndim == 2]
    assert dense == [(64, 32), (32, 32), (32, 5)]  # 187 -> 92 -> 44 -> 20 -> 8 -> 2 samples x 32


def test_cnn2d_shape_is_validated():
    with pytest.raises(UserError, match="height"):
        build_model({"name": "cnn2d", "height": 15, "width": 12}, 5)
    with pytest.raises(UserError, match="num_blocks"):
        build_model({"name": "cnn2d", "num_blocks": 4}, 5)
    model = build_model({"name": "cnn2d", "height": 8, "width": 24}, 5)  # 192 as 8x24
    assert init_and_apply(model, synthetic_beats(2)[0])[0].shape == (2, 5)


def test_registry_errors_name_the_problem():
    with pytest.raises(UserError, match="unknown model 'x'; choose one of cnn1d, cnn2d, resnet1d"):
        build_model({"name": "x"}, 5)
    with pytest.raises(UserError, match="unknown model"):
        default_model_config("nope")
    with pytest.raises(UserError, match="model.hiden"):
        build_model({"name": "cnn2d", "hiden": 8}, 5)
    with pytest.raises(UserError, match="model.hidden"):
        build_model({"name": "cnn2d", "hidden": "wide"}, 5)
    with pytest.raises(UserError, match="model.norm"):
        build_model({"name": "cnn1d", "norm": "group"}, 5)
    with pytest.raises(UserError, match="model.num_heads"):
        build_model({"name": "transformer", "num_heads": 3}, 5)
    with pytest.raises(UserError, match="model.dropout"):
        build_model({"name": "resnet1d", "dropout": 1.0}, 5)


def test_registry_accepts_configdict_overrides():
    cfg = default_model_config("cnn1d")
    cfg.head_hidden = [32, 16]  # a list from a command line becomes a tuple
    cfg.width_mult = 1  # an int where a float is expected
    model = build_model(cfg, 2)
    assert model.head_hidden == (32, 16) and model.width_mult == 1.0


def test_sinusoidal_positions():
    pe = layers.sinusoidal_positions(63, 7)
    assert pe.shape == (63, 7)
    np.testing.assert_allclose(pe[0], [0, 1, 0, 1, 0, 1, 0], atol=1e-7)
