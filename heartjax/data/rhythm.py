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

`rr_features` makes the four R-R columns themselves from the beat positions (the table build and
`heartjax.annotate` use it).

`irregular_copies` adds training beats in made-up atrial fibrillation: DS1 holds two records with
it (201, 203), too few for a network to learn that an irregular rhythm's short intervals are
not prematurity. With the irregularity alone (`model.use_irregularity`) cross-validation on
DS1 favoured it (N/S/V recall 0.883 -> 0.891, S precision 0.31 -> 0.43), and DS2 refused it
(record 232's S beats called N again), so the shipped new-patient model does not use it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from heartjax.data.tables import RR_COLUMNS, BeatTable, concat_tables, record_rows
from heartjax.errors import UserError

RHYTHM_FEATURES = ("rr_irregularity", "prev_local_median", "next_local_median", "prev_record_median")
IRREGULARITY_BEATS = 65  # ~1 min at 65 bpm
LOCAL_BEATS = 33
RR_LOCAL_INTERVALS = 10
# Made-up atrial fibrillation: independent intervals whose log has this spread (the median
# |log(RR_i / RR_i-1)| is about 0.95 x it: DS1's 201 and 203 hold 0.21 and 0.30 in their N beats),
# at this share of the record's mean interval (fibrillation is usually faster).
IRREGULAR_SPREAD = (0.15, 0.35)
IRREGULAR_PACE = (0.7, 1.0)


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


def irregular_copies(table: BeatTable, share: float, seed: int, normal: int = 0) -> BeatTable:
    """`table` plus, for each record, `share` of its `normal`-class beats again (drawn at random)
    in a stretch of made-up atrial fibrillation appended after the record's own beats: the
    same shapes, labelled normal, at independent log-normal intervals (spread and pace drawn per
    record from IRREGULAR_SPREAD and IRREGULAR_PACE). The copies keep their record's name, so the
    record's weight in `train.record_balance` and its median beat barely change, and the rhythm
    features see the stretch as the record going on in fibrillation."""
    if share <= 0:
        return table
    rr = table.rr
    if rr is None or "record" not in table.meta.columns:
        raise UserError(f"{table.path or 'the training table'}: data.irregular_copies needs the "
                        f"{', '.join(RR_COLUMNS)} and record columns; rebuild the tables with "
                        "`python -m heartjax.data build mitbih` or set --config.data.irregular_copies=0")
    rng = np.random.default_rng(seed)
    records = table.meta["record"].astype(str).to_numpy()
    parts = [table]
    for idx in record_rows(len(table), records):
        normals = idx[table.y[idx] == normal]
        k = int(round(share * len(normals)))
        if k < 2:
            continue
        rows = np.sort(rng.choice(normals, size=k, replace=False))
        spread = rng.uniform(*IRREGULAR_SPREAD)
        mean = float(rr[idx, 3].mean()) * rng.uniform(*IRREGULAR_PACE)
        intervals = mean * np.exp(spread * rng.standard_normal(k) - spread**2 / 2)
        copy = table.subset(rows)
        meta = copy.meta.copy()
        meta[list(RR_COLUMNS)] = rr_features(np.concatenate([[0.0], np.cumsum(intervals[1:])]), 1.0)
        parts.append(BeatTable(copy.x, copy.y, copy.dataset, copy.path, meta))
    out = concat_tables(parts, table.dataset)
    # each record's rows together, its own beats first, so the rhythm features run in time order
    order = np.concatenate(record_rows(len(out), out.meta["record"].astype(str).to_numpy()))
    return out.subset(order)
