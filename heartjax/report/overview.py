"""The facts and sentences about a run that summary.md and report.pdf both show."""

from __future__ import annotations

from typing import Any

import numpy as np

from heartjax.report.formatting import fmt_seconds, fmt_value, metric_label, missing, status_counts
from heartjax.report.ladder import ladder_lines
from heartjax.report.run_report import RunReport
from heartjax.report.runs import RANGES, Param, Run

SEARCH_ALGS = {"random": "random search", "optuna": "Optuna TPE search", "bohb": "BOHB search"}


def _space_text(p: Param) -> str:
    a = p.args
    if p.kind == "choice" and a:
        return f"{p.path} in {{{', '.join(fmt_value(v) for v in a[0])}}}"
    if p.kind in RANGES and len(a) >= 2:
        step = fmt_value(a[2]) if len(a) > 2 else "?"
        name = {"uniform": "uniform", "loguniform": "log-uniform", "randint": "integer",
                "quniform": f"step {step}"}[p.kind]
        return f"{p.path} {name} [{fmt_value(a[0])}, {fmt_value(a[1])}]"
    return f"{p.path} ({p.kind})"


def _class_counts(counts: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (counts or {}).items())


def _search_text(run: Run) -> str:
    s, t = run.summary, run.config.tune
    alg = SEARCH_ALGS.get(s.get("search_alg"), f"{s.get('search_alg', '?')} search")
    sched = s.get("scheduler", "?")
    if s.get("ladder") and sched in ("asha", "hyperband"):
        sched = (f"{'ASHA' if sched == 'asha' else 'HyperBand'} over training beats seen "
                 f"(reduction factor {t.reduction_factor}, rungs below)")
    elif sched == "asha":
        sched = (f"ASHA (grace period {t.grace_period} epoch(s), reduction factor "
                 f"{t.reduction_factor})")
    elif sched == "hyperband":
        sched = f"HyperBand (reduction factor {t.reduction_factor})"
    return (f"Search: {alg}, scheduler {sched}; tuning metric {run.metric} ({run.mode}); "
            f"{s.get('trials', len(run.trials))} trials "
            f"({status_counts(s.get('status_counts') or {})}) in "
            f"{fmt_seconds(s.get('wall_s'))} wall time")


def _fixed_text(run: Run) -> str:
    c, tuned = run.config, {p.path for p in run.params}
    fixed = [("model.name", f"model {c.model.name}"), ("train.loss", f"loss {c.train.loss}"),
             ("train.optimizer", f"optimiser {c.train.optimizer}"),
             ("train.epochs", f"at most {c.train.epochs} epochs"),
             ("train.select_metric", f"checkpoints selected by {c.train.select_metric}")]
    if run.binary and c.train.target_recall:
        fixed.append(("train.target_recall",
                      f"stored threshold for recall {c.train.target_recall:g}"))
    return "Fixed settings: " + ", ".join(text for path, text in fixed if path not in tuned)


def overview_lines(r: RunReport) -> list[str]:
    """The facts about a run: dataset, fixed settings, search, best trial."""
    run, d = r.run, r.run.dataset_info
    lines = [f"Run: {run.name}"]  # its name, not the folder: a report names no machine's paths
    if d:
        lines.append(f"Dataset: {run.dataset} ({len(run.class_names)} classes); train table "
                     f"{d.get('train_table', '?')}: {d.get('train_rows', '?')} training beats "
                     f"({_class_counts(d.get('train_counts'))}) and {d.get('val_rows', '?')} "
                     f"validation beats ({_class_counts(d.get('val_counts'))}), a "
                     + ("" if d.get("val_by") == "records" else "stratified ")
                     + f"{d.get('val_fraction', '?')} split"
                     + (" of whole records" if d.get("val_by") == "records" else "")
                     + f" with seed {d.get('split_seed', '?')}")
        if d.get("folds"):
            folds = "; ".join(f"{i + 1}: {', '.join(f)}" for i, f in enumerate(d["folds"]))
            lines.append(f"Trials scored by cross-validation over {len(d['folds'])} folds of "
                         f"records (each rung trains one model per fold and scores the pooled "
                         f"out-of-fold predictions; fold {folds}); the winner's full training "
                         "validates on the split above")
    else:
        lines.append(f"Dataset: {run.dataset} (no dataset.json in the run)")
    if r.test_counts is not None:
        lines.append(f"Test table: {r.test_path}: {sum(r.test_counts.values())} beats "
                     f"({_class_counts(r.test_counts)})")
    else:
        lines.append(f"Test table: {r.test_path}: not available")
    lines.append(_fixed_text(run))
    lines.append(_search_text(run))
    lines.append("Search space: " + ("; ".join(_space_text(p) for p in run.params) or "(none)"))
    b = r.table.iloc[0]
    best = (f"Best trial: {b['trial_id']} ({b['status']}), {metric_label(run.metric)} "
            f"{b[run.metric]:.3f}")
    if not missing(b.get("test_macro_recall")):
        best += (f"; test macro recall {b['test_macro_recall']:.3f}, macro F1 "
                 f"{b['test_macro_f1']:.3f}, accuracy {b['test_accuracy']:.3f}")
    lines.append(best)
    return lines + ladder_lines(run)


def operating_text(r: RunReport) -> list[str]:
    """The precision paid for the target recall, in words (binary runs)."""
    op = r.operating
    if not op or op.get("target") is None:
        return []
    pos, neg = op["positive"], op["negative"]
    tt, tv, a = op["target"]["test"], op["target"]["val"], op["argmax"]["test"]
    out = [(f"To reach recall >= {op['target_recall']:g} of {pos} on the validation split "
            f"({op['val_rows']} beats), the best model (trial {op['trial_id']}) needs threshold "
            f"{tt['threshold']:.3g} on P({pos}) (validation: recall {tv['recall']:.3f}, precision "
            f"{tv['precision']:.3f}). On test it gives recall {tt['recall']:.3f} at precision "
            f"{tt['precision']:.3f}, with {tt['false_alarms']} of {tt['negatives']} {neg} beats "
            "flagged."), _versus_argmax(tt, a)]
    if op.get("stored") is not None and op["stored"]["test"]["threshold"] != 0.5:
        st = op["stored"]["test"]
        out.append(f"The checkpoint's stored threshold {st['threshold']:.3g} (train.target_recall "
                   f"{op['target_train']:g}) gives test recall {st['recall']:.3f} at precision "
                   f"{st['precision']:.3f}; the test columns of the table use it.")
    return out


def _versus_argmax(t: dict[str, float], a: dict[str, float]) -> str:
    """A test operating point against the arg-max rule's: the precision paid for recall."""
    dr, dp = t["recall"] - a["recall"], t["precision"] - a["precision"]
    change = (f"recall {dr:+.3f} costs {-dp:.3f} precision" if dr >= 0 >= dp
              else f"recall changes by {dr:+.3f} and precision by {dp:+.3f}")
    return (f"The arg-max rule (t = 0.5) gives test recall {a['recall']:.3f} at precision "
            f"{a['precision']:.3f} ({a['false_alarms']} false alarms): against it, {change}.")


def threshold_text(r: RunReport) -> str:
    """Why test and validation columns differ for binary checkpoints with a stored threshold."""
    thr = r.table.get("test_threshold")
    if thr is None or not r.run.binary or not (thr.fillna(0.5) != 0.5).any():
        return ""
    b = r.table.iloc[0]
    target = r.run.config.train.target_recall
    return (f"The test columns apply each checkpoint's stored threshold (chosen on validation for "
            f"train.target_recall {target:g}); the validation columns use arg-max. With arg-max on "
            f"test, the best trial has macro recall {b.get('test_argmax_macro_recall', np.nan):.3f}"
            f" and accuracy {b.get('test_argmax_accuracy', np.nan):.3f}; the column `test macro "
            "recall (arg-max)` and summary.csv's `test_argmax_*` compare like with like.")
