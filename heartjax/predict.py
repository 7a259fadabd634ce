"""Batched inference shared by validation during training and by loaded checkpoints."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def make_predict_fn(apply_fn: Callable) -> Callable:
    """Compile once per model: softmax of `apply_fn` mapped over fixed-size chunks of beats."""

    def run(variables: Any, x: jax.Array, context: jax.Array) -> jax.Array:
        def one(inp):
            xb, rb = inp
            return jax.nn.softmax(apply_fn(variables, xb, rb, train=False))

        return jax.lax.map(one, (x, context))

    return jax.jit(run)


def predict_proba(
    predict_fn: Callable, variables: Any, x: Any, context: Any, batch: int = 1024
) -> np.ndarray:
    """Class probabilities (N, C) from a `make_predict_fn` program; the last chunk is padded
    so shapes (and the compiled program) never change."""
    n = x.shape[0]
    batch = max(min(batch, n), 1)
    chunks = max(math.ceil(n / batch), 1)
    pad = chunks * batch - n
    xp = jnp.pad(jnp.asarray(x, jnp.float32), ((0, pad), (0, 0))).reshape(chunks, batch, -1)
    rp = jnp.pad(jnp.asarray(context, jnp.float32), ((0, pad), (0, 0))).reshape(chunks, batch, -1)
    proba = predict_fn(variables, xp, rp)
    return np.asarray(proba.reshape(chunks * batch, -1)[:n])


def variables_of(params: Any, batch_stats: Any) -> dict[str, Any]:
    """The variables dict a Flax `apply` takes (no batch_stats entry when the model has none)."""
    return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
