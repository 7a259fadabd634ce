"""Config files and `--config.a.b=value` overrides for every CLI (the config is the only knob)."""

from __future__ import annotations

import argparse
import ast
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from heartjax.config import set_model
from heartjax.errors import Parser, UserError


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Load `path/to/config.py[:variant]` by calling its `get_config(variant)`."""
    path, _, arg = spec.partition(":")
    file = Path(path)
    if not file.is_file():
        raise UserError(f"config file {path} not found; e.g. --config configs/mitbih.py")
    module_spec = importlib.util.spec_from_file_location(f"_heartjax_config_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as e:  # a config file is user input: report, don't trace
        raise UserError(f"config file {path} failed to load: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {path} defines no get_config(arg=None)")
    return module.get_config(arg or None)


def _parse_value(text: str, current: Any, key: str) -> Any:
    """Parse an override like the field it replaces (bool, int, float, str, tuple)."""
    if isinstance(current, str):
        return text.strip("'\"")
    if isinstance(current, bool) and text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise UserError(f"--config.{key}={text}: cannot parse the value") from None
    if isinstance(current, bool) and not isinstance(value, bool):
        raise UserError(f"--config.{key}={text}: expected True or False")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
        if not value.is_integer():
            raise UserError(f"--config.{key}={text}: expected an integer")
        return int(value)
    if isinstance(current, (tuple, list)) and isinstance(value, list):
        return tuple(value)
    return value


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Set `config.<key>` from text; unknown fields are an error naming the field."""
    node = config
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, ml_collections.ConfigDict) or p not in node:
            raise UserError(f"--config.{key}: config has no field {'.'.join(parts[: i + 1])}")
        node = node[p]
    leaf = parts[-1]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise UserError(f"--config.{key}: config has no field {key}")
    value = _parse_value(text, node[leaf], key)
    try:
        with node.unlocked():
            node[leaf] = value
    except (TypeError, ValueError) as e:
        raise UserError(f"--config.{key}={text}: {e}") from None


def parse_config_flags(
    argv: Sequence[str] | None,
    description: str,
    extra: Sequence[tuple[str, dict]] = (),
    default_config: str | None = None,
) -> tuple[ml_collections.ConfigDict, argparse.Namespace]:
    """Parse `--config FILE[:variant]` (required unless `default_config`), `--config.x.y=v`
    overrides and the CLI's own flags."""
    parser = Parser(
        description=description,
        epilog="Override any config field: --config.train.learning_rate=3e-4 "
        "--config.model.name=cnn2d (see the config file for all fields).",
    )
    parser.add_argument(
        "--config", required=default_config is None, default=default_config,
        help="config file and optional variant, e.g. configs/mitbih.py:cnn2d"
        + (f" (default {default_config})" if default_config else ""),
    )
    for name, kwargs in extra:
        parser.add_argument(name, **kwargs)
    args, rest = parser.parse_known_args(argv)
    overrides = []
    for item in rest:
        if not item.startswith("--config."):
            parser.error(f"unrecognized argument {item}")
        key, eq, text = item[len("--config.") :].partition("=")
        if not eq:
            parser.error(f"{item}: write overrides as --config.field=value")
        overrides.append((key, text))
    config = load_config(args.config)
    # model.name first: switching architecture resets the model's fields to its defaults
    for key, text in sorted(overrides, key=lambda kv: kv[0] != "model.name"):
        if key == "model.name":
            set_model(config, text)
        else:
            apply_override(config, key, text)
    return config, args


