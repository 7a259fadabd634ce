"""summary.md: per run its facts, a Table-3-style table per architecture, notes, loss tables and
plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from heartjax.report.formatting import fmt_value
from heartjax.report.ladder import comparison_markdown
from heartjax.report.overview import operating_text, overview_lines, threshold_text
from heartjax.report.run_report import RunReport
from heartjax.report.runs import Run
from heartjax.report.tables import display_columns, display_rows, loss_rows, model_groups

INTRO = ("The trials are shown one table per architecture (`model.name`), in the style of "
         "Table 3 of *Attention Is All You Need*: a table's first row is its architecture's best "
         "trial and the others follow by the tuning metric; the rank is the trial's place in the "
         "whole run (base: the best trial). A table shows the searched fields that vary among "
         "its trials (those alike in all of them are listed above it); a blank cell means the "
         "trial used the first row's value (`n/a`: the field did not exist for it). "
         "Validation metrics are the tuning run's, at each trial's best epoch with the "
         "arg-max rule; test metrics come from each trial's best checkpoint on the held-out "
         "test table with the checkpoint's own decision rule, as `python -m "
         "heartjax.evaluate` reports them. Stopped trials were ended early by the scheduler "
         "and trained fewer epochs.")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
             align: str | None = None) -> str:
    """A markdown table; `align` has one `l` or `r` per column."""
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    align = align or "l" * len(headers)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _loss_section(r: RunReport) -> list[str]:
    lines = ["### What the loss did to per-class recall", ""]
    for title, df in r.losses:
        headers = [c.replace("val_recall_", "val recall ")
                   .replace("test_recall_", "test recall ").replace("_", " ")
                   for c in df.columns]
        align = "".join("r" if df[c].dtype.kind in "fi" else "l" for c in df.columns)
        lines += [f"Mean recall per class over the trials, {title}:", "",
                  md_table(headers, loss_rows(df), align), ""]
    return lines


def trial_tables(run: Run, table: pd.DataFrame) -> list[str]:
    """The "Trials by" section: a table per architecture, its alike fields named above it."""
    lines = [f"### Trials by {run.metric}", ""]
    right = ("params_count", "train_s", "epochs")
    for g in model_groups(run, table):
        cols = display_columns(run, g.table, g.params)
        align = "".join("l" if c.group in ("", "hp") and c.key not in right else "r" for c in cols)
        lines += [f"#### {g.model}: {len(g.table)} trial{'s' if len(g.table) > 1 else ''}", ""]
        if g.fixed:
            lines += ["Alike in every trial here: "
                      + ", ".join(f"{k} {fmt_value(v)}" for k, v in g.fixed.items()), ""]
        lines += [md_table([c.md for c in cols], display_rows(run, g.table, cols), align), ""]
    return lines


def _md_run(r: RunReport, out: Path) -> list[str]:
    run = r.run
    lines = [f"## {run.name} ({run.dataset})", ""]
    lines += [f"- {ln}" for ln in overview_lines(r)] + [""]
    lines += [f"> Note: {note}" for note in r.notes] + ([""] if r.notes else [])
    lines += trial_tables(run, r.table)
    if r.comparison is not None:
        lines += ["### The untuned original beside the tuned model (test split)", "",
                  *comparison_markdown(r.comparison, run.class_names), ""]
    if threshold := threshold_text(r):
        lines += [threshold, ""]
    if operating := operating_text(r):
        lines += ["### Precision paid for recall", "", " ".join(operating), ""]
    if r.losses:
        lines += _loss_section(r)
    lines += ["### Plots", ""]
    for key, p in r.plots.items():
        rel = p.relative_to(out) if p.is_relative_to(out) else p
        lines += [f"![{key}]({rel.as_posix()})", ""]
    return lines


def write_markdown(reports: list[RunReport], path: Path, over_time: pd.DataFrame | None = None) -> Path:
    """summary.md: per run its facts, its Table-3-style tables, notes and plots; with several
    runs first their best result so far at fixed wall times (`ladder.best_at`)."""
    lines = ["# heartjax tuning report", "", INTRO, ""]
    if over_time is not None:
        times = [c for c in over_time.columns if c.startswith("best at")]
        rows = [[r["run"], r["search"], str(r["configurations"]),
                 *("-" if pd.isna(r[c]) else f"{r[c]:.4f}" for c in times)]
                for _, r in over_time.iterrows()]
        metric = reports[0].run.metric
        lines += [f"## Best {metric} so far against wall time", "",
                  md_table(["run", "search", "configurations", *times], rows,
                           "lll" + "r" * len(times)),
                  "", "![best so far](best_so_far.png)", ""]
    for r in reports:
        lines += _md_run(r, path.parent)
    path.write_text("\n".join(lines))
    return path
