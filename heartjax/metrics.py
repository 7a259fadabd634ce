"""Every classification metric, derived from one confusion matrix (one source of truth)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Metrics a config may select on / tune for (higher is better for all of them).
SELECTABLE = ("macro_recall", "macro_f1", "macro_precision", "accuracy", "min_recall", "auc_pr",
              "nsv_recall")
# the beat classes ANSI/AAMI EC57 scores; `nsv_recall` is their mean recall (MIT-BIH tables only)
EC57_CLASSES = ("N", "S", "V")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts with true classes in rows and predicted classes in columns."""
    idx = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def _nsv_recall(recall: np.ndarray, present: np.ndarray,
                class_names: Sequence[str]) -> dict[str, float]:
    """{"nsv_recall": mean recall of the EC57 classes present}, or {} without those classes."""
    if not set(EC57_CLASSES) <= set(class_names):
        return {}
    rows = [list(class_names).index(c) for c in EC57_CLASSES]
    rows = [r for r in rows if present[r]] or rows
    return {"nsv_recall": float(recall[rows].mean())}


def from_confusion(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class scores and the matrix itself.

    Macro averages run over the classes present in the true labels, so a split without any F
    beats is not punished for them. A table with N, S and V classes adds `nsv_recall`, their
    mean recall (over those present): a few held-out patients hold almost no F or Q beats.
    """
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, cm.sum(axis=0))
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1.0)),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "min_recall": float(recall[present].min()),
        **_nsv_recall(recall, present, class_names),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = np.asarray(score)[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall_curve(
    y_true: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and the thresholds (score >= t is positive), thresholds descending."""
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, y = np.asarray(score)[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last index of each distinct score
    tp, fp, thresholds = tp[last], fp[last], s[last]
    precision = tp / (tp + fp)
    recall = tp / max(int(y.sum()), 1)
    return precision, recall, thresholds


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as average precision)."""
    if not np.asarray(y_true).any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y_true, score)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def threshold_for_recall(
    y_true: np.ndarray, score: np.ndarray, target: float, cap: float = 0.5
) -> float:
    """The decision threshold for recall first: the highest threshold whose recall of the
    positive class reaches `target`, but never above `cap` (0.5: arg-max), so the rule only
    ever trades precision for recall, never recall for precision."""
    _, recall, thresholds = precision_recall_curve(y_true, score)
    ok = np.flatnonzero(recall >= target)
    best = float(thresholds[ok[0]]) if len(ok) else float(np.min(score))
    return min(best, cap)


def evaluate_predictions(
    y_true: np.ndarray,
    proba: np.ndarray,
    class_names: Sequence[str],
    threshold: float | None = None,
) -> dict[str, Any]:
    """All metrics for class probabilities; binary tasks add ROC-AUC and PR-AUC.

    With `threshold` (binary only), class 1 is predicted when its probability is >= threshold;
    otherwise the arg-max class is predicted.
    """
    proba = np.asarray(proba)
    num_classes = len(class_names)
    if threshold is not None and num_classes == 2:
        y_pred = (proba[:, 1] >= threshold).astype(np.int64)
    else:
        y_pred = proba.argmax(axis=1)
    out = from_confusion(confusion_matrix(y_true, y_pred, num_classes), class_names)
    if num_classes == 2:
        out["roc_auc"] = roc_auc(y_true, proba[:, 1])
        out["auc_pr"] = average_precision(y_true, proba[:, 1])
        out["threshold"] = 0.5 if threshold is None else float(threshold)
    return out


def flat_scalars(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Scalar metrics plus `recall_<class>` etc., flattened for logs, Ray and CSV files."""
    out = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    for name, scores in metrics.get("per_class", {}).items():
        for key in ("precision", "recall", "f1"):
            out[f"{prefix}{key}_{name}"] = float(scores[key])
    return out


def nsv_scores(metrics: dict[str, Any]) -> dict[str, float]:
    """`nsv_recall` and the recall and precision of N, S and V (`N_recall`, `S_precision`, ...):
    what the new-patient experiments tabulate."""
    out = {"nsv_recall": float(metrics["nsv_recall"])}
    for c in EC57_CLASSES:
        out[f"{c}_recall"] = float(metrics["per_class"][c]["recall"])
        out[f"{c}_precision"] = float(metrics["per_class"][c]["precision"])
    return out
