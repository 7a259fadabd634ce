"""The search space of `config.tune.search_space`: parse, validate, sample, apply.

The space mirrors the config. Each leaf is a tuple `(kind, *args)` with an optional last
element `"path=value"` that makes the parameter conditional:

    s.train.learning_rate = ("loguniform", 1e-4, 3e-3)
    s.model.name = ("choice", ["cnn2d", "resnet1d"])
    s.model.height = ("choice", [16, 24], "model.name=cnn2d")   # only for cnn2d
    s.model.resnet1d.num_blocks = ("randint", 3, 5)  # model.num_blocks, only for resnet1d

A model's name as a key under `model` holds that model's own fields: several architectures can
each search their `num_blocks` with their own range. Such a parameter is named by its space path
(`model.resnet1d.num_blocks`: Optuna's name and the trial table's column) and sets the config
path without the model (`model.num_blocks`).

Kinds: choice [values], uniform low high, loguniform low high, randint low high (inclusive),
quniform low high step. Sampling is define-by-run (Optuna), so conditional spaces are exact.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ml_collections
import numpy as np

from heartjax.config import set_model
from heartjax.errors import UserError

KINDS = ("choice", "uniform", "loguniform", "randint", "quniform")


@dataclass(frozen=True)
class Param:
    """One searched config field."""

    path: str  # dotted config path, e.g. "train.learning_rate"
    kind: str
    args: tuple
    when: tuple[str, Any] | None = None  # (name, value) that must hold for the field to exist
    name: str = ""  # unique space path (differs from `path` for per-model fields); "" = path

    @property
    def key(self) -> str:
        """The parameter's unique name: Optuna's, and its key in a trial's values."""
        return self.name or self.path

    def sample(self, trial: Any) -> Any:
        """Draw a value through an Optuna trial (define-by-run)."""
        a = self.args
        if self.kind == "choice":
            return a[0][trial.suggest_categorical(self.key + ":index", list(range(len(a[0]))))]
        if self.kind == "uniform":
            return trial.suggest_float(self.key, a[0], a[1])
        if self.kind == "loguniform":
            return trial.suggest_float(self.key, a[0], a[1], log=True)
        if self.kind == "randint":
            return trial.suggest_int(self.key, a[0], a[1])
        return trial.suggest_float(self.key, a[0], a[1], step=a[2])

    def optuna_value(self, value: Any) -> tuple[str, Any]:
        """(Optuna's parameter name, value) for `value`: how a start point is enqueued."""
        if self.kind == "choice":
            choices = [tuple(v) if isinstance(v, list) else v for v in self.args[0]]
            v = tuple(value) if isinstance(value, list) else value
            if v not in choices:
                raise UserError(f"bad config: tune.start_points: {self.key}={value!r} is not one "
                                f"of the space's choices {list(self.args[0])}")
            return self.key + ":index", choices.index(v)
        return self.key, value

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
    searched = []
    for name, leaf in _leaves(space):
        where = f"tune.search_space.{name}"
        path = config_path(name)
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
        if path != name:  # model.<model>.<field>: the field exists only for that model
            model = name.split(".")[1]
            if when is not None and when != ("model.name", model):
                raise UserError(f"bad config: {where}: a field under model.{model} holds only "
                                f"for model.name={model}; drop its condition {cond!r}")
            when = ("model.name", model)
        _check_args(where, kind, args)
        searched.append(Param(path, kind, tuple(args), when, name if path != name else ""))
    _check_paths(searched, config)
    return sorted(_fixed_conditions(searched, config), key=lambda p: p.when is not None)


def _fixed_conditions(searched: list[Param], config: ml_collections.ConfigDict) -> list[Param]:
    """A condition on a field the space does not search is decided by the config's value."""
    keys = {p.key for p in searched}
    out = []
    for p in searched:
        if p.when is None or p.when[0] in keys:
            out.append(p)
        elif _get(config, p.when[0]) == p.when[1]:
            out.append(dataclasses.replace(p, when=None))
        else:
            raise UserError(f"bad config: tune.search_space.{p.key} needs {p.when[0]}="
                            f"{p.when[1]}, but the config has {_get(config, p.when[0])!r} and "
                            "does not search it")
    return out


def config_path(name: str) -> str:
    """The config path a space path sets: `model.<model>.<field>` -> `model.<field>`."""
    from heartjax.models import available_models

    parts = name.split(".")
    if len(parts) == 3 and parts[0] == "model" and parts[1] in available_models():
        return f"model.{parts[2]}"
    return name


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


def _check_paths(searched: Sequence[Param], config: ml_collections.ConfigDict) -> None:
    """Every searched path must exist in the config, or in the model its condition selects."""
    names = {p.key: p for p in searched}
    if len(names) < len(searched):
        raise UserError("bad config: tune.search_space names a field twice")
    model_choices = names["model.name"].args[0] if "model.name" in names else [config.model.name]
    for p in searched:
        where = f"tune.search_space.{p.key}"
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

    searched: tuple[Param, ...]

    def __call__(self, trial: Any) -> dict[str, Any]:
        chosen: dict[str, Any] = {}
        for p in self.searched:
            if p.when is None or chosen.get(p.when[0]) == p.when[1]:
                chosen[p.key] = p.sample(trial)
        # Ray passes the returned constants on to the trainable as its config
        return {"params": chosen}


def start_point(searched: Sequence[Param], config: ml_collections.ConfigDict,
                values: dict[str, Any]) -> dict[str, Any]:
    """Optuna's values for a trial that trains `config` with `values` (space paths) set, every
    other searched field at the config's own value: how the search starts from a known model."""
    for key in values:
        if key not in {p.key for p in searched}:
            raise UserError(f"bad config: tune.start_points names {key}, which the space does "
                            "not search")
    chosen: dict[str, Any] = {}
    point: dict[str, Any] = {}
    model = values.get("model.name", config.model.name)
    for p in searched:
        if p.when is not None and chosen.get(p.when[0], _get(config, p.when[0])) != p.when[1]:
            continue
        if p.key in values:
            value = values[p.key]
        elif p.path.startswith("model.") and p.path != "model.name":
            from heartjax.models import default_model_config

            base = config.model if model == config.model.name else default_model_config(model)
            value = base[p.path.split(".", 1)[1]]
        else:
            value = _get(config, p.path)
        chosen[p.key] = value
        name, v = p.optuna_value(value)
        point[name] = v
    return point


def apply(config: ml_collections.ConfigDict, values: dict[str, Any]) -> ml_collections.ConfigDict:
    """A copy of `config` with sampled values set (model.name first, resetting model defaults).

    Keys are space paths (`train.learning_rate`, `model.cnn2d.channels`)."""
    values = {config_path(k): v for k, v in values.items()}
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
            if isinstance(value, np.generic):  # BOHB's values are numpy scalars
                value = value.item()
            if isinstance(current, float) and isinstance(value, int):
                value = float(value)
            if isinstance(current, tuple) and isinstance(value, list):
                value = tuple(value)
            node[leaf] = value
    return c


def configspace(searched: Sequence[Param]):
    """The space as a ConfigSpace object, for BOHB (flat spaces only)."""
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace()
    for p in searched:
        if p.when is not None:
            raise UserError(f"tune.search_alg=bohb: conditional field {p.key} is not supported; use optuna")
        a = p.args
        if p.kind == "choice":
            hp = CS.CategoricalHyperparameter(p.key, list(a[0]))
        elif p.kind == "randint":
            hp = CS.UniformIntegerHyperparameter(p.key, a[0], a[1])
        elif p.kind == "quniform":  # the grid's values, in order (ConfigSpace 1 has no q)
            grid = np.arange(a[0], a[1] + a[2] / 2, a[2])
            hp = CS.OrdinalHyperparameter(p.key, [float(v) for v in grid])
        else:
            hp = CS.UniformFloatHyperparameter(p.key, a[0], a[1], log=p.kind == "loguniform")
        cs.add(hp)
    return cs
