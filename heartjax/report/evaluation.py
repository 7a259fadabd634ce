"""Evaluating each trial's best checkpoint on the test table, and the binary operating points."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from heartjax.errors import UserError
from heartjax.report.formatting import log
from heartjax.report.runs import Run


@dataclass
class TrialEval:
    """A trial's best checkpoint on the test table."""

    metrics: dict[str, Any] | None = None  # the checkpoint's decision rule (heartjax.evaluate)
    argmax: dict[str, Any] | None = None  # arg-max rule, as the validation columns use
    threshold: float | None = None
    checkpoint: str = ""
    epoch: int | None = None
    proba: np.ndarray | None = None  # kept for the best trial only
    predictor: Any = None  # kept for the best trial only
    error: str = ""


def data_paths(run: Run, data_dir: str | Path | None) -> tuple[Path, Path]:
    """The train and test tables of a run: in --data-dir if given, else where the run read them."""
    from heartjax.data import TABLE_FILES

    train_name, test_name = TABLE_FILES[run.dataset]
    d = run.config.data
    if data_dir is not None:
        return Path(data_dir) / train_name, Path(data_dir) / test_name
    train = Path(d.train_file) if d.train_file else Path(d.dir) / train_name
    return train, Path(d.dir) / test_name


def load_test(run: Run, path: Path, notes: list[str]):
    """The test table (a BeatTable), or None with a note saying why the test columns are empty."""
    from heartjax.data import load_table

    if not path.is_file():
        notes.append(f"test table {path} not found: the test columns are empty (pass --data-dir "
                     f"with the folder that holds {path.name})")
        return None
    try:
        table = load_table(path)
    except UserError as e:
        notes.append(f"test table unusable, test columns are empty: {e}")
        return None
    if table.dataset != run.dataset:
        notes.append(f"test table {path} holds {table.dataset} beats but the run trained on "
                     f"{run.dataset}: the test columns are empty")
        return None
    return table


def class_counts(run: Run, table) -> dict[str, int]:
    """Beats per class of a BeatTable, by class name."""
    counts = np.bincount(table.y, minlength=len(run.class_names)).tolist()
    return dict(zip(run.class_names, counts, strict=False))


def evaluate_trials(run: Run, test, *, keep: str | None = None) -> dict[str, TrialEval]:
    """Each reported trial's best checkpoint on `test` (a BeatTable), with progress on stderr.

    The metrics are `heartjax.evaluate.evaluate_table`'s; the table is read once for all
    trials. `keep` names the trial whose probabilities and predictor are kept (for the plots).
    """
    from heartjax import metrics
    from heartjax.checkpoint import has_checkpoints, load_checkpoint
    from heartjax.evaluate import evaluate_table
    from heartjax.runtime import enable_compilation_cache

    enable_compilation_cache()  # a rerun of the report reuses the compiled programs
    n = len(run.ranked)
    log(f"{run.name}: evaluating {n} trial checkpoints on {test.path} ({len(test)} beats)")
    out: dict[str, TrialEval] = {}
    for i, row in enumerate(run.ranked.itertuples(index=False), 1):
        tid = row.trial_id
        t0 = time.perf_counter()
        workdir = Path(getattr(row, "workdir", "") or "")
        if not workdir.is_dir():  # the run folder was moved: its trials moved with it
            workdir = next((run.path / "ray").glob(f"trial_{tid}/checkpoint_*"), workdir)
        if not run.rungs.empty and not has_checkpoints(workdir):
            out[tid] = TrialEval()  # ladder trials keep no checkpoint; the winner's is retrained
            continue
        try:
            predictor = load_checkpoint(workdir)
        except UserError as e:
            out[tid] = TrialEval(error=str(e))
            log(f"  [{i}/{n}] {tid}: no usable checkpoint ({e})")
            continue
        try:
            m, proba = evaluate_table(predictor, test)
        except UserError as e:  # e.g. a model that needs R-R columns the table lacks
            out[tid] = TrialEval(error=str(e))
            continue
        e = TrialEval(metrics=m, threshold=predictor.threshold, checkpoint=str(predictor.path),
                      epoch=predictor.meta.get("epoch"))
        if predictor.threshold is not None:
            e.argmax = metrics.evaluate_predictions(test.y, proba, predictor.class_names)
        if tid == keep:
            e.proba, e.predictor = proba, predictor
        out[tid] = e
        log(f"  [{i}/{n}] {tid}: test macro recall {m['macro_recall']:.3f}, accuracy "
            f"{m['accuracy']:.3f} ({time.perf_counter() - t0:.1f} s)")
    return out


def precision_recall_at(y: np.ndarray, score: np.ndarray, t: float) -> dict[str, float]:
    """Recall and precision of class 1 when `score >= t` predicts it, with the false alarms."""
    from heartjax import metrics

    cm = metrics.confusion_matrix(y, score >= t, 2)
    tp, fp = int(cm[1, 1]), int(cm[0, 1])
    return {"threshold": float(t), "recall": tp / max(int(cm[1].sum()), 1),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "false_alarms": fp, "negatives": int(cm[0].sum())}


def operating_points(run: Run, best: TrialEval, test, train_path: Path,
                     target_recall: float, notes: list[str]) -> dict[str, Any] | None:
    """Binary runs: the best model's test precision/recall at the stored threshold, at arg-max,
    and at the threshold that reaches `target_recall` on the validation split training used."""
    from heartjax import metrics
    from heartjax.data import load_table, train_val_split

    predictor = best.predictor
    if not train_path.is_file():
        notes.append(f"train table {train_path} not found: no validation split, so no threshold "
                     f"for recall {target_recall:g} (pass --data-dir)")
        return None
    try:
        table = load_table(train_path, run.dataset)
    except UserError as e:
        notes.append(f"train table unusable, no threshold for recall {target_recall:g}: {e}")
        return None
    d = predictor.config.data  # the trial's own split settings: the split training used
    _, val = train_val_split(table, d.val_fraction, d.seed, d.val_by,
                             d.folds, d.fold)
    expected = run.dataset_info.get("val_rows")
    if expected is not None and expected != len(val):
        notes.append(f"the validation split of {train_path} has {len(val)} beats but training "
                     f"used {expected}: the table changed since tuning, so the threshold chosen on "
                     "it is suspect")
    val_score = predictor.predict_proba(val.x, val.rr if predictor.needs_rr else None, val.records)[:, 1]
    test_score = best.proba[:, 1]
    t_target = metrics.threshold_for_recall(val.y, val_score, target_recall)
    points = {"argmax": 0.5, "stored": best.threshold, "target": t_target}
    out: dict[str, Any] = {"trial_id": run.best_id, "positive": run.class_names[1],
                           "negative": run.class_names[0], "target_recall": target_recall,
                           "target_train": float(predictor.config.train.target_recall),
                           "val_rows": len(val)}
    for key, t in points.items():
        out[key] = None if t is None else {"test": precision_recall_at(test.y, test_score, t),
                                           "val": precision_recall_at(val.y, val_score, t)}
    precision, recall, _ = metrics.precision_recall_curve(test.y, test_score)
    vp, vr, _ = metrics.precision_recall_curve(val.y, val_score)
    out["curve"] = {"precision": precision, "recall": recall, "val_precision": vp,
                    "val_recall": vr, "auc_pr": best.metrics["auc_pr"],
                    "prevalence": float(np.mean(test.y == 1))}
    return out
