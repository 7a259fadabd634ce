"""User-facing errors: one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class UserError(Exception):
    """A problem the user can fix (a file, a flag, a config value); the message says how."""


def cli_entry(main: F) -> F:
    """Wrap a CLI `main`: a `UserError` becomes `error: <message>` on stderr and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            msg = " ".join(str(e).split())  # always exactly one line
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag as a one-line UserError instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message} (see --help)")
