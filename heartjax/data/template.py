"""How much a beat looks like its own patient's typical beat: the morphology counterpart of the
record-mean R-R.

An S beat is premature but conducted normally, so its QRS matches the patient's usual QRS; a V
beat's does not. The shape of a "normal" QRS differs from patient to patient, which is why a
network trained on some patients confuses S and V on others; the similarity to the patient's
own median beat does not. Measured on DS1 -> DS2 with a logistic regression on the R-R features
alone: S recall 0.55, V 0.77; adding the QRS pair: S 0.92, V 0.72. A second pair for the T wave
(320-800 ms) raised V to 0.83 there, but in the network (resnet1d, morph_dropout 0.8) it cost V
(0.83 -> 0.64, one run each), so only the QRS window is used.

The model sees them as two more context columns after the four R-R intervals
(`heartjax.data.context`), computed from the beats themselves (never stored in a table), so
every table with beats and R-R columns has them. The size features (`size_features`, the
model's `use_size`) say how a QRS differs from its record's median; cross-validation on DS1
did not take them (docs/new-patients.md). `median_difference` is the whole beat minus its
record's median beat, which the model's `use_median_diff` gives its convolutions as a second
channel.
"""

from __future__ import annotations

import numpy as np

from heartjax.data.tables import SIGNAL_LEN, record_rows

# Sample ranges of the beat window (125 Hz, which starts at the R peak): 0-320 ms holds the rest
# of the QRS complex and the ST segment.
TEMPLATE_WINDOWS = {"qrs": (0, 40)}
TEMPLATE_FEATURES = tuple(f"{w}_{stat}" for w in TEMPLATE_WINDOWS for stat in ("corr", "rms"))
SIZE_FEATURES = ("qrs_size", "qrs_slope")
MEDIAN_DIFF_FEATURES = tuple(f"vs_median_{i}" for i in range(SIGNAL_LEN))
SIZE_LIMIT = 5.0  # |log ratio| cap: a flat beat or template gives a bounded value, not -inf


def _against_median(x: np.ndarray, records: np.ndarray | None, start: int, stop: int):
    """For each recording: its rows, their samples start:stop and the median of those."""
    for idx in record_rows(len(x), records):
        part = x[idx, start:stop]
        yield idx, part, np.median(part, axis=0)


def template_features(x: np.ndarray, records: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) float32 per beat, TEMPLATE_FEATURES: for each of TEMPLATE_WINDOWS, the Pearson
    correlation and the RMS difference between that part of the beat and the median of that part
    over its record's beats.

    `records` groups the beats by recording (one group when None: pass the beats of one record).
    """
    x = np.asarray(x, np.float64)
    out = np.zeros((len(x), len(TEMPLATE_FEATURES)), np.float32)
    for i, (start, stop) in enumerate(TEMPLATE_WINDOWS.values()):
        for idx, part, median in _against_median(x, records, start, stop):
            dc = part - part.mean(axis=1, keepdims=True)
            mc = median - median.mean()
            norms = np.linalg.norm(dc, axis=1) * np.linalg.norm(mc)
            # a flat beat or a flat template has no shape to compare: correlation 0, not NaN
            out[idx, 2 * i] = np.where(norms > 1e-12, dc @ mc / np.maximum(norms, 1e-12), 0.0)
            out[idx, 2 * i + 1] = np.sqrt(((part - median) ** 2).mean(axis=1))
    return out


def _spread(a: np.ndarray) -> np.ndarray:
    return a.std(axis=-1)


def _steepest(a: np.ndarray) -> np.ndarray:
    return np.abs(np.diff(a, axis=-1)).max(axis=-1)


def size_features(x: np.ndarray, records: np.ndarray | None = None) -> np.ndarray:
    """(N, 2) float32 per beat, SIZE_FEATURES, on the QRS window: the log of the beat's spread
    (standard deviation) over its record's median's, and the log of its steepest slope over the
    median's. Correlation and RMS say *that* a beat differs from its usual beat; these say
    *how*: a ventricular complex is usually larger and slower (wider, so less steep for its
    size) than the conducted one. Both are 0 for a beat shaped like its record's median;
    capped at +-SIZE_LIMIT.

    `records` groups the beats by recording (one group when None).
    """
    x = np.asarray(x, np.float64)
    out = np.zeros((len(x), len(SIZE_FEATURES)), np.float32)
    for idx, part, median in _against_median(x, records, *TEMPLATE_WINDOWS["qrs"]):
        for j, measure in enumerate((_spread, _steepest)):
            ratio = np.maximum(measure(part), 1e-12) / max(float(measure(median)), 1e-12)
            out[idx, j] = np.clip(np.log(ratio), -SIZE_LIMIT, SIZE_LIMIT)
    return out


def median_difference(x: np.ndarray, records: np.ndarray | None = None) -> np.ndarray:
    """(N, SIGNAL_LEN) float32: each beat minus the sample-wise median of its record's beats.

    The beat's shape as its own patient's usual beat does not explain it: near zero for a
    beat like the others of its record, whatever that patient's QRS looks like. `records`
    groups the beats by recording (one group when None).
    """
    x = np.asarray(x, np.float32)
    out = np.empty_like(x)
    for idx, part, median in _against_median(x, records, 0, SIGNAL_LEN):
        out[idx] = part - median
    return out
