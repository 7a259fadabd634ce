"""Population training: K members in one program, each training exactly as it would alone."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import heartjax
from heartjax import population, space
from heartjax import steps as T
from heartjax.cli import load_config
from heartjax.data import load_table
from heartjax.errors import UserError
from heartjax.models import build_model

MEMBERS = [
    {"train.learning_rate": 1e-4, "train.class_weight_power": 0.0},
    {"train.learning_rate": 3e-3, "train.weight_decay": 1e-3, "train.class_weight_power": 1.0},
    {"train.learning_rate": 1e-3, "train.seed": 7},
]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_each_member_trains_as_it_would_alone(ptb_tables, optimizer):
    config = load_config("configs/ptb.py:smoke")
    config.train.optimizer = optimizer
    configs = population.member_configs(config, MEMBERS)
    table = load_table(ptb_tables / "heart_train.parq")
    data = T.to_arrays(table.subset(np.arange(640)), config.model.context)
    perm = jnp.asarray(np.random.default_rng(0).permutation(640).reshape(10, 64))
    model = build_model(config.model, 2)
    tx = T.create_optimizer(config.train, 100)
    y = np.asarray(data.y)

    states = population.create_population_state(lambda s: T.create_train_state(model, tx, s), configs)
    states, pop_loss = population.make_population_chunk(config.train)(
        states, data, perm, population.class_weights(y, 2, configs))
    for i, c in enumerate(configs):
        alone = T.create_train_state(model, T.create_optimizer(c.train, 100), c.train.seed)
        alone, loss = T.make_train_chunk(c.train)(
            alone, data, perm, population.class_weights(y, 2, [c])[0])
        np.testing.assert_allclose(pop_loss[i], loss, rtol=1e-5)
        if optimizer == "sgd":  # Adam's normalised steps amplify float noise in tiny gradients
            member = population.unstack(states, i)
            for a, b in zip(jax.tree_util.tree_leaves(member.params), jax.tree_util.tree_leaves(alone.params)):
                np.testing.assert_allclose(a, b, atol=1e-5)
    assert len({float(x) for x in pop_loss}) == len(MEMBERS)  # the members did differ


def test_population_run_logs_every_member_and_keeps_the_best(ptb_tables, tmp_path):
    config = load_config("configs/ptb.py:smoke")
    config.data.dir = str(ptb_tables)
    config.train.epochs = 2
    best = population.train_population(config, tmp_path, MEMBERS, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "members.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["member"]) for r in rows] == [(e, m) for e in (1, 2) for m in range(3)]
    assert rows[2]["train.seed"] == 7 and rows[1]["train.learning_rate"] == 3e-3
    lead = max(rows, key=lambda r: r["val_macro_recall"])
    assert best["val"]["macro_recall"] == lead["val_macro_recall"]
    assert best["member_values"] == MEMBERS[best["member"]]
    model = heartjax.load_checkpoint(tmp_path)  # self-describing: the best member's config
    expected = {**{"train.learning_rate": 1e-3, "train.class_weight_power": 0.5},
                **MEMBERS[best["member"]]}
    assert model.config.train.learning_rate == expected["train.learning_rate"]
    assert model.config.train.class_weight_power == expected["train.class_weight_power"]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_members_may_differ_only_in_member_fields():
    config = load_config("configs/ptb.py:smoke")
    with pytest.raises(UserError, match="model.channels"):
        population.member_configs(config, [{"model.channels": 8}, {}])


def test_sampled_members_keep_the_searchers_values_first():
    config = load_config("configs/ptb.py:smoke")
    params = space.parse(config.tune.search_space, config)
    first = {"train.learning_rate": 2e-3, "train.weight_decay": 1e-4, "train.batch_size": 32,
             "model.dropout": 0.1}
    members = population.sample_members(params, first, 4, base_seed=5, rng_seed=1)
    assert members[0] == {"train.learning_rate": 2e-3, "train.weight_decay": 1e-4, "train.seed": 5}
    assert [m["train.seed"] for m in members] == [5, 6, 7, 8]
    lrs = [m["train.learning_rate"] for m in members[1:]]
    assert all(3e-4 <= v <= 3e-3 for v in lrs) and len(set(lrs)) == 3
    assert members == population.sample_members(params, first, 4, base_seed=5, rng_seed=1)
