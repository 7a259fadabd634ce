"""Model registry: a model is a module `heartjax/models/<name>.py` defining `Model` and
`default_config()`; `build_model(config.model, num_classes)` imports it by name.

Contract of every `Model`: `__call__(x, context=None, *, train=False) -> logits` with `x`
(B, 187) float32, `context` (B, width) the columns of the parts `model.context` names
(`heartjax.data.context_features`; not read when it names none), logits (B, num_classes);
dropout draws from the rng "dropout", batch norm keeps "batch_stats".
Adding a model is adding one file.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import ml_collections

from heartjax.errors import UserError
from heartjax.models.layers import model_fields


def available_models() -> list[str]:
    """Names of the modules of this package that define a `Model`, sorted."""
    return list(_scan())


@functools.cache
def _scan() -> tuple[str, ...]:
    names = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    return tuple(
        sorted(n for n in names if hasattr(importlib.import_module(f"{__name__}.{n}"), "Model"))
    )


def _module(name: object):
    if not isinstance(name, str) or name not in available_models():
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(available_models())}")
    return importlib.import_module(f"{__name__}.{name}")


def default_model_config(name: str) -> ml_collections.ConfigDict:
    """The defaults of model `name` as a ConfigDict, `name` included."""
    return _module(name).default_config()


def _coerce(name: str, field: dataclasses.Field, value: Any) -> Any:
    """`value` converted to the type of the field's default, or a UserError naming the field."""
    default = field.default
    if default is None or default is dataclasses.MISSING:
        return value
    bad = UserError(
        f"model.{field.name}={value!r} has the wrong type for model {name!r}: "
        f"expected {type(default).__name__} like the default {default!r}"
    )
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(default, tuple):
        if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
            raise bad
        if "str" in str(field.type):  # tuple[str, ...]: names
            if not all(isinstance(v, str) for v in value):
                raise bad
            return tuple(value)
        numbers = "float" in str(field.type)  # tuple[float, ...]: any numbers; else ints
        kinds = (int, float) if numbers else int
        if not all(isinstance(v, kinds) and not isinstance(v, bool) for v in value):
            raise bad
        # module fields must be hashable
        return tuple(float(v) for v in value) if numbers else tuple(value)
    return value


def build_model(model_cfg: ml_collections.ConfigDict | Mapping, num_classes: int) -> nn.Module:
    """The model named by `model_cfg.name`, with the config's fields; bad fields are UserErrors."""
    cfg = dict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg)
    name = cfg.pop("name", None)
    module = _module(name)
    fields = model_fields(module.Model)
    kwargs = {}
    for key, value in cfg.items():
        if key not in fields:
            raise UserError(
                f"unknown field model.{key} for model {name!r}; "
                f"valid fields: {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(name, fields[key], value)
    return module.Model(num_classes=num_classes, **kwargs)
