"""Population training: K members of one architecture trained by one jitted program.

Members share the model, the data order and every batch; each has its own learning rate, weight
decay, class-weight power (its loss weights) and seed (initialisation, dropout and augmentation
noise: the key stream lives in each member's state), so a member trains as its config would
alone on the same data order. Learning rate and weight decay are injected optimiser hyperparameters
(`heartjax.steps.create_optimizer`), so the members' states stack into one pytree with a leading
member axis and `jax.vmap` turns one train step into K.

`train_population(config, workdir, members)` trains a population with the loop pieces of
`heartjax.train.Training`; `heartjax.tune` uses it when `tune.population > 1`. Every member is
evaluated each epoch; `members.jsonl` logs all of them, `metrics.jsonl` and the checkpoints
follow the best one. On the tuning ladder `heartjax.fidelity.train_ladder(members=...)` trains
a population rung by rung with the same pieces (`member_configs`, `create_population_state`,
`make_population_chunk`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from heartjax import losses, space
from heartjax.config import validate
from heartjax.data import BeatTable
from heartjax.errors import UserError
from heartjax.steps import train_step
from heartjax.train import Metrics, ReportFn, Training

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

    Same signature as `heartjax.steps.make_train_chunk`'s program, with (K, C) class weights;
    returns the stacked states and the (K,) mean losses.
    """
    loss_fn = losses.get_loss(t.loss, t.focal_gamma)

    def step(state, batch, weights, noise):
        return train_step(state, batch, weights, noise, loss_fn=loss_fn, aug=t.augment)

    members_step = jax.vmap(step, in_axes=(0, None, 0, None))  # one noise bank serves all

    def train_chunk(states, data, perm, class_weights, noise=None):
        def body(states, idx):
            batch = (data.x[idx], data.y[idx], data.context[idx])  # one gather serves every member
            return members_step(states, batch, class_weights, noise)

        states, loss = jax.lax.scan(body, states, perm)
        return states, loss.mean(axis=0)

    return jax.jit(train_chunk, donate_argnums=0)


def sample_members(
    searched: Sequence[Any], first: Mapping[str, Any], k: int, base_seed: int, rng_seed: int
) -> list[dict[str, Any]]:
    """K members for a tuning trial: member 0 takes the searcher's values `first`, the others
    draw the member-level fields of the search space (`searched`) at random; member i trains
    with seed `base_seed + i`."""
    rng = np.random.default_rng(rng_seed)
    own = [p for p in searched if p.path in MEMBER_FIELDS and p.when is None]
    members = []
    for i in range(k):
        values = {p.path: first[p.path] if i == 0 else p.draw(rng) for p in own if p.path in first}
        values.setdefault("train.seed", base_seed + i)
        members.append(values)
    return members


def train_population(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    members: Sequence[Mapping[str, Any]],
    *,
    report: ReportFn | None = None,
    progress: bool = True,
    splits: tuple[BeatTable, BeatTable] | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> Metrics:
    """`heartjax.train.train_and_evaluate` for K members (dicts over MEMBER_FIELDS, e.g.
    `{"train.learning_rate": 3e-4}`) trained at once; the best member leads each epoch."""
    configs = member_configs(config, members)
    run = Training(config, workdir, splits=splits, overwrite=overwrite, resume=resume,
                   progress=progress)
    t = config.train
    state = create_population_state(run.program.create, configs)
    state = run.start(state, unstack(state, 0))
    train_chunk = make_population_chunk(t)
    weights = class_weights(run.train_table.y, len(run.class_names), configs)
    try:
        while not run.done:
            state, loss, timing = run.train_epoch(train_chunk, state, weights)
            if not run.validates:  # the leading member's loss stands for the epoch
                run.skip_epoch(state, loss[run.best.get("member", 0)], timing)
                continue
            rows, evals = [], []
            for i in range(len(configs)):
                one = unstack(state, i)
                val_m, proba = run.evaluate(one)
                evals.append((one, val_m, proba))
                rows.append({**run.row(loss[i], timing, val_m), "member": i})
            # a diverged member (NaN loss) never leads; the others go on
            scores = [e[1][t.select_metric] if math.isfinite(r["train_loss"]) else -math.inf
                      for r, e in zip(rows, evals)]
            lead = int(np.argmax(scores))
            one, val_m, proba = evals[lead]
            ckpt_dir = run.select(one, configs[lead], val_m, proba, scores[lead], member=lead,
                                  member_values=dict(members[lead]))
            with (run.workdir / "members.jsonl").open("a") as f:
                for r, m in zip(rows, members):
                    f.write(json.dumps({**r, **m}) + "\n")
            run.end_epoch(state, rows[lead], ckpt_dir, report)
    finally:
        run.close()
    return run.finish()
