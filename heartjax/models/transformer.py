"""The course's "1D" Transformer: strided conv stem, sine positions, self-attention blocks.

Defaults follow the original (hidden 128, 4 heads, 3 post-norm blocks as PyTorch's
`nn.TransformerEncoderLayer`, ReLU MLP, mean pooling, linear head). The stem stride sets the
cost; it was chosen to match the original's ~0.21 G train FLOPs per beat: stride 3 gives 63 tokens
and ~0.24 G (stride 4: 47 tokens, ~0.18 G; 2: 94, ~0.38 G; 1: 187, ~0.84 G).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from heartjax.models import layers


class Block(nn.Module):
    """Self-attention + MLP, each with a residual; norm before (pre_norm) or after the add."""

    num_heads: int
    mlp_ratio: float
    dropout: float
    norm: str
    pre_norm: bool

    @nn.compact
    def __call__(self, h: jnp.ndarray, train: bool) -> jnp.ndarray:
        dim = h.shape[-1]
        drop = nn.Dropout(self.dropout, deterministic=not train)

        def attention(y):
            return nn.MultiHeadDotProductAttention(
                self.num_heads, dropout_rate=self.dropout, deterministic=not train
            )(y, y)

        def mlp(y):
            y = nn.relu(nn.Dense(max(1, round(dim * self.mlp_ratio)))(y))
            return nn.Dense(dim)(drop(y))

        for sublayer in (attention, mlp):
            if self.pre_norm:
                h = h + drop(sublayer(layers.norm(self.norm, train)(h)))
            else:
                h = layers.norm(self.norm, train)(h + drop(sublayer(h)))
        return h


class Model(layers.Classifier):
    """Beat (B, 187) -> Conv1d stem (stride) + positions -> blocks -> mean pool -> head."""

    hidden: int = 128
    num_heads: int = 4
    num_blocks: int = 3
    mlp_ratio: float = 4.0
    stem_kernel: int = 7
    stem_stride: int = 3  # 187 samples -> ceil(187 / stride) tokens
    pre_norm: bool = False  # False: post-norm as the original (PyTorch's default)
    norm: str = "layer"
    dropout: float = 0.1
    head_hidden: Sequence[int] = ()
    conv_impl: str = "auto"  # patch on the CPU, xla elsewhere (layers.conv_impl_for)

    def __post_init__(self) -> None:
        super().__post_init__()
        layers.check_common(
            self, ("hidden", "num_heads", "num_blocks", "stem_kernel", "stem_stride")
        )
        layers.require(self.mlp_ratio > 0, "mlp_ratio", self.mlp_ratio, "must be > 0")
        layers.require(
            self.hidden % self.num_heads == 0,
            "num_heads",
            self.num_heads,
            f"must divide hidden={self.hidden}",
        )

    @nn.compact
    def __call__(self, x: jnp.ndarray, context: jnp.ndarray | None = None, *, train: bool = False):
        h = layers.Conv(self.hidden, (self.stem_kernel,), (self.stem_stride,), impl=self.conv_impl)(
            x[..., None]
        )
        h = h + layers.sinusoidal_positions(h.shape[1], self.hidden)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        for _ in range(self.num_blocks):
            h = Block(self.num_heads, self.mlp_ratio, self.dropout, self.norm, self.pre_norm)(
                h, train
            )
        if self.pre_norm:
            h = layers.norm(self.norm, train)(h)
        return self.head(h.mean(axis=1), context, train)


def default_config() -> ml_collections.ConfigDict:
    """The original course model's defaults."""
    return layers.config_of(Model, "transformer")
