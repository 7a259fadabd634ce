"""The R-R intervals of a record's beats, from their positions: what the table build and
`heartjax.annotate` store beside each beat (`RR_COLUMNS`)."""

from __future__ import annotations

import numpy as np

RR_LOCAL_INTERVALS = 10


def rr_features(samples: np.ndarray, fs: float) -> np.ndarray:
    """(n, 4) R-R intervals in seconds (RR_COLUMNS): previous, next, mean of the ~10
    surrounding ones, and the mean over the whole record (the patient's own pace: a beat is
    premature for *this* patient, which is what carries S beats across patients)."""
    t = np.asarray(samples, dtype=np.float64) / fs
    n = len(t)
    if n < 2:
        raise ValueError("R-R intervals need at least two beats")
    rr = np.diff(t)
    prev = np.concatenate([[rr[0]], rr])  # edge beats use the nearest available interval
    nxt = np.concatenate([rr, [rr[-1]]])
    csum = np.concatenate([[0.0], np.cumsum(rr)])
    i = np.arange(n)
    half = RR_LOCAL_INTERVALS // 2
    lo = np.clip(i - half, 0, n - 1)
    hi = np.clip(i + half, 0, n - 1)
    local = (csum[hi] - csum[lo]) / (hi - lo)
    record = np.full(n, rr.mean())
    return np.stack([prev, nxt, local, record], axis=1).astype(np.float32)
