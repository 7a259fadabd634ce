"""The search space of `config.tune.search_space`: parse, validate, sample, apply.

The space mirrors the config. Each leaf is a tuple `(kind, *args)` with an optional last
element `"path=value"` that makes the parameter conditional:

    s.train.learning_rate = ("loguniform", 1e-4, 3e-3)
    s.model.name = ("choice", ["cnn2d", "resnet1d"])
    s.model.hidden = ("choice", [16, 32, 64], "model.name=cnn2d")   # only for cnn2d

Kinds: choice [values], uniform low high, loguniform low high, randint low high (inclusive),
quniform low high step. Sampling is define-by-run (Optuna), so conditional spaces are exact.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ml_collections
import numpy as np

from heartjax.errors import UserError

KINDS = ("choice", "uniform", "loguniform", "randint", "quniform")


@dataclass(frozen=True)
class Param:
    """One searched config field."""

    path: str  # dotted config path, e.g. "train.learning_rate"
    kind: str
    args: tuple
    when: tuple[str, Any] | None = None  # (path, value) that must hold for the field to exist

    def sample(self, trial: Any) -> Any:
        """Draw a value through an Optuna trial (define-by-run)."""
        a = self.args
        if self.kind == "choice":
            return a[0][trial.suggest_categorical(self.path + ":index", list(range(len(a[0]))))]
        if self.kind == "uniform":
            return trial.suggest_float(self.path, a[0], a[1])
        if self.kind == "loguniform":
            return trial.suggest_float(self.path, a[0], a[1], log=True)
        if self.kind == "randint":
            return trial.suggest_int(self.path, a[0], a[1])
        return trial.suggest_float(self.path, a[0], a[1], step=a[2])

    def draw(self, rng: np.random.Generator) -> Any:
        """Draw a value at random (population members inside a trial)."""
        a = self.args
        if self.kind == "choice":
            return a[0][int(rng.integers(len(a[0])))]
        if self.kind == "uniform":
            return float(rng.uniform(a[0], a[1]))
        if self.kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(a[0]), np.log(a[1]))))
        if self.kind == "randint":
            return int(rng.integers(a[0], a[1] + 1))
        return float(a[0] + a[2] * rng.integers(round((a[1] - a[0]) / a[2]) + 1))


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, (ml_collections.ConfigDict, dict)):
        out = []
        for k in node.keys():
            out += _leaves(node[k], f"{prefix}{k}.")
        return out
    return [(prefix[:-1], node)]


def _parse_value(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse(space: Any, config: ml_collections.ConfigDict) -> list[Param]:
    """Validate the space against `config` and return its parameters (conditions last)."""
    params = []
    for path, leaf in _leaves(space):
        where = f"tune.search_space.{path}"
        if not isinstance(leaf, (tuple, list)) or not leaf or leaf[0] not in KINDS:
            raise UserError(f"bad config: {where} must be a tuple (kind, ...) with kind in {KINDS}")
        kind, *args = leaf
        when = None
        if args and isinstance(args[-1], str):  # trailing "path=value": a conditional field
            cond = args.pop()
            if "=" not in cond:
                raise UserError(f"bad config: {where}: condition must be 'path=value', got {cond!r}")
            cpath, _, cval = cond.partition("=")
            when = (cpath.strip(), _parse_value(cval.strip()))
        _check_args(where, kind, args)
        params.append(Param(path, kind, tuple(args), when))
    _check_paths(params, config)
    return sorted(params, key=lambda p: p.when is not None)


def _check_args(where: str, kind: str, args: list) -> None:
    if kind == "choice":
        if len(args) != 1 or not isinstance(args[0], (list, tuple)) or not args[0]:
            raise UserError(f"bad config: {where}: choice needs one non-empty list of values")
        return
    n = 3 if kind == "quniform" else 2
    if len(args) != n or not all(isinstance(a, (int, float)) for a in args):
        raise UserError(f"bad config: {where}: {kind} needs {n} numbers")
    low, high = args[0], args[1]
    if low > high:
        raise UserError(f"bad config: {where}: low {low} > high {high}")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"bad config: {where}: loguniform needs low > 0")


def _model_fields(name: str) -> set[str]:
    from heartjax.models import default_model_config

    return set(default_model_config(name).keys())


def _check_paths(params: Sequence[Param], config: ml_collections.ConfigDict) -> None:
    """Every searched path must exist in the config, or in the model its condition selects."""
    names = {p.path: p for p in params}
    model_choices = names["model.name"].args[0] if "model.name" in names else [config.model.name]
    for p in params:
        where = f"tune.search_space.{p.path}"
        if p.when is not None and p.when[0] not in names and _get(config, p.when[0]) is None:
            raise UserError(f"bad config: {where}: condition on unknown field {p.when[0]}")
        if p.path == "model.name":
            for m in p.args[0]:
                _model_fields(m)  # raises UserError for an unknown model
            continue
        if p.path.startswith("model."):
            field = p.path.split(".", 1)[1]
            models = [p.when[1]] if p.when and p.when[0] == "model.name" else model_choices
            missing = [m for m in models if field not in _model_fields(m)]
            if missing:
                raise UserError(
                    f"bad config: {where}: model {missing[0]} has no field {field!r}"
                    + ("" if p.when else "; add the condition 'model.name=<model>'")
                )
        elif _get(config, p.path) is None:
            raise UserError(f"bad config: {where}: config has no field {p.path}")


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return None
        node = node[part]
    return node


@dataclass(frozen=True)
class DefineByRun:
    """Optuna define-by-run sampling: only parameters whose condition holds are drawn.

    A class rather than a closure so Ray can pickle the searcher for resuming.
    """

    params: tuple[Param, ...]

    def __call__(self, trial: Any) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for p in self.params:
            if p.when is None or chosen.get(p.when[0]) == p.when[1]:
                chosen[p.path] = p.sample(trial)
        # Ray passes the returned constants on to the trainable as its config
        return {"params": chosen}


def apply(config: ml_collections.ConfigDict, values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with sampled values set (model.name first, resetting model defaults)."""
    from heartjax.cli import set_model

    c = copy.deepcopy(config)
    if "model.name" in values and values["model.name"] != c.model.name:
        set_model(c, values["model.name"])
    with c.unlocked():
        for path, value in values.items():
            if path == "model.name":
                continue
            *parents, leaf = path.split(".")
            node = c
            for part in parents:
                node = node[part]
            current = node[leaf]
            if isinstance(current, float) and isinstance(value, int):
                value = float(value)
            if isinstance(current, tuple) and isinstance(value, list):
                value = tuple(value)
            node[leaf] = value
    return c


def configspace(params: Sequence[Param]):
    """The space as a ConfigSpace object, for BOHB (flat spaces only)."""
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace()
    for p in params:
        if p.when is not None:
            raise UserError(f"tune.search_alg=bohb: conditional field {p.path} is not supported; use optuna")
        a = p.args
        if p.kind == "choice":
            hp = CS.CategoricalHyperparameter(p.path, list(a[0]))
        elif p.kind == "randint":
            hp = CS.UniformIntegerHyperparameter(p.path, a[0], a[1])
        else:
            hp = CS.UniformFloatHyperparameter(
                p.path, a[0], a[1], log=p.kind == "loguniform", q=a[2] if p.kind == "quniform" else None
            )
        cs.add_hyperparameter(hp)
    return cs
