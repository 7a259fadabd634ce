"""The rhythm around a beat: whether a short R-R interval is prematurity or an irregular rhythm.

A premature beat (S or V) comes early in an otherwise regular rhythm; in atrial fibrillation
every interval differs from the last and a short one means nothing, yet those beats are N. The
four R-R columns describe the beat's own intervals only, so a network trained on some patients
calls irregular N beats S in others. These features describe the neighbourhood:

- `rr_irregularity`: the median of |log(RR_i / RR_i-1)| over the 65 beats around the beat
  (about a minute): near 0 in a regular rhythm with isolated ectopic beats, large in atrial
  fibrillation (a median, so the ectopic beats themselves barely move it);
- `prev_local_median`, `next_local_median`: the log of the previous and next intervals over the
  median interval of the 33 beats around the beat (a median, unlike `rr_local`, is not pulled
  down by the premature beats it should reveal);
- `prev_record_median`: the log of the previous interval over the record's median interval.

Like the template features they need only the record being classified: they are computed
from the R-R columns when a table is loaded, never stored. The rows of a record must be in
time order (as the built tables and `heartjax.annotate` hold them).

The medians assume that a record's usual rhythm is normal. Cross-validation on DS1 favoured
these features (N/S/V recall 0.860 -> 0.873), but DS2's record 232, whose usual rhythm is its
S beats, had them call those beats normal (DS2 S recall of seed 0 trained on one host 0.80 -> 0.14), so the shipped
new-patient model does not use them (docs/new-patients.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from heartjax.data.tables import record_rows

RHYTHM_FEATURES = ("rr_irregularity", "prev_local_median", "next_local_median", "prev_record_median")
IRREGULARITY_BEATS = 65  # ~1 min at 65 bpm
LOCAL_BEATS = 33


def _centred_median(values: np.ndarray, beats: int) -> np.ndarray:
    """The median of the `beats` values centred on each, fewer at the record's ends."""
    return pd.Series(values).rolling(beats, center=True, min_periods=1).median().to_numpy()


def rhythm_features(rr: np.ndarray, records: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) float32, RHYTHM_FEATURES, from the R-R columns (seconds: previous, next, ...).

    `records` groups the beats by recording (one group when None), each in time order.
    """
    log = np.log(np.maximum(np.asarray(rr, np.float64)[:, :2], 1e-3))
    out = np.zeros((len(log), len(RHYTHM_FEATURES)), np.float32)
    for idx in record_rows(len(log), records):
        prev, nxt = log[idx, 0], log[idx, 1]
        steps = np.abs(np.diff(prev, prepend=prev[:1]))
        local = _centred_median(prev, LOCAL_BEATS)
        out[idx, 0] = _centred_median(steps, IRREGULARITY_BEATS)
        out[idx, 1] = prev - local
        out[idx, 2] = nxt - local
        out[idx, 3] = prev - np.median(prev)
    return out
