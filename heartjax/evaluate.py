"""`python -m heartjax.evaluate --checkpoint DIR --data FILE [--json] [--plot PNG]`.

Evaluates a checkpoint on a beat table with exactly the predictions `load_checkpoint` gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from heartjax import metrics
from heartjax.checkpoint import Ensemble, Predictor, load_models
from heartjax.data import RR_COLUMNS, BeatTable, load_table
from heartjax.errors import Parser, UserError, cli_entry


def evaluate(predictor: Predictor | Ensemble, data: str | Path) -> dict[str, Any]:
    """All metrics of `predictor` on the table at `data` (the checkpoint's decision rule applied)."""
    table = load_table(data)  # the dataset is inferred, so a mismatch can be reported
    out, _ = evaluate_table(predictor, table)
    return {**out, "checkpoint": str(predictor.path), "data": str(data), "rows": len(table)}


def evaluate_table(predictor: Predictor | Ensemble, table: BeatTable
                   ) -> tuple[dict[str, Any], np.ndarray]:
    """The metrics of `predictor` on a loaded table, and its class probabilities."""
    if table.dataset != predictor.dataset:
        raise UserError(f"{table.path}: holds {table.dataset} beats but the checkpoint was "
                        f"trained on {predictor.dataset}")
    rr = table.rr if predictor.needs_rr else None
    if predictor.needs_rr and rr is None:
        raise UserError(f"{table.path}: the model needs the R-R columns {', '.join(RR_COLUMNS)}; "
                        "rebuild the table with `python -m heartjax.data build mitbih`")
    proba = predictor.predict_proba(table.x, rr, table.records)
    return metrics.evaluate_predictions(table.y, proba, predictor.class_names,
                                        predictor.threshold), proba


def format_report(m: dict[str, Any], class_names: tuple[str, ...]) -> str:
    """The human-readable form: headline numbers, per-class table, confusion matrix."""
    lines = [
        f"checkpoint {m['checkpoint']}",
        f"data       {m['data']} ({m['rows']} beats)",
        f"accuracy {m['accuracy']:.4f}   macro precision {m['macro_precision']:.4f}   "
        f"macro recall {m['macro_recall']:.4f}   macro F1 {m['macro_f1']:.4f}",
    ]
    if "roc_auc" in m:
        lines.append(
            f"ROC-AUC {m['roc_auc']:.4f}   PR-AUC {m['auc_pr']:.4f}   threshold {m['threshold']:.4f}"
        )
    lines += ["", f"{'class':>10} {'precision':>10} {'recall':>8} {'f1':>8} {'support':>8}"]
    for name, s in m["per_class"].items():
        lines.append(
            f"{name:>10} {s['precision']:>10.4f} {s['recall']:>8.4f} {s['f1']:>8.4f} {s['support']:>8d}"
        )
    width = max(8, *(len(c) + 1 for c in class_names))
    lines += ["", "confusion matrix (rows true, columns predicted)"]
    lines.append(" " * width + "".join(f"{c:>{width}}" for c in class_names))
    for name, row in zip(class_names, m["confusion_matrix"]):
        lines.append(f"{name:>{width}}" + "".join(f"{v:>{width}d}" for v in row))
    return "\n".join(lines)


def draw_confusion(ax: Any, m: dict[str, Any], class_names: Sequence[str]) -> Any:
    """Draw the row-normalised confusion matrix (recall on the diagonal) with its counts on
    `ax`; returns the image (for a colour bar)."""
    cm = np.asarray(m["confusion_matrix"], float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    color="white" if norm[i, j] > 0.6 else "black", fontsize=11 if k <= 3 else 9)
    ax.set_xticks(range(k), class_names)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    return im


def plot_confusion(m: dict[str, Any], class_names: tuple[str, ...], path: str | Path) -> None:
    """The confusion matrix as a PNG (`draw_confusion`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.1 * k + 2))
    im = draw_confusion(ax, m, class_names)
    ax.set_title(f"Confusion matrix (row-normalised: recall on the diagonal)\n"
                 f"accuracy {m['accuracy']:.3f}, macro recall {m['macro_recall']:.3f}", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = Parser(
        description="Evaluate a heartjax checkpoint on a beat table (parquet or Kaggle CSV)."
    )
    parser.add_argument("--checkpoint", required=True, nargs="+", metavar="PATH",
                        help="a checkpoint step folder, a train workdir or a tune run folder (its best "
                             "is used); several: their ensemble (the mean of their probabilities)")
    parser.add_argument("--data", required=True, help="beat table, e.g. data/heart_big_test.parq")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--plot", metavar="PNG", help="also save the confusion matrix as a PNG")
    args = parser.parse_args(argv)
    predictor = load_models(args.checkpoint)
    m = evaluate(predictor, args.data)
    if args.plot:
        plot_confusion(m, predictor.class_names, args.plot)
    print(json.dumps(m, indent=2) if args.json else format_report(m, predictor.class_names))


if __name__ == "__main__":
    main()
