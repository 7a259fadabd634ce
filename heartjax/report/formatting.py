"""How the report writes values: hyperparameters, metrics, times, counts, metric names, rules."""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np


def log(msg: str) -> None:
    """Progress on stderr, so stdout keeps only the results."""
    print(msg, file=sys.stderr, flush=True)


def missing(v: Any) -> bool:
    """True for None and NaN: a value the table leaves empty."""
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def fmt_value(v: Any) -> str:
    """A hyperparameter value as the table shows it."""
    if missing(v):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else f"{v:.3g}"
    return str(v)


def same(a: Any, b: Any) -> bool:
    """Whether two hyperparameter values are equal (numbers up to rounding, missing = missing)."""
    if missing(a) or missing(b):
        return missing(a) and missing(b)
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return str(a) == str(b)


def fmt_metric(v: Any) -> str:
    """A metric with three decimals; empty when missing."""
    return "" if missing(v) else f"{float(v):.3f}"


def fmt_seconds(s: Any) -> str:
    """A duration in s, min or h; empty when missing."""
    if missing(s):
        return ""
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def fmt_count(n: Any) -> str:
    """A count such as a parameter count: 950, 10.4k, 1.25M; empty when missing."""
    if missing(n):
        return ""
    n = int(n)
    return str(n) if n < 1000 else f"{n / 1e3:.1f}k" if n < 1e6 else f"{n / 1e6:.2f}M"


def status_counts(counts: Mapping[str, Any]) -> str:
    """Trial counts by status: `4 finished, 4 stopped`."""
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def metric_label(metric: str) -> str:
    """`val_macro_recall` -> `validation macro recall`."""
    name = metric.removeprefix("val_")
    name = {"auc_pr": "PR-AUC", "roc_auc": "ROC-AUC"}.get(name, name.replace("_", " "))
    return f"validation {name}" if metric.startswith("val_") else name


def decision_rule(threshold: Any, num_classes: int) -> str:
    """A checkpoint's decision rule: `threshold 0.403` (binary, stored) or `arg-max`."""
    stored = num_classes == 2 and not missing(threshold) and threshold != 0.5
    return f"threshold {threshold:.3g}" if stored else "arg-max"
