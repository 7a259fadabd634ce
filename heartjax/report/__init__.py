"""`python -m heartjax.report RUN_DIR [RUN_DIR ...] --out DIR`: what a tuning run found.

Reads tuning run folders (`trials.csv`, `epochs.csv`, `summary.json`, `dataset.json`,
`config.json` and the trials' checkpoints), evaluates every reported trial's best checkpoint on
the dataset's test table and writes into DIR:

- `summary.md`: per run a table per architecture (`model.name`) in the style of Table 3 of
  "Attention Is All You Need": its best trial first, the other finished or stopped trials by
  the tuning metric, only the searched fields that vary among them, and a hyperparameter cell
  blank where the trial used the first row's value; `summary.csv`: every row and field.
- PNG plots: `metric_vs_<param>.png`, `parallel_coordinates.png`, `learning_curves.png`,
  `confusion_matrix.png`, `per_class_recall.png` and, for binary datasets, `pr_curve.png`.
- `report.pdf`: per run an overview page (dataset, search, the tables) and pages of key plots.
- `run_summary.json`: the run's summary.json, its paths relative to the run folder.

With several runs the plots and run_summary.json of each go to `DIR/<run name>/`. Validation metrics are the tuning
run's own (arg-max rule, best epoch); test metrics use each checkpoint's decision rule, exactly
as `heartjax.evaluate` does (a binary checkpoint may store a threshold).

Where things live: `runs` (reading run folders, run_summary.json), `evaluation` (checkpoints
on the test table, operating points), `tables` (the rows, the tables per architecture and their
cells, loss tables), `overview` (the facts and sentences), `plots` (each PNG), `markdown`
(summary.md), `pdf` (report.pdf), `formatting` (how values are written), `build`
(`build_report`), `cli` (the flags).
"""

from heartjax.report.build import build_report, report_run
from heartjax.report.cli import main
from heartjax.report.evaluation import TrialEval, evaluate_trials, operating_points
from heartjax.report.run_report import RunReport
from heartjax.report.runs import Param, Run, load_run
from heartjax.report.tables import (
    TrialGroup,
    display_columns,
    display_rows,
    loss_tables,
    model_groups,
    trial_table,
)

__all__ = [
    "Param",
    "Run",
    "RunReport",
    "TrialEval",
    "TrialGroup",
    "build_report",
    "display_columns",
    "display_rows",
    "evaluate_trials",
    "load_run",
    "loss_tables",
    "main",
    "model_groups",
    "operating_points",
    "report_run",
    "trial_table",
]
