"""What a model's `context` input holds beside the beat: the R-R intervals, the template
features (`heartjax.data.template`), the rhythm features (`heartjax.data.rhythm`) and the size
features (`heartjax.data.template`). A model reads the parts its fields ask for (`use_rr`,
`use_template`, `use_rhythm`, `use_size`); new parts go at the end, so older models read the
columns they were trained with."""

from __future__ import annotations

import numpy as np

from heartjax.data.rhythm import RHYTHM_FEATURES, rhythm_features
from heartjax.data.tables import RR_COLUMNS
from heartjax.data.template import (
    SIZE_FEATURES,
    TEMPLATE_FEATURES,
    size_features,
    template_features,
)

CONTEXT_COLUMNS = (*RR_COLUMNS, *TEMPLATE_FEATURES, *RHYTHM_FEATURES, *SIZE_FEATURES)
CONTEXT_WIDTH = len(CONTEXT_COLUMNS)


def context_features(x: np.ndarray, rr: np.ndarray, records: np.ndarray | None = None) -> np.ndarray:
    """(N, CONTEXT_WIDTH) float32: the 4 R-R intervals, the template, rhythm and size
    features. `records` groups the beats by recording (None: one recording), each in time order."""
    return np.concatenate([np.asarray(rr, np.float32), template_features(x, records),
                           rhythm_features(rr, records), size_features(x, records)], axis=1)
