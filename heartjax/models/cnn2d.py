"""The course's "2D" CNN: the beat, zero padded and reshaped to an image, through 3x3 conv blocks.

Defaults follow the original: 16x12 image, stem conv to 16 channels, one block of two 3x3 convs +
2x2 max-pool, flatten, dense, dropout, logits. The dense width (512) is the one that reproduces the
original's cost: 2.7 M forward, ~8.2 M train FLOPs per beat (original: ~8.1 M).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from heartjax.data import SIGNAL_LEN
from heartjax.models import layers


class Model(layers.Classifier):
    """Beat (B, 187) -> (B, height, width, 1) -> stem -> blocks [conv, conv, pool] -> head."""

    height: int = 16
    width: int = 12  # the beat is zero padded to height * width (>= 187) samples
    channels: int = 16  # of the stem and of the first block
    num_blocks: int = 1
    width_mult: float = 1.0  # channel factor from one block to the next
    kernel_size: int = 3
    norm: str = "none"
    dropout: float = 0.5
    head_hidden: Sequence[int] = (512,)
    conv_impl: str = "auto"  # patch on the CPU, xla elsewhere (layers.conv_impl_for)

    def __post_init__(self) -> None:
        super().__post_init__()
        layers.check_common(self, ("height", "width", "channels", "kernel_size"))
        require = layers.require
        require(self.num_blocks >= 0, "num_blocks", self.num_blocks, "must be >= 0")
        require(self.width_mult > 0, "width_mult", self.width_mult, "must be > 0")
        area = self.height * self.width
        require(
            area >= SIGNAL_LEN,
            "height",
            self.height,
            f"height*width={area} must be >= {SIGNAL_LEN} samples (raise height or width)",
        )
        h, w = self.height // 2**self.num_blocks, self.width // 2**self.num_blocks
        require(
            h >= 1 and w >= 1,
            "num_blocks",
            self.num_blocks,
            f"{self.num_blocks} 2x2 poolings shrink {self.height}x{self.width} to nothing",
        )

    def block_channels(self, i: int) -> int:
        """Channels of block i (0-based): channels * width_mult**i, at least 1."""
        return max(1, round(self.channels * self.width_mult**i))

    @nn.compact
    def __call__(self, x: jnp.ndarray, context: jnp.ndarray | None = None, *, train: bool = False):
        k = (self.kernel_size, self.kernel_size)
        x = x[..., None]
        x = jnp.pad(x, ((0, 0), (0, self.height * self.width - x.shape[1]), (0, 0)))
        x = x.reshape(x.shape[0], self.height, self.width, x.shape[-1])
        x = layers.Conv(self.channels, k, impl=self.conv_impl)(x)
        x = nn.relu(layers.norm(self.norm, train)(x))
        for i in range(self.num_blocks):
            for _ in range(2):
                x = layers.Conv(self.block_channels(i), k, impl=self.conv_impl)(x)
                x = nn.relu(layers.norm(self.norm, train)(x))
            x = layers.max_pool(x, (2, 2))
        return self.head(x, context, train)


def default_config() -> ml_collections.ConfigDict:
    """The original course model's defaults."""
    return layers.config_of(Model, "cnn2d")
