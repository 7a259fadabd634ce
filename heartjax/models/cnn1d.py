"""A plain 1D CNN: blocks of [conv -> norm -> ReLU] x2 + max-pool 2, global pooling, dense head."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from heartjax.data import SIGNAL_LEN
from heartjax.models import layers

GLOBAL_POOLS = ("max", "mean", "flatten")


class Model(layers.Classifier):
    """Beat (B, 187) -> conv blocks (channels x width_mult per block) -> global pool -> head."""

    num_blocks: int = 3
    channels: int = 16  # of the first block
    width_mult: float = 2.0  # channel factor from one block to the next
    kernel_size: int = 5
    norm: str = "batch"
    dropout: float = 0.2
    head_hidden: Sequence[int] = (64,)
    global_pool: str = "max"  # max | mean | flatten (flatten keeps where in the beat)
    conv_impl: str = "auto"  # patch on the CPU, xla elsewhere (layers.conv_impl_for)

    def __post_init__(self) -> None:
        super().__post_init__()
        layers.check_common(self, ("num_blocks", "channels", "kernel_size"))
        layers.require(self.width_mult > 0, "width_mult", self.width_mult, "must be > 0")
        layers.require(
            self.global_pool in GLOBAL_POOLS,
            "global_pool",
            self.global_pool,
            f"choose one of {', '.join(GLOBAL_POOLS)}",
        )
        layers.require(
            SIGNAL_LEN // 2**self.num_blocks >= 1,
            "num_blocks",
            self.num_blocks,
            f"{self.num_blocks} poolings by 2 shrink {SIGNAL_LEN} samples to nothing",
        )

    @nn.compact
    def __call__(self, x: jnp.ndarray, context: jnp.ndarray | None = None, *, train: bool = False):
        h = x[..., None]
        for i in range(self.num_blocks):
            features = max(1, round(self.channels * self.width_mult**i))
            for _ in range(2):
                h = layers.Conv(features, (self.kernel_size,), impl=self.conv_impl)(h)
                h = nn.relu(layers.norm(self.norm, train)(h))
            h = layers.max_pool(h, (2,))
        if self.global_pool == "mean":
            h = h.mean(axis=1)
        elif self.global_pool == "max":
            h = h.max(axis=1)
        return self.head(h, context, train)


def default_config() -> ml_collections.ConfigDict:
    """A small plain CNN: 3 blocks of 16/32/64 channels, batch norm, global max pooling."""
    return layers.config_of(Model, "cnn1d")
