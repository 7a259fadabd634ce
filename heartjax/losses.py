"""Losses for imbalanced beat classification: cross-entropy, class-weighted CE and focal loss.

Each loss maps `(logits (B, C), labels (B,), class_weights (C,))` to per-example losses (B,);
the trainer averages them. Class weights are always passed (ones for plain CE) so that one
jitted step serves every loss and a population can vary them per member.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

LossFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: jax.Array) -> jax.Array:
    """Softmax cross-entropy scaled by the weight of each example's true class: "weighted_ce";
    "ce" is the same with ones (`loss_weights`), which only a tuning rung's pool re-weights, to
    the whole split's class shares (`heartjax.fidelity.importance`)."""
    return class_weights[labels] * optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_focal(gamma: float) -> LossFn:
    """Focal loss (Lin et al. 2017): down-weights easy examples by (1 - p_true)^gamma."""

    def focal(logits: jax.Array, labels: jax.Array, class_weights: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(logits)
        logp_true = jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
        p_true = jnp.exp(logp_true)
        return -class_weights[labels] * (1.0 - p_true) ** gamma * logp_true

    return focal


def get_loss(name: str, focal_gamma: float = 2.0) -> LossFn:
    """The loss named in `config.train.loss` (one of `heartjax.config.LOSSES`, checked there)."""
    return {"ce": cross_entropy, "weighted_ce": cross_entropy,
            "focal": make_focal(focal_gamma)}[name]


def loss_weights(labels: np.ndarray, num_classes: int, t: ml_collections.ConfigDict) -> np.ndarray:
    """The class weights the loss of a run with train config `t` takes: `class_weights` for the
    weighted losses, ones for plain cross-entropy."""
    if t.loss == "ce":
        return np.ones(num_classes, np.float32)
    return class_weights(labels, num_classes, t.class_weight_power, t.class_weight_cap,
                         tuple(t.class_weight_scale))


def record_sampling(labels: np.ndarray, records: np.ndarray, balance: float,
                    classes: Collection[int] | None = None) -> np.ndarray:
    """Probability of drawing each training beat when a class's records weigh alike.

    Within each class, record r's share of the class's draws goes from its count n_r (balance
    0: the beats as they are) to n_r^(1 - balance) (1: every record as much as any other);
    each class keeps its share of all draws, so the class weights act as before. A new patient
    is one more record: a record of a thousand V beats should not teach the V class its one
    shape. `classes` (indices; None: all) are the classes so drawn; the others' beats are
    drawn as they are.
    """
    labels, records = np.asarray(labels), np.asarray(records).astype(str)
    p = np.zeros(len(labels), np.float64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        _, inverse, counts = np.unique(records[rows], return_inverse=True, return_counts=True)
        drawn_alike = classes is None or int(c) in classes
        share = counts ** (1.0 - balance) if drawn_alike else counts.astype(np.float64)
        # every beat of record r gets share_r / n_r; the class then sums to its count
        p[rows] = (share / share.sum() / counts * len(rows))[inverse]
    return p / p.sum()


def class_weights(labels: np.ndarray, num_classes: int, power: float = 0.5,
                  cap: float = 0.0, scale: tuple[float, ...] = ()) -> np.ndarray:
    """Inverse-frequency weights (n / n_c)^power, normalised to mean 1 over the training beats.

    power 1 is full re-balancing; 0.5 (default) softens it so the rare classes gain recall
    without flooding the common class with false alarms. `cap` > 0: no class weighs more than
    `cap` times the most common one, so a class of a handful of beats (Q in DS1: 8) cannot
    dominate every batch it appears in. `scale` (one factor per class) then multiplies them: how a
    confusion that costs more than the counts say (a V beat called S) is made to cost more.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    w = (counts.sum() / np.maximum(counts, 1.0)) ** power
    if cap > 0:
        w = np.minimum(w, cap * w.min())
    if scale:
        w = w * np.asarray(scale, np.float64)
    w = w / (w * counts).sum() * counts.sum()  # the average example keeps weight 1
    return w.astype(np.float32)
