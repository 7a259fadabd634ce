"""Residual 1D CNN of Kachuee, Fazeli & Sarrafzadeh, "ECG Heartbeat Classification: A Deep
Transferable Representation" (ICHI 2018), https://arxiv.org/abs/1805.00794.

Defaults are the paper's: conv(32, k5), 5 residual blocks [conv k5 -> ReLU -> conv k5 -> + skip
-> ReLU -> max-pool 5/2], dense 32 -> ReLU -> dense 32 -> ReLU -> logits; no normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from heartjax.data import SIGNAL_LEN
from heartjax.models import layers


class Model(layers.Classifier):
    """Beat (B, 187) -> conv stem -> residual blocks with pooling -> flatten -> head."""

    num_blocks: int = 5
    channels: int = 32
    kernel_size: int = 5
    pool_size: int = 5
    pool_stride: int = 2
    norm: str = "none"
    dropout: float = 0.0
    head_hidden: Sequence[int] = (32, 32)
    conv_impl: str = "auto"  # patch on the CPU, xla elsewhere (layers.conv_impl_for)

    def __post_init__(self) -> None:
        super().__post_init__()
        layers.check_common(
            self, ("num_blocks", "channels", "kernel_size", "pool_size", "pool_stride")
        )
        length = SIGNAL_LEN
        for _ in range(self.num_blocks):
            length = layers.pooled_length(length, self.pool_size, self.pool_stride)
        layers.require(
            length >= 1,
            "num_blocks",
            self.num_blocks,
            f"{self.num_blocks} poolings (size {self.pool_size}, stride {self.pool_stride}) "
            f"shrink {SIGNAL_LEN} samples to nothing",
        )

    @nn.compact
    def __call__(self, x: jnp.ndarray, context: jnp.ndarray | None = None, *, train: bool = False):
        def conv(h):
            return layers.Conv(self.channels, (self.kernel_size,), impl=self.conv_impl)(h)

        h = conv(x[..., None])  # the paper has no activation after the first conv
        for _ in range(self.num_blocks):
            y = nn.relu(layers.norm(self.norm, train)(conv(h)))
            y = layers.norm(self.norm, train)(conv(y))
            h = nn.relu(h + y)
            h = layers.max_pool(h, (self.pool_size,), (self.pool_stride,))
        return self.head(h, context, train)


def default_config() -> ml_collections.ConfigDict:
    """The paper's defaults."""
    return layers.config_of(Model, "resnet1d")
