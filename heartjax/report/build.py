"""Building the report: evaluate each run, collect its notes and plots, write every file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from heartjax.errors import UserError
from heartjax.report.evaluation import (
    TrialEval,
    class_counts,
    data_paths,
    evaluate_trials,
    load_test,
    operating_points,
)
from heartjax.report.formatting import log, status_counts
from heartjax.report.ladder import best_at, compare_original, plot_best_so_far, plot_rungs
from heartjax.report.markdown import write_markdown
from heartjax.report.pdf import write_pdf
from heartjax.report.plots import (
    STYLE,
    plot_confusion,
    plot_key,
    plot_learning_curves,
    plot_metric_vs_param,
    plot_parallel,
    plot_per_class_recall,
    plot_pr_curve,
    pyplot,
)
from heartjax.report.run_report import RunReport
from heartjax.report.runs import REPORTED, Run, load_run, unique_names, write_run_summary
from heartjax.report.tables import loss_tables, trial_table


def _table_notes(run: Run, evals: dict[str, TrialEval], table: pd.DataFrame) -> list[str]:
    """What a reader of the table should know: missing checkpoints, odd epochs, left-out trials."""
    notes = []
    failed = {k: e.error for k, e in evals.items() if e.error}
    if failed:
        notes.append(f"{len(failed)} trial(s) without a usable checkpoint, test cells empty: "
                     + "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3]))
    if "test_checkpoint_epoch" in table and run.rungs.empty:  # a ladder's winner is retrained
        has = table["test_checkpoint_epoch"].notna()
        off = table[has & (table["test_checkpoint_epoch"] != table["best_epoch"])]
        if len(off):
            notes.append(f"{len(off)} trial(s) ({', '.join(off['trial_id'].head(3))}) keep their "
                         f"best checkpoint from another epoch than their best {run.metric}: "
                         f"train.select_metric={run.config.train.select_metric} is not the "
                         "tuning metric")
    skipped = run.trials[~run.trials["trial_id"].isin(run.ranked["trial_id"])
                         & ~run.trials["status"].isin(REPORTED)]  # not the ladder's capped rows
    if len(skipped):
        notes.append(f"not in the table: {len(skipped)} trial(s) without a finished or stopped "
                     f"result ({status_counts(skipped['status'].value_counts())})")
    summary_best = (run.summary.get("best") or {}).get("trial_id")
    if summary_best and summary_best != run.best_id:
        notes.append(f"summary.json names {summary_best} as best, but it is not a finished or "
                     f"stopped trial; the base row is {run.best_id}")
    return notes


def report_run(run: Run, plot_dir: Path, data_dir: str | Path | None,
               target_recall: float, read_test: bool = True) -> RunReport:
    """Evaluate a run's trials on test (unless `read_test` is False) and draw its plots into
    `plot_dir`."""
    notes: list[str] = []
    train_path, test_path = data_paths(run, data_dir)
    if read_test:
        test = load_test(run, test_path, notes)
    else:
        test = None
        notes.append(f"the test table ({test_path}) was not read (--no-test): the test columns "
                     "are empty")
    if test is None:
        log(f"{run.name}: {notes[-1]}")
    evals = evaluate_trials(run, test, keep=run.best_id) if test is not None else {}
    table = trial_table(run, evals)
    notes += _table_notes(run, evals, table)

    log(f"{run.name}: plots into {plot_dir}")
    plot_dir.mkdir(parents=True, exist_ok=True)
    write_run_summary(run, plot_dir / "run_summary.json")
    plots: dict[str, Path] = {}
    for p in run.params:
        if p.column in run.trials and run.trials[p.column].notna().any():
            plots[plot_key(p)] = plot_metric_vs_param(run, p, plot_dir / f"{plot_key(p)}.png")
    if run.params:
        plots["parallel_coordinates"] = plot_parallel(run, table,
                                                      plot_dir / "parallel_coordinates.png")
    curves = plot_learning_curves(run, plot_dir / "learning_curves.png")
    if curves is not None:
        plots["learning_curves"] = curves
    elif run.rungs.empty:
        notes.append("no epochs.csv with per-epoch metrics: no learning curves")
    for key, plot in (("rungs", plot_rungs), ("best_so_far", lambda r, p: plot_best_so_far([r], p))):
        drawn = plot(run, plot_dir / f"{key}.png")
        if drawn is not None:
            plots[key] = drawn
    if not run.rungs.empty:
        notes.append(f"the table shows the {len(run.ranked)} best of "
                     f"{run.summary.get('configurations', len(run.trials))} configurations; "
                     "ladder trials keep no checkpoint, so the test columns are the winner's, "
                     "retrained at full fidelity")
    best = evals.get(run.best_id)
    if best is not None and best.metrics is not None:
        plots["confusion_matrix"] = plot_confusion(run, best.metrics, run.best_id,
                                                   plot_dir / "confusion_matrix.png")
    counts = class_counts(run, test) if test is not None else None
    plots["per_class_recall"] = plot_per_class_recall(run, table.iloc[0].to_dict(), counts,
                                                      plot_dir / "per_class_recall.png")
    op = None
    if run.binary and best is not None and best.proba is not None:
        op = operating_points(run, best, test, train_path, target_recall, notes)
        if op is not None:
            plots["pr_curve"] = plot_pr_curve(run, op, plot_dir / "pr_curve.png")
    return RunReport(run=run, table=table, notes=notes, plots=plots, test_path=test_path,
                     test_counts=counts, operating=op, losses=loss_tables(run, table),
                     comparison=compare_original(run, test))


def _out_dir(out: str | Path) -> Path:
    """The --out folder, created; a file there or an uncreatable folder is the user's to fix."""
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    return out


def build_report(run_dirs: Sequence[str | Path], out: str | Path,
                 data_dir: str | Path | None = None, target_recall: float = 0.99,
                 read_test: bool = True) -> dict[str, Any]:
    """Write summary.md, summary.csv, report.pdf, run_summary.json and the PNG plots of
    `run_dirs` into `out`
    (`read_test=False`: without reading the test table, for a test looked at once, later).

    Returns {"out", "markdown", "csv", "pdf": Path, "runs": [{"name", "path", "metric",
    "table": DataFrame (summary.csv's rows), "plots": {name: Path}, "notes": [str],
    "operating_point": dict | None (binary), "loss_tables": [(title, DataFrame)]}]}.
    """
    if not run_dirs:
        raise UserError("no run folder given; pass at least one tuning run folder")
    if not 0.0 < float(target_recall) <= 1.0:
        raise UserError(f"--target-recall {target_recall} must lie in (0, 1], e.g. 0.99")
    if data_dir is not None and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir}: no such folder")
    runs = [load_run(d) for d in run_dirs]  # every input is checked before any work
    unique_names(runs)
    out = _out_dir(out)
    with pyplot().rc_context(STYLE):
        reports = [report_run(run, out if len(runs) == 1 else out / run.name, data_dir,
                              float(target_recall), read_test) for run in runs]
        csv = out / "summary.csv"
        pd.concat([r.table for r in reports], ignore_index=True).to_csv(csv, index=False)
        compared = [r.comparison.assign(run=r.run.name) for r in reports if r.comparison is not None]
        if compared:
            pd.concat(compared, ignore_index=True).to_csv(out / "original_vs_tuned.csv", index=False)
        over_time = None
        if len(runs) > 1:
            plot_best_so_far(runs, out / "best_so_far.png")
            over_time = best_at(runs)
            over_time.to_csv(out / "best_so_far.csv", index=False)
        md = write_markdown(reports, out / "summary.md", over_time)
        pdf = write_pdf(reports, out / "report.pdf")
    return {
        "out": out, "markdown": md, "csv": csv, "pdf": pdf,
        "runs": [{"name": r.run.name, "path": r.run.path, "metric": r.run.metric,
                  "table": r.table, "plots": r.plots, "notes": r.notes,
                  "operating_point": r.operating, "loss_tables": r.losses} for r in reports],
    }
