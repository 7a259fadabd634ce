"""Population training: K members of one architecture trained by one jitted program.

Members share the model, the data order and every batch; each has its own learning rate, weight
decay, class-weight power (its loss weights) and seed (initialisation, dropout and augmentation
noise: the key stream lives in each member's state), so a member trains as its config would
alone on the same data order. Learning rate and weight decay are injected optimiser hyperparameters
(`heartjax.train.create_optimizer`), so the members' states stack into one pytree with a leading
member axis and `jax.vmap` turns one train step into K.

`heartjax.train.train_and_evaluate(config, workdir, members=[...])` trains a population;
`heartjax.tune` uses it when `tune.population > 1`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from heartjax import losses, space
from heartjax.config import validate
from heartjax.errors import UserError

# What may differ between members: values one compiled program can take as arrays.
MEMBER_FIELDS = (
    "train.learning_rate",
    "train.weight_decay",
    "train.class_weight_power",
    "train.seed",
)


def member_configs(
    config: ml_collections.ConfigDict, members: Sequence[Mapping[str, Any]]
) -> list[ml_collections.ConfigDict]:
    """One config per member: `config` with that member's values (paths in MEMBER_FIELDS)."""
    if not members:
        raise UserError("a population needs at least one member")
    for m in members:
        bad = sorted(set(m) - set(MEMBER_FIELDS))
        if bad:
            raise UserError(
                f"population members can only differ in {', '.join(MEMBER_FIELDS)}; "
                f"not in {', '.join(bad)} (those change the compiled program: use separate trials)"
            )
    configs = [space.apply(config, dict(m)) for m in members]
    for c in configs:
        validate(c)  # a member's own value (e.g. a learning rate <= 0) fails here, in one line
    return configs


def stack(trees: Sequence[Any]) -> Any:
    """Stack same-structured pytrees along a new leading member axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, i: int) -> Any:
    """Member `i` of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def create_population_state(
    create_one: Callable[[int], Any], configs: Sequence[ml_collections.ConfigDict]
) -> Any:
    """Stacked train states: `create_one(seed)` per member, then each member's learning rate
    and weight decay written into the optimiser's injected hyperparameters."""
    state = stack([create_one(c.train.seed) for c in configs])
    lr = jnp.asarray([c.train.learning_rate for c in configs], jnp.float32)
    wd = jnp.asarray([c.train.weight_decay for c in configs], jnp.float32)
    return state.replace(
        opt_state=optax.tree_utils.tree_set(state.opt_state, learning_rate=lr, weight_decay=wd)
    )


def class_weights(
    labels: np.ndarray, num_classes: int, configs: Sequence[ml_collections.ConfigDict]
) -> jax.Array:
    """(K, C) loss weights: each member's class-weight power (ones for plain cross-entropy)."""
    return jnp.asarray(np.stack([
        losses.loss_weights(labels, num_classes, c.train) for c in configs
    ]))


def make_population_chunk(t: ml_collections.ConfigDict) -> Callable:
    """Jit a `lax.scan` over a chunk of batches for all members at once (state axis 0).

    Same signature as `heartjax.train.make_train_chunk`'s program, with (K, C) class weights;
    returns the stacked states and the (K,) mean losses.
    """
    from heartjax.train import train_step

    loss_fn = losses.get_loss(t.loss, t.focal_gamma)

    def step(state, batch, weights):
        return train_step(state, batch, weights, loss_fn=loss_fn, aug=t.augment)

    members_step = jax.vmap(step, in_axes=(0, None, 0))

    def train_chunk(states, data, perm, class_weights):
        def body(states, idx):
            batch = (data.x[idx], data.y[idx], data.rr[idx])  # one gather serves every member
            return members_step(states, batch, class_weights)

        states, loss = jax.lax.scan(body, states, perm)
        return states, loss.mean(axis=0)

    return jax.jit(train_chunk, donate_argnums=0)


def sample_members(
    params: Sequence[Any], first: Mapping[str, Any], k: int, base_seed: int, rng_seed: int
) -> list[dict[str, Any]]:
    """K members for a tuning trial: member 0 takes the searcher's values `first`, the others
    draw the member-level fields of the search space (`params`) at random; member i trains
    with seed `base_seed + i`."""
    rng = np.random.default_rng(rng_seed)
    own = [p for p in params if p.path in MEMBER_FIELDS and p.when is None]
    members = []
    for i in range(k):
        values = {p.path: first[p.path] if i == 0 else p.draw(rng) for p in own if p.path in first}
        values.setdefault("train.seed", base_seed + i)
        members.append(values)
    return members
