"""What a model's `context` input holds beside the beat: the R-R intervals, the template
features (`heartjax.data.template`), the rhythm features (`heartjax.data.rhythm`) and the size
features (`heartjax.data.template`) and the beat minus its record's median beat
(`heartjax.data.template.median_difference`). A model reads the parts its fields ask for
(`use_rr`, `use_template`, `use_rhythm`, `use_size`, `use_median_diff`); new parts go at the
end, so older models read the columns they were trained with."""

from __future__ import annotations

import numpy as np

from heartjax.data.rhythm import RHYTHM_FEATURES, rhythm_features
from heartjax.data.tables import RR_COLUMNS
from heartjax.data.template import (
    MEDIAN_DIFF_FEATURES,
    SIZE_FEATURES,
    TEMPLATE_FEATURES,
    median_difference,
    size_features,
    template_features,
)

CONTEXT_COLUMNS = (*RR_COLUMNS, *TEMPLATE_FEATURES, *RHYTHM_FEATURES, *SIZE_FEATURES,
                   *MEDIAN_DIFF_FEATURES)
CONTEXT_WIDTH = len(CONTEXT_COLUMNS)


def context_features(x: np.ndarray, rr: np.ndarray, records: np.ndarray | None = None) -> np.ndarray:
    """(N, CONTEXT_WIDTH) float32: the 4 R-R intervals, the template, rhythm and size
    features, the beat minus its record's median beat. `records` groups the beats by recording
    (None: one recording), each in time order."""
    return np.concatenate([np.asarray(rr, np.float32), template_features(x, records),
                           rhythm_features(rr, records), size_features(x, records),
                           median_difference(x, records)], axis=1)
