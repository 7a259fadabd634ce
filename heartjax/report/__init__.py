"""`python -m heartjax.report RUN_DIR [RUN_DIR ...] --out DIR`: what a tuning run found.

Reads tuning run folders (`trials.csv`, `epochs.csv`, `summary.json`, `dataset.json`,
`config.json` and the trials' checkpoints), evaluates every reported trial's best checkpoint on
the dataset's test table and writes into DIR:

- `summary.md`, `summary.csv`: one table per run in the style of Table 3 of "Attention Is All You
  Need": the best trial is the base row, the other finished or stopped trials follow by the
  tuning metric, and a hyperparameter cell is blank where the trial used the base row's value.
- PNG plots: `metric_vs_<param>.png`, `parallel_coordinates.png`, `learning_curves.png`,
  `confusion_matrix.png`, `per_class_recall.png` and, for binary datasets, `pr_curve.png`.
- `report.pdf`: per run an overview page (dataset, search, the table) and pages of key plots.

With several runs the plots of each go to `DIR/<run name>/`. Validation metrics are the tuning
run's own (arg-max rule, best epoch); test metrics use each checkpoint's decision rule, exactly
as `heartjax.evaluate` does (a binary checkpoint may store a threshold).

Where things live: `runs` (reading run folders), `evaluation` (checkpoints on the test table,
operating points), `tables` (the Table-3-style rows and cells, loss tables), `overview` (the
facts and sentences), `plots` (each PNG), `markdown` (summary.md), `pdf` (report.pdf),
`formatting` (how values are written), `build` (`build_report`), `cli` (the flags).
"""

from heartjax.report.build import build_report, report_run
from heartjax.report.cli import main
from heartjax.report.evaluation import TrialEval, evaluate_trials, operating_points
from heartjax.report.run_report import RunReport
from heartjax.report.runs import Param, Run, load_run
from heartjax.report.tables import display_columns, display_rows, loss_tables, trial_table

__all__ = [
    "Param",
    "Run",
    "RunReport",
    "TrialEval",
    "build_report",
    "display_columns",
    "display_rows",
    "evaluate_trials",
    "load_run",
    "loss_tables",
    "main",
    "operating_points",
    "report_run",
    "trial_table",
]
