"""What a model's `context` input holds beside the beat: the parts `model.context` names, in
that order, each computed from a table's beats and R-R columns only when named.

A part is defined here once, with its columns; the head's way of reading it is in
`heartjax.models.layers.READERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from heartjax.data.tables import RR_COLUMNS
from heartjax.data.template import TEMPLATE_FEATURES, template_features


@dataclass(frozen=True)
class Part:
    """One named group of context columns: `compute(x, rr, records)` -> (N, len(columns))."""

    columns: tuple[str, ...]
    compute: Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]
    needs_rr: bool = False  # it reads the table's R-R columns


PARTS: dict[str, Part] = {
    # the previous, next, local-mean and record-mean R-R intervals in seconds
    "rr": Part(RR_COLUMNS, lambda x, rr, records: np.asarray(rr, np.float32), needs_rr=True),
    # the beat's QRS against its record's median QRS (heartjax.data.template)
    "template": Part(TEMPLATE_FEATURES, lambda x, rr, records: template_features(x, records)),
}


def context_width(parts: Sequence[str]) -> int:
    """The number of context columns of `parts`."""
    return sum(len(PARTS[p].columns) for p in parts)


def needs_rr(parts: Sequence[str]) -> bool:
    """Whether any of `parts` reads the R-R columns."""
    return any(PARTS[p].needs_rr for p in parts)


def context_features(x: np.ndarray, rr: np.ndarray | None, records: np.ndarray | None,
                     parts: Sequence[str]) -> np.ndarray:
    """(N, context_width(parts)) float32: `parts` side by side, in order. `records` groups the
    beats by recording (None: one recording), each in time order."""
    columns = [PARTS[p].compute(x, rr, records) for p in parts]
    return np.concatenate([np.zeros((len(x), 0), np.float32), *columns], axis=1)
