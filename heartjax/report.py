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
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heartjax.errors import UserError, cli_entry

RANGES = ("uniform", "loguniform", "quniform", "randint")  # search kinds with a low and a high
REPORTED = ("finished", "stopped")  # trials the table shows; error/interrupted ones are counted
STATUS_COLORS = {"finished": "tab:blue", "stopped": "tab:orange", "error": "tab:red",
                 "interrupted": "tab:gray"}
STATUS_LABELS = {"finished": "finished", "stopped": "stopped early by the scheduler",
                 "error": "error", "interrupted": "interrupted"}
TOP_CURVES = 5  # trials drawn in colour in learning_curves.png
TOP_PARALLEL = 10  # trials in parallel_coordinates.png
TOP_PDF_ROWS = 10  # rows of the table on the PDF's overview page
PAGE = (11.69, 8.27)  # A4 landscape, inches
DPI = 150
# Matplotlib style of every figure; applied per report so a caller's settings stay untouched.
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12}
# Short names for the PDF table and plot labels; anything else shows its last path component.
SHORT = {"learning_rate": "lr", "weight_decay": "wd", "batch_size": "batch",
         "class_weight_power": "cw power", "warmup_epochs": "warmup", "focal_gamma": "gamma"}
UNITS = {"learning_rate": "peak step size", "weight_decay": "decay coefficient",
         "batch_size": "beats per step", "dropout": "drop probability",
         "class_weight_power": "exponent of n/n_c", "warmup_epochs": "epochs",
         "epochs": "epochs", "focal_gamma": "exponent", "channels": "channels",
         "num_blocks": "blocks"}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- reading a run


@dataclass(frozen=True)
class Param:
    """One tuned hyperparameter as the run's summary.json records it."""

    path: str
    kind: str
    args: tuple
    name: str  # unique short label (the last path component unless that is ambiguous)

    @property
    def column(self) -> str:
        return f"param:{self.path}"

    @property
    def label(self) -> str:
        unit = UNITS.get(self.path.rsplit(".", 1)[-1])
        return f"{self.path} ({unit})" if unit else self.path


@dataclass
class Run:
    """A tuning run folder, read and checked."""

    path: Path
    name: str
    config: Any  # ml_collections.ConfigDict
    summary: dict[str, Any]
    dataset_info: dict[str, Any]
    trials: pd.DataFrame  # every trial, as trials.csv has it
    epochs: pd.DataFrame  # may be empty
    params: list[Param]
    metric: str
    mode: str
    ranked: pd.DataFrame = field(default=None)  # reported trials, best first

    @property
    def dataset(self) -> str:
        return self.config.data.dataset

    @property
    def class_names(self) -> tuple[str, ...]:
        from heartjax.data import CLASS_NAMES

        return CLASS_NAMES[self.dataset]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable JSON ({type(e).__name__}); "
                        "is the run folder damaged?") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: expected a JSON object; is the run folder damaged?")
    return value


def _read_csv(path: Path) -> pd.DataFrame:
    try:  # Ray trial ids are hex: "12345678" or "1234e567" must stay strings
        return pd.read_csv(path, dtype={"trial_id": str})
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise UserError(f"{path}: unreadable CSV ({type(e).__name__}); "
                        "is the run folder damaged?") from None


def _params(summary: dict[str, Any], trials: pd.DataFrame) -> list[Param]:
    """The search space of the run (summary.json), plus any param: column it does not name."""
    entries = [(s["path"], s.get("kind", "choice"), tuple(s.get("args", ())))
               for s in summary.get("search_space", []) if "path" in s]
    known = {p for p, _, _ in entries}
    entries += [(c[6:], "unknown", ()) for c in trials.columns
                if c.startswith("param:") and c[6:] not in known]
    last = [p.rsplit(".", 1)[-1] for p, _, _ in entries]
    return [Param(p, k, a, n if last.count(n) == 1 else p)
            for (p, k, a), n in zip(entries, last, strict=True)]


def load_run(path: str | Path) -> Run:
    """Read and check a tuning run folder (the --workdir of `python -m heartjax.tune`)."""
    import ml_collections

    from heartjax.data import CLASS_NAMES

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"{p}: no such folder; pass a tuning run folder (the --workdir of "
                        "`python -m heartjax.tune`)")
    missing = [f for f in ("trials.csv", "summary.json", "config.json") if not (p / f).is_file()]
    if missing:
        raise UserError(f"{p}: not a heartjax tuning run (no {', '.join(missing)}); pass the "
                        "--workdir of a finished `python -m heartjax.tune` run")
    summary = _read_json(p / "summary.json")
    config = ml_collections.ConfigDict(_read_json(p / "config.json"))
    if config.get("data", {}).get("dataset") not in CLASS_NAMES:
        raise UserError(f"{p / 'config.json'}: no known data.dataset; is the run folder damaged?")
    trials = _read_csv(p / "trials.csv")
    epochs = _read_csv(p / "epochs.csv") if (p / "epochs.csv").is_file() else pd.DataFrame()
    dataset_info = _read_json(p / "dataset.json") if (p / "dataset.json").is_file() else {}
    metric = summary.get("metric") or config.get("tune", {}).get("metric", "val_macro_recall")
    mode = summary.get("mode") or config.get("tune", {}).get("mode", "max")
    for col in ("trial_id", "status"):
        if col not in trials:
            raise UserError(f"{p / 'trials.csv'}: no {col!r} column; is the run folder damaged?")
    ok = trials["status"].isin(REPORTED)
    if metric in trials:
        ok &= trials[metric].notna()
    else:
        ok &= False
    if not ok.any():
        counts = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items()) or "none"
        errors = trials["error"].dropna() if "error" in trials else pd.Series(dtype=str)
        if (trials["status"] == "interrupted").any():
            hint = "continue it with `python -m heartjax.tune ... --resume`"
        elif len(errors):
            hint = "the trials failed (see the error column of trials.csv); fix that, tune again"
        else:
            hint = "tune again"
        raise UserError(f"{p}: no finished or stopped trial with {metric} to report (trials: "
                        f"{counts}); {hint}")
    ranked = trials[ok].sort_values(metric, ascending=mode == "min", kind="stable")
    return Run(path=p.absolute(), name=p.absolute().name, config=config, summary=summary,
               dataset_info=dataset_info, trials=trials, epochs=epochs,
               params=_params(summary, trials), metric=metric, mode=mode,
               ranked=ranked.reset_index(drop=True))


# ----------------------------------------------------------------------------- evaluation


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


def _data_paths(run: Run, data_dir: str | Path | None) -> tuple[Path, Path]:
    """The train and test tables of a run: in --data-dir if given, else where the run read them."""
    from heartjax.data import TABLE_FILES

    train_name, test_name = TABLE_FILES[run.dataset]
    d = run.config.data
    if data_dir is not None:
        return Path(data_dir) / train_name, Path(data_dir) / test_name
    train = Path(d.train_file) if d.get("train_file") else Path(d.dir) / train_name
    return train, Path(d.dir) / test_name


def _load_test(run: Run, path: Path, notes: list[str]):
    """The test table, or None with a note saying why the test columns are empty."""
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


def _model_key(predictor) -> str:
    """Trials whose models differ only in dropout run the same inference program (dropout is
    off at inference), so they can share one compiled predict function."""
    model = {k: v for k, v in predictor.config.model.to_dict().items() if "dropout" not in k}
    return json.dumps([model, len(predictor.class_names)], sort_keys=True, default=str)


def evaluate_trials(run: Run, test, *, keep: str | None = None) -> dict[str, TrialEval]:
    """Each reported trial's best checkpoint on `test` (a BeatTable), with progress on stderr.

    The metrics equal `heartjax.evaluate.evaluate(predictor, test.path)`; the table is read once
    for all trials instead of once per trial. `keep` names the trial whose probabilities and
    predictor are kept (for the plots).
    """
    from heartjax import metrics
    from heartjax.checkpoint import load_checkpoint
    from heartjax.train import enable_compilation_cache

    enable_compilation_cache()  # a rerun of the report reuses the compiled programs
    n = len(run.ranked)
    _log(f"{run.name}: evaluating {n} trial checkpoints on {test.path} ({len(test)} beats)")
    programs: dict[str, Any] = {}
    out: dict[str, TrialEval] = {}
    for i, row in enumerate(run.ranked.itertuples(index=False), 1):
        tid = row.trial_id
        t0 = time.perf_counter()
        workdir = Path(getattr(row, "workdir", "") or "")
        if not workdir.is_dir():  # the run folder was moved: its trials moved with it
            workdir = run.path / "trials" / tid
        try:
            predictor = load_checkpoint(workdir)
        except UserError as e:
            out[tid] = TrialEval(error=str(e))
            _log(f"  [{i}/{n}] {tid}: no usable checkpoint ({e})")
            continue
        # one compiled program per architecture, not one per trial
        predictor._predict_fn = programs.setdefault(_model_key(predictor), predictor._predict_fn)
        rr = test.rr if predictor.config.model.get("use_rr", False) else None
        if rr is None and predictor.config.model.get("use_rr", False):
            out[tid] = TrialEval(error=f"{test.path} has no R-R columns, which this model needs")
            continue
        proba = predictor.predict_proba(test.x, rr)
        m = metrics.evaluate_predictions(test.y, proba, predictor.class_names, predictor.threshold)
        e = TrialEval(metrics=m, threshold=predictor.threshold, checkpoint=str(predictor.path),
                      epoch=predictor.meta.get("epoch"))
        if predictor.threshold is not None:
            e.argmax = metrics.evaluate_predictions(test.y, proba, predictor.class_names)
        if tid == keep:
            e.proba, e.predictor = proba, predictor
        out[tid] = e
        _log(f"  [{i}/{n}] {tid}: test macro recall {m['macro_recall']:.3f}, accuracy "
             f"{m['accuracy']:.3f} ({time.perf_counter() - t0:.1f} s)")
    return out


def _precision_recall_at(y: np.ndarray, score: np.ndarray, t: float) -> dict[str, float]:
    pred = score >= t
    pos = y.astype(bool)
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    return {"threshold": float(t), "recall": tp / max(int(pos.sum()), 1),
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "false_alarms": fp, "negatives": int((~pos).sum())}


def operating_points(run: Run, trial_id: str, best: TrialEval, test, train_path: Path,
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
    _, val = train_val_split(table, d.val_fraction, d.seed)
    expected = run.dataset_info.get("val_rows")
    if expected is not None and expected != len(val):
        notes.append(f"the validation split of {train_path} has {len(val)} beats but training "
                     f"used {expected}: the table changed since tuning, so the threshold chosen on "
                     "it is suspect")
    rr = val.rr if predictor.config.model.get("use_rr", False) else None
    val_score = predictor.predict_proba(val.x, rr)[:, 1]
    test_score = best.proba[:, 1]
    t_target = metrics.threshold_for_recall(val.y, val_score, target_recall)
    points = {"argmax": 0.5, "stored": best.threshold, "target": t_target}
    out: dict[str, Any] = {"trial_id": trial_id, "positive": run.class_names[1],
                           "negative": run.class_names[0], "target_recall": target_recall,
                           "target_train": float(predictor.config.train.get("target_recall", 0.0)),
                           "val_rows": len(val)}
    for key, t in points.items():
        if t is None:
            out[key] = None
            continue
        out[key] = {"test": _precision_recall_at(test.y, test_score, t),
                    "val": _precision_recall_at(val.y, val_score, t)}
    precision, recall, _ = metrics.precision_recall_curve(test.y, test_score)
    vp, vr, _ = metrics.precision_recall_curve(val.y, val_score)
    out["curve"] = {"precision": precision, "recall": recall, "val_precision": vp,
                    "val_recall": vr, "auc_pr": metrics.average_precision(test.y, test_score),
                    "prevalence": float(np.mean(test.y == 1))}
    return out


# ----------------------------------------------------------------------------- the table


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def fmt_value(v: Any) -> str:
    """A hyperparameter value as the table shows it."""
    if _isnan(v):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else f"{v:.3g}"
    return str(v)


def _same(a: Any, b: Any) -> bool:
    if _isnan(a) or _isnan(b):
        return _isnan(a) and _isnan(b)
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _fmt_metric(v: Any) -> str:
    return "" if _isnan(v) else f"{float(v):.3f}"


def _fmt_seconds(s: Any) -> str:
    if _isnan(s):
        return ""
    s = float(s)
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _fmt_count(n: Any) -> str:
    if _isnan(n):
        return ""
    n = int(n)
    return str(n) if n < 1000 else f"{n / 1e3:.1f}k" if n < 1e6 else f"{n / 1e6:.2f}M"


def trial_table(run: Run, evals: dict[str, TrialEval]) -> pd.DataFrame:
    """One row per reported trial, best first, with raw values (the rows of summary.csv)."""
    from heartjax import metrics

    rows = []
    for rank, t in enumerate(run.ranked.to_dict("records"), 1):
        row: dict[str, Any] = {"run": run.name, "dataset": run.dataset, "rank": rank,
                               "base": rank == 1, "trial_id": t["trial_id"], "status": t["status"]}
        row.update({p.column: t.get(p.column) for p in run.params})
        for c in ("epochs", "best_epoch", "train_s", "params_count"):
            row[c] = t.get(c)
        row.update({c: v for c, v in t.items() if c.startswith("val_")})
        e = evals.get(t["trial_id"])
        if e is not None and e.metrics is not None:
            row.update(metrics.flat_scalars(e.metrics, "test_"))
            if e.argmax is not None:
                flat = metrics.flat_scalars(e.argmax, "")
                keep = ("accuracy", "macro_recall", "macro_f1")
                row.update({f"test_argmax_{k}": v for k, v in flat.items()
                            if k in keep or k.startswith("recall_")})
            row["test_checkpoint_epoch"] = e.epoch
            row["checkpoint"] = e.checkpoint
        elif e is not None:
            row["test_error"] = e.error
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Column:
    """A column of the shown table: its key in the raw table, its headers and its group."""

    key: str
    md: str  # header in summary.md
    pdf: str  # header in the PDF (two short lines)
    group: str  # "" | "hp" | "val" | "test"


def display_columns(run: Run, table: pd.DataFrame) -> list[Column]:
    """The columns of the Table-3-style table of a run, in order (PDF headers are short: the
    PDF groups them under hyperparameters / validation / test)."""
    cols = [Column("rank", "", "", ""), Column("trial_id", "trial", "trial", ""),
            Column("status", "status", "status", "")]
    cols += [Column(p.column, p.name, SHORT.get(p.name, p.name).replace("_", "\n", 1), "hp")
             for p in run.params]
    cols += [Column("epochs", "best/ran epochs", "epochs\nbest/ran", ""),
             Column("params_count", "params", "params", ""),
             Column("train_s", "train time", "train\ntime", "")]
    for split in ("val", "test"):
        if split == "test" and len(run.class_names) == 2 and "test_threshold" in table \
                and table["test_threshold"].notna().any():
            cols.append(Column("test_threshold", "test threshold", "thresh-\nold", "test"))
        cols += [Column(f"{split}_macro_recall", f"{split} macro recall", "macro\nR", split),
                 Column(f"{split}_macro_f1", f"{split} macro F1", "macro\nF1", split),
                 Column(f"{split}_accuracy", f"{split} accuracy", "acc", split)]
        cols += [Column(f"{split}_recall_{c}", f"{split} recall {c}", f"R\n{c}", split)
                 for c in run.class_names]
        if split == "test" and "test_argmax_macro_recall" in table \
                and table["test_argmax_macro_recall"].notna().any():
            # the validation columns use arg-max: this one compares like with like
            cols.append(Column("test_argmax_macro_recall", "test macro recall (arg-max)",
                               "macro R\narg-max", "test"))
    return cols


def display_rows(run: Run, table: pd.DataFrame, cols: list[Column],
                 limit: int | None = None) -> list[list[str]]:
    """Cells as text: the base row in full, other rows blank where they equal the base."""
    records = table.to_dict("records")[:limit]
    base = records[0]
    out = []
    for r in records:
        cells = []
        for c in cols:
            v = r.get(c.key)
            if c.key == "rank":
                cells.append("base" if r["base"] else str(r["rank"]))
            elif c.group == "hp":
                cells.append(fmt_value(v) if r["base"] or not _same(v, base.get(c.key)) else "")
            elif c.key == "epochs":
                be, ep = r.get("best_epoch"), r.get("epochs")
                cells.append("" if _isnan(ep) else f"{fmt_value(be)}/{fmt_value(ep)}")
            elif c.key == "params_count":
                cells.append(_fmt_count(v))
            elif c.key == "train_s":
                cells.append(_fmt_seconds(v))
            elif c.key in ("trial_id", "status"):
                cells.append(str(v))
            else:
                cells.append(_fmt_metric(v))
        out.append(cells)
    return out


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
              align: str | None = None) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    align = align or "l" * len(headers)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def loss_tables(run: Run, table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """"What the loss did to per-class recall": mean recall per class by loss (and by the class
    weight power when it was tuned), for runs whose trials varied train.loss or its weights."""
    tuned = {p.path: p for p in run.params}
    if not {"train.loss", "train.class_weight_power"} & tuned.keys():
        return []
    df = table.copy()
    df["loss"] = df["param:train.loss"] if "train.loss" in tuned else run.config.train.loss
    df["loss"] = df["loss"].fillna(run.config.train.loss).astype(str)
    metrics_cols = [f"val_recall_{c}" for c in run.class_names] + ["val_macro_recall"]
    test_cols = [f"test_recall_{c}" for c in run.class_names] + ["test_macro_recall"]
    metrics_cols += [c for c in test_cols if c in df and df[c].notna().any()]
    metrics_cols = [c for c in metrics_cols if c in df]

    def agg(keys: list[str]) -> pd.DataFrame:
        g = df.groupby(keys, sort=True, dropna=False)
        out = g[metrics_cols].mean()
        out.insert(0, "finished", g["status"].apply(lambda s: int((s == "finished").sum())))
        out.insert(0, "trials", g.size())
        return out.reset_index()

    tables = [("by loss", agg(["loss"]))]
    if "train.class_weight_power" in tuned:
        p = tuned["train.class_weight_power"]
        power = pd.to_numeric(df[p.column], errors="coerce")
        if p.kind in RANGES and len(p.args) >= 2:
            edges = np.linspace(float(p.args[0]), float(p.args[1]), 4)
            bins = pd.cut(power, edges, include_lowest=True)
            df["class_weight_power"] = [f"{iv.left:.2f}-{iv.right:.2f}"
                                        if isinstance(iv, pd.Interval) else "n/a" for iv in bins]
        else:
            df["class_weight_power"] = power.map(fmt_value)
        # plain CE ignores the class weights: its power bins would only split noise
        df.loc[df["loss"] == "ce", "class_weight_power"] = "(ignored by ce)"
        tables.append(("by loss and class weight power", agg(["loss", "class_weight_power"])))
    return tables


# ----------------------------------------------------------------------------- plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    _plt().close(fig)
    return path


def metric_label(metric: str) -> str:
    """`val_macro_recall` -> `validation macro recall`."""
    name = metric.removeprefix("val_")
    name = {"auc_pr": "PR-AUC", "roc_auc": "ROC-AUC"}.get(name, name.replace("_", " "))
    return f"validation {name}" if metric.startswith("val_") else name


def _positions(p: Param, values: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """x positions of a parameter's values; category names for a choice."""
    if p.kind == "choice" or not pd.api.types.is_numeric_dtype(values):
        cats = [fmt_value(c) for c in (p.args[0] if p.kind == "choice" and p.args else [])]
        for v in values:
            if fmt_value(v) not in cats:
                cats.append(fmt_value(v))
        return np.array([cats.index(fmt_value(v)) for v in values], float), cats
    return values.to_numpy(float), None


def _draw_metric_vs_param(ax, run: Run, p: Param, compact: bool = False) -> None:
    """Scatter of every trial with a metric on `ax`: tuning metric against one hyperparameter."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    df = run.trials[run.trials[run.metric].notna() & run.trials[p.column].notna()]
    x, cats = _positions(p, df[p.column])
    if cats is not None:  # deterministic jitter so equal choices do not hide each other
        x = x + np.random.default_rng(0).uniform(-0.12, 0.12, len(x))
    y = df[run.metric].to_numpy(float)
    size = 30 if compact else 46
    for status, color in STATUS_COLORS.items():
        m = (df["status"] == status).to_numpy()
        if m.any():
            ax.scatter(x[m], y[m], s=size, color=color, edgecolor="black", lw=0.5,
                       alpha=0.85, label=f"{STATUS_LABELS[status]} ({int(m.sum())})", zorder=3)
    best = (df["trial_id"] == run.ranked["trial_id"].iloc[0]).to_numpy()
    if best.any():
        ax.scatter(x[best], y[best], marker="*", s=size * 5, color="gold", edgecolor="black",
                   lw=0.8, label="best trial (base row)", zorder=4)
    if cats is not None:
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.6, len(cats) - 0.4)
    elif p.kind == "loguniform":
        ax.set_xscale("log")
        decades = math.log10(float(p.args[1]) / float(p.args[0])) if len(p.args) >= 2 else 2.0
        subs = ((1.0, 3.0) if compact else (1.0, 2.0, 5.0)) if decades <= 1.2 else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if cats is None and len(p.args) >= 2 and p.kind in RANGES:
        lo, hi = float(p.args[0]), float(p.args[1])  # the whole searched range
        if p.kind == "loguniform":
            ax.set_xlim(lo / 1.2, hi * 1.2)
        else:
            pad = 0.05 * (hi - lo or 1.0)
            ax.set_xlim(lo - pad, hi + pad)
    log = p.kind == "loguniform"
    if compact:
        unit = UNITS.get(p.path.rsplit(".", 1)[-1])
        ax.set_xlabel(p.name + (f" ({unit})" if unit else "") + ("\nlog scale" if log else ""))
        ax.set_title(p.path, fontsize=10)
    else:
        ax.set_xlabel(p.label + (", log scale" if log else ""))
        ax.set_ylabel(f"{metric_label(run.metric)} (0-1)\nat each trial's best epoch")
        ax.set_title(f"{run.name}: {metric_label(run.metric)} vs {p.name}")
    ax.grid(alpha=0.3)


def plot_metric_vs_param(run: Run, p: Param, path: Path) -> Path:
    """metric_vs_<param>.png: every trial's tuning metric against one hyperparameter."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    _draw_metric_vs_param(ax, run, p)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, frameon=False)
    return _save(fig, path)


def _tick(v: float) -> str:
    """A compact tick label: 0.001, 5e-5."""
    text = f"{v:g}"
    return text.replace("e-0", "e-").replace("e+0", "e")


def _normalise(p: Param, values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Values of a parameter on [0, 1] over its search range, and (position, label) ticks."""
    if p.kind == "choice" or not pd.api.types.is_numeric_dtype(values):
        idx, cats = _positions(p, values)
        n = max(len(cats) - 1, 1)
        return idx / n if len(cats) > 1 else idx * 0 + 0.5, [(i / n if len(cats) > 1 else 0.5, c)
                                                             for i, c in enumerate(cats)]
    v = values.to_numpy(float)
    if len(p.args) >= 2:
        lo, hi = float(p.args[0]), float(p.args[1])
    else:
        lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    if p.kind == "loguniform" and lo > 0:
        f = np.log
    else:
        f = np.asarray
    span = float(f(hi) - f(lo)) or 1.0
    return (f(v) - f(lo)) / span, [(0.0, fmt_value(lo)), (1.0, fmt_value(hi))]


def plot_parallel(run: Run, table: pd.DataFrame, path: Path) -> Path:
    """Parallel coordinates of the top trials: tuned hyperparameters, then the metrics."""
    plt = _plt()
    import matplotlib as mpl

    top = table.head(TOP_PARALLEL)
    axes: list[tuple[str, np.ndarray, list[tuple[float, str]]]] = []
    for p in run.params:
        y, ticks = _normalise(p, top[p.column])
        label = SHORT.get(p.name, p.name) + ("\n(log scale)" if p.kind == "loguniform" else "")
        axes.append((label, y, ticks))
    metric_cols = [(run.metric, metric_label(run.metric).replace("validation ", "val "))]
    if "test_macro_recall" in top and top["test_macro_recall"].notna().any():
        metric_cols.append(("test_macro_recall", "test macro recall"))
    for col, label in metric_cols:
        v = top[col].to_numpy(float)
        lo, hi = np.nanmin(v), np.nanmax(v)
        span = hi - lo
        y = (v - lo) / span if span > 0 else np.full_like(v, 0.5)
        axes.append((label.replace(" ", "\n", 1), y, [(0.0, f"{lo:.3f}"), (1.0, f"{hi:.3f}")]
                     if span > 0 else [(0.5, f"{lo:.3f}")]))
    k = len(axes)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.5 * k + 2.5), 5.2))
    score = top[run.metric].to_numpy(float)
    lo, hi = float(np.nanmin(score)), float(np.nanmax(score))
    norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1e-9)
    cmap = mpl.colormaps["viridis"]
    for j in range(k):
        ax.axvline(j, color="0.55", lw=1, zorder=1)
        for pos, text in axes[j][2]:
            # the ends of an axis are labelled beyond its ends, so no marker hides them
            if pos in (0.0, 1.0):
                ax.text(j, 1.045 if pos == 1.0 else -0.045, text, fontsize=8.5, ha="center",
                        va="bottom" if pos == 1.0 else "top", zorder=5)
            else:
                ax.text(j + 0.05, pos, text, fontsize=8.5, va="center", ha="left", zorder=5,
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.85})
    order = np.argsort(score if run.mode == "max" else -score)  # best drawn last, on top
    for i in order:
        ys = [a[1][i] for a in axes]
        is_best = bool(top["base"].iloc[i])
        ax.plot(range(k), ys, color=cmap(norm(score[i])), lw=3.2 if is_best else 1.4,
                marker="o", ms=5.5 if is_best else 3.5, alpha=0.95, zorder=4 if is_best else 3)
    ax.set_xticks(range(k), [a[0] for a in axes])
    ax.set_xlim(-0.35, k - 0.65)
    ax.set_ylim(-0.13, 1.13)
    ax.set_yticks([0, 0.5, 1])
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.set_ylabel("position on each axis (0 = low end,\n1 = high end of the search range)")
    ax.set_title(f"{run.name}: top {len(top)} trials by {metric_label(run.metric)}, parallel "
                 f"coordinates\n(thick line: best trial {top['trial_id'].iloc[0]}; metric axes "
                 "span the shown trials)")
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, pad=0.02, fraction=0.04, label=metric_label(run.metric))
    return _save(fig, path)


def plot_learning_curves(run: Run, path: Path) -> Path | None:
    """Validation metric and training loss per epoch: the top trials in colour, others in grey."""
    ep = run.epochs
    if ep.empty or "epoch" not in ep or run.metric not in ep:
        return None
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    top = list(run.ranked["trial_id"].head(TOP_CURVES))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    grey = True
    for tid, g in ep.groupby("trial_id", sort=False):
        if tid in top:
            continue
        g = g.sort_values("epoch")
        kw = {"color": "0.7", "lw": 0.9, "marker": ".", "ms": 3, "zorder": 1,
              "label": "other trials" if grey else None}
        a1.plot(g["epoch"], g[run.metric], **kw)
        if "train_loss" in g:
            a2.plot(g["epoch"], g["train_loss"], **kw)
        grey = False
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    scores = dict(zip(run.ranked["trial_id"], run.ranked[run.metric], strict=False))
    for i, tid in enumerate(top):
        g = ep[ep["trial_id"] == tid].sort_values("epoch")
        label = f"{tid} ({scores[tid]:.3f}){' base' if i == 0 else ''}"
        kw = {"color": colors[i % len(colors)], "lw": 2.6 if i == 0 else 1.5, "marker": "o",
              "ms": 4, "label": label, "zorder": 3 + (i == 0)}
        a1.plot(g["epoch"], g[run.metric], **kw)
        if "train_loss" in g:
            a2.plot(g["epoch"], g["train_loss"], **kw)
    for a in (a1, a2):
        a.set_xlabel("epoch")
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    a1.set_ylabel(f"{metric_label(run.metric)} (0-1)")
    a1.set_title(f"{metric_label(run.metric)} per epoch")
    losses = {p.path for p in run.params} & {"train.loss", "train.class_weight_power",
                                              "train.focal_gamma"}
    a2.set_ylabel(f"training loss per beat ({'per trial' if losses else run.config.train.loss})")
    a2.set_title("training loss per epoch"
                 + (" (losses differ: compare shapes only)" if losses else ""))
    a1.legend(title=f"trial ({metric_label(run.metric).replace('validation ', 'val ')})",
              loc="best")
    fig.suptitle(f"{run.name}: learning curves (best {len(top)} trials in colour)")
    fig.tight_layout()
    return _save(fig, path)


def plot_per_class_recall(run: Run, row: dict[str, Any], test_counts: dict[str, int] | None,
                          path: Path) -> Path:
    """Recall of each class of the best trial: validation (arg-max) and test bars, with values."""
    plt = _plt()
    names = run.class_names
    val = [row.get(f"val_recall_{c}", np.nan) for c in names]
    test = [row.get(f"test_recall_{c}", np.nan) for c in names]
    has_test = not all(_isnan(v) for v in test)
    x = np.arange(len(names))
    w = 0.38 if has_test else 0.6
    fig, ax = plt.subplots(figsize=(max(5.0, 1.25 * len(names) + 1.6), 4.4))
    bars = ax.bar(x - (w / 2 if has_test else 0), val, w, color="tab:blue",
                  label="validation (best epoch, arg-max)")
    ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=9)
    labels = list(names)
    if has_test:
        thr = row.get("test_threshold")
        stored = len(names) == 2 and not _isnan(thr) and thr != 0.5
        rule = f"threshold {thr:.3g}" if stored else "arg-max"
        bars = ax.bar(x + w / 2, test, w, color="tab:green", label=f"test ({rule})")
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=9)
        if test_counts:
            labels = [f"{c}\n(n = {test_counts.get(c, 0)})" for c in names]
            ax.set_xlabel("true class (n = test beats)")
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1.13)
    if not has_test or not test_counts:
        ax.set_xlabel("true class")
    ax.set_ylabel("recall (fraction of the class found)")
    ax.set_title(f"{run.name}: recall per class,\nbest trial {row['trial_id']}")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_pr_curve(run: Run, op: dict[str, Any], path: Path) -> Path:
    """Test precision-recall curve of the best model with its operating points."""
    plt = _plt()
    c = op["curve"]
    pos = op["positive"]
    fig, ax = plt.subplots(figsize=(5.4, 4.6))
    ax.plot(np.r_[0.0, c["recall"]], np.r_[c["precision"][0], c["precision"]], color="tab:blue",
            lw=2, drawstyle="steps-post", label=f"test (PR-AUC {c['auc_pr']:.3f})")
    ax.plot(np.r_[0.0, c["val_recall"]], np.r_[c["val_precision"][0], c["val_precision"]],
            color="tab:blue", lw=1, ls="--", alpha=0.6, drawstyle="steps-post",
            label=f"validation ({op['val_rows']} beats)")
    ax.axhline(c["prevalence"], color="0.5", ls=":", lw=1,
               label=f"chance (test prevalence {c['prevalence']:.2f})")
    styles = [("argmax", "arg-max", "s", "tab:gray"),
              ("stored", "stored", "D", "tab:purple"),
              ("target", f"val recall \u2265 {op['target_recall']:g}", "o", "tab:red")]
    stored_is_argmax = op.get("stored") is not None and op["stored"]["test"]["threshold"] == 0.5
    for key, name, marker, color in styles:
        point = op.get(key)
        if point is None or (key == "argmax" and stored_is_argmax):
            continue
        t = point["test"]
        label = f"{name} (t = {t['threshold']:.3g}): R {t['recall']:.3f}, P {t['precision']:.3f}"
        ax.scatter(t["recall"], t["precision"], s=90, marker=marker, color=color,
                   edgecolor="black", zorder=5, label=label)
    lo = min(c["prevalence"], float(np.nanmin(c["precision"]))) - 0.05
    ax.set_xlim(0, 1.02)
    ax.set_ylim(max(lo, 0), 1.01)
    ax.set_xlabel(f"recall of {pos}\n(sensitivity: fraction of {pos} beats found)")
    ax.set_ylabel(f"precision of {pos}\n(fraction of alarms that are {pos})")
    ax.set_title(f"{run.name}: precision-recall on test, best trial {op['trial_id']}\n"
                 "(points: test recall R and precision P at threshold t)", fontsize=10.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", framealpha=0.95, fontsize=8.5)
    return _save(fig, path)


def plot_confusion(run: Run, m: dict[str, Any], trial_id: str, path: Path) -> Path:
    """The best model's test confusion matrix, row-normalised (recall on the diagonal), with
    counts; like `heartjax.evaluate.plot_confusion` plus which model, data and rule it shows."""
    plt = _plt()
    names = run.class_names
    cm = np.asarray(m["confusion_matrix"], float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    k = len(names)
    fig, ax = plt.subplots(figsize=(0.75 * k + 3.2, 0.7 * k + 2.5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({int(cm[i, j])})", ha="center", va="center",
                    color="white" if norm[i, j] > 0.6 else "black", fontsize=11 if k <= 3 else 10)
    ax.set_xticks(range(k), names, fontsize=10)
    ax.set_yticks(range(k), names, fontsize=10)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    thr = m.get("threshold")
    rule = f"threshold {thr:.3g}" if k == 2 and thr is not None and thr != 0.5 else "arg-max"
    ax.set_title(f"{run.name}: test confusion matrix, best trial {trial_id}\n"
                 f"rows sum to 1 (recall on the diagonal), {rule}\n"
                 f"accuracy {m['accuracy']:.3f}, macro recall {m['macro_recall']:.3f}", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return _save(fig, path)


# ----------------------------------------------------------------------------- one run


@dataclass
class RunReport:
    """Everything the report says about one run."""

    run: Run
    table: pd.DataFrame
    notes: list[str]
    plots: dict[str, Path]
    test_path: Path
    test_counts: dict[str, int] | None  # None: no test table
    operating: dict[str, Any] | None
    losses: list[tuple[str, pd.DataFrame]]


def _plot_key(p: Param) -> str:
    return f"metric_vs_{p.name.replace('.', '_')}"


def report_run(run: Run, plot_dir: Path, data_dir: str | Path | None,
               target_recall: float) -> RunReport:
    """Evaluate a run's trials on test and draw its plots into `plot_dir`."""
    notes: list[str] = []
    train_path, test_path = _data_paths(run, data_dir)
    test = _load_test(run, test_path, notes)
    best_id = run.ranked["trial_id"].iloc[0]
    if test is None:
        _log(f"{run.name}: {notes[-1]}")
    evals = evaluate_trials(run, test, keep=best_id) if test is not None else {}
    failed = {k: e.error for k, e in evals.items() if e.error}
    if failed:
        notes.append(f"{len(failed)} trial(s) without a usable checkpoint, test cells empty: "
                     + "; ".join(f"{k}: {v}" for k, v in list(failed.items())[:3]))
    table = trial_table(run, evals)
    if "test_checkpoint_epoch" in table:
        has = table["test_checkpoint_epoch"].notna()
        off = table[has & (table["test_checkpoint_epoch"] != table["best_epoch"])]
        if len(off):
            notes.append(f"{len(off)} trial(s) ({', '.join(off['trial_id'].head(3))}) keep their "
                         f"best checkpoint from another epoch than their best {run.metric}: "
                         f"train.select_metric={run.config.train.select_metric} is not the "
                         "tuning metric")
    skipped = run.trials[~run.trials["trial_id"].isin(run.ranked["trial_id"])]
    if len(skipped):
        counts = ", ".join(f"{n} {s}" for s, n in skipped["status"].value_counts().items())
        notes.append(f"not in the table: {len(skipped)} trial(s) without a finished or stopped "
                     f"result ({counts})")
    summary_best = (run.summary.get("best") or {}).get("trial_id")
    if summary_best and summary_best != best_id:
        notes.append(f"summary.json names {summary_best} as best, but it is not a finished or "
                     f"stopped trial; the base row is {best_id}")

    _log(f"{run.name}: plots into {plot_dir}")
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    for p in run.params:
        if p.column in run.trials and run.trials[p.column].notna().any():
            plots[_plot_key(p)] = plot_metric_vs_param(run, p, plot_dir / f"{_plot_key(p)}.png")
    if run.params:
        plots["parallel_coordinates"] = plot_parallel(run, table,
                                                      plot_dir / "parallel_coordinates.png")
    curves = plot_learning_curves(run, plot_dir / "learning_curves.png")
    if curves is not None:
        plots["learning_curves"] = curves
    else:
        notes.append("no epochs.csv with per-epoch metrics: no learning curves")
    best_eval = evals.get(best_id)
    if best_eval is not None and best_eval.metrics is not None:
        plots["confusion_matrix"] = plot_confusion(run, best_eval.metrics, best_id,
                                                   plot_dir / "confusion_matrix.png")
    counts = None
    if test is not None:
        k = len(run.class_names)
        counts = dict(zip(run.class_names, np.bincount(test.y, minlength=k).tolist(), strict=False))
    plots["per_class_recall"] = plot_per_class_recall(run, table.iloc[0].to_dict(), counts,
                                                      plot_dir / "per_class_recall.png")
    op = None
    if len(run.class_names) == 2 and best_eval is not None and best_eval.proba is not None:
        op = operating_points(run, best_id, best_eval, test, train_path, target_recall, notes)
        if op is not None:
            plots["pr_curve"] = plot_pr_curve(run, op, plot_dir / "pr_curve.png")
    return RunReport(run=run, table=table, notes=notes, plots=plots, test_path=test_path,
                     test_counts=counts, operating=op, losses=loss_tables(run, table))


# ----------------------------------------------------------------------------- text


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


def _counts_text(counts: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in (counts or {}).items())


def _search_text(run: Run) -> str:
    s, t = run.summary, run.config.get("tune", {})
    alg = {"random": "random search", "optuna": "Optuna TPE search", "bohb": "BOHB search"}.get(
        s.get("search_alg"), f"{s.get('search_alg', '?')} search")
    sched = s.get("scheduler", "?")
    if sched == "asha":
        sched = (f"ASHA (grace period {t.get('grace_period', '?')} epoch(s), reduction factor "
                 f"{t.get('reduction_factor', '?')})")
    elif sched == "hyperband":
        sched = f"HyperBand (reduction factor {t.get('reduction_factor', '?')})"
    counts = ", ".join(f"{n} {k}" for k, n in (s.get("status_counts") or {}).items())
    return (f"Search: {alg}, scheduler {sched}; tuning metric {run.metric} ({run.mode}); "
            f"{s.get('trials', len(run.trials))} trials ({counts}) in "
            f"{_fmt_seconds(s.get('wall_s'))} wall time")


def overview_lines(r: RunReport) -> list[str]:
    """The facts about a run: dataset, fixed settings, search, best trial."""
    run, d = r.run, r.run.dataset_info
    lines = [f"Run: {run.path}"]
    if d:
        lines.append(f"Dataset: {run.dataset} ({len(run.class_names)} classes); train table "
                     f"{d.get('train_table', '?')}: {d.get('train_rows', '?')} training beats "
                     f"({_counts_text(d.get('train_counts'))}) and {d.get('val_rows', '?')} "
                     f"validation beats ({_counts_text(d.get('val_counts'))}), a stratified "
                     f"{d.get('val_fraction', '?')} split with seed {d.get('split_seed', '?')}")
    else:
        lines.append(f"Dataset: {run.dataset} (no dataset.json in the run)")
    if r.test_counts is not None:
        lines.append(f"Test table: {r.test_path}: {sum(r.test_counts.values())} beats "
                     f"({_counts_text(r.test_counts)})")
    else:
        lines.append(f"Test table: {r.test_path}: not available")
    c, tuned = run.config, {p.path for p in run.params}
    fixed = [("model.name", f"model {c.model.name}"), ("train.loss", f"loss {c.train.loss}"),
             ("train.optimizer", f"optimiser {c.train.optimizer}"),
             ("train.epochs", f"at most {c.train.epochs} epochs"),
             ("train.select_metric", f"checkpoints selected by {c.train.select_metric}")]
    if len(run.class_names) == 2 and c.train.get("target_recall", 0):
        fixed.append(("train.target_recall",
                      f"stored threshold for recall {c.train.target_recall:g}"))
    lines.append("Fixed settings: " + ", ".join(text for path, text in fixed if path not in tuned))
    lines.append(_search_text(run))
    lines.append("Search space: " + ("; ".join(_space_text(p) for p in run.params) or "(none)"))
    b = r.table.iloc[0]
    best = (f"Best trial: {b['trial_id']} ({b['status']}), {metric_label(run.metric)} "
            f"{b[run.metric]:.3f}")
    if not _isnan(b.get("test_macro_recall")):
        best += (f"; test macro recall {b['test_macro_recall']:.3f}, macro F1 "
                 f"{b['test_macro_f1']:.3f}, accuracy {b['test_accuracy']:.3f}")
    lines.append(best)
    return lines


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
    if thr is None or len(r.run.class_names) != 2 or not (thr.fillna(0.5) != 0.5).any():
        return ""
    b = r.table.iloc[0]
    target = r.run.config.train.get("target_recall", 0)
    return (f"The test columns apply each checkpoint's stored threshold (chosen on validation for "
            f"train.target_recall {target:g}); the validation columns use arg-max. With arg-max on "
            f"test, the best trial has macro recall {b.get('test_argmax_macro_recall', np.nan):.3f}"
            f" and accuracy {b.get('test_argmax_accuracy', np.nan):.3f}; the column `test macro "
            "recall (arg-max)` and summary.csv's `test_argmax_*` compare like with like.")


# ----------------------------------------------------------------------------- summary.md


def _loss_cells(df: pd.DataFrame) -> tuple[list[str], list[str], list[list[str]]]:
    """Headers (short), column groups and text cells of a loss table."""
    headers, groups = [], []
    for c in df.columns:
        split = next((s for s in ("val", "test") if c.startswith(f"{s}_")), "")
        name = c.removeprefix(f"{split}_")
        if split:
            headers.append("macro\nR" if name == "macro_recall" else f"R\n{name[7:]}")
        else:
            headers.append(c.replace("_", " ").replace("class weight power", "cw power"))
        groups.append(split)
    rows = [[_fmt_metric(v) if c.startswith(("val_", "test_")) else fmt_value(v)
             for c, v in zip(df.columns, rec, strict=False)] for rec in df.itertuples(index=False)]
    return headers, groups, rows


def _md_run(r: RunReport, out: Path) -> list[str]:
    run = r.run
    lines = [f"## {run.name} ({run.dataset})", ""]
    lines += [f"- {ln}" for ln in overview_lines(r)] + [""]
    lines += [f"> Note: {note}" for note in r.notes] + ([""] if r.notes else [])
    cols = display_columns(run, r.table)
    right = ("params_count", "train_s", "epochs")
    align = "".join("l" if c.group in ("", "hp") and c.key not in right else "r" for c in cols)
    lines += [f"### Trials by {run.metric}", "",
              _md_table([c.md for c in cols], display_rows(run, r.table, cols), align), ""]
    if threshold_text(r):
        lines += [threshold_text(r), ""]
    if operating_text(r):
        lines += ["### Precision paid for recall", "", " ".join(operating_text(r)), ""]
    if r.losses:
        lines += ["### What the loss did to per-class recall", ""]
        for title, df in r.losses:
            _, _, rows = _loss_cells(df)
            headers = [c.replace("val_recall_", "val recall ")
                       .replace("test_recall_", "test recall ").replace("_", " ")
                       for c in df.columns]
            align = "".join("r" if df[c].dtype.kind in "fi" else "l" for c in df.columns)
            lines += [f"Mean recall per class over the trials, {title}:", "",
                      _md_table(headers, rows, align), ""]
    lines += ["### Plots", ""]
    for key, p in r.plots.items():
        rel = p.relative_to(out) if p.is_relative_to(out) else p
        lines += [f"![{key}]({rel.as_posix()})", ""]
    return lines


def write_markdown(reports: list[RunReport], path: Path) -> Path:
    """summary.md: per run its facts, the Table-3-style table, notes and plots."""
    intro = ("Each table follows Table 3 of *Attention Is All You Need*: the best trial is the "
             "base row and the others follow by the tuning metric; a blank hyperparameter cell "
             "means the trial used the base row's value (`n/a`: the field did not exist for it). "
             "Validation metrics are the tuning run's, at each trial's best epoch with the "
             "arg-max rule; test metrics come from each trial's best checkpoint on the held-out "
             "test table with the checkpoint's own decision rule, as `python -m "
             "heartjax.evaluate` reports them. Stopped trials were ended early by the scheduler "
             "and trained fewer epochs.")
    lines = ["# heartjax tuning report", "", intro, ""]
    for r in reports:
        lines += _md_run(r, path.parent)
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------- report.pdf

GROUP_TITLES = {"hp": ("hyperparameters (blank = as base)", "hyperparameters", "hp"),
                "val": ("validation (best epoch, arg-max)", "validation", "val"),
                "test": ("test (best checkpoint, its decision rule)", "test", "test")}
GROUP_SHADES = {"hp": "#fff1cc", "val": "#d9e8f6", "test": "#daf0da", "": "#e6e6e6"}


def _draw_table(fig, headers: list[str], groups: list[str], rows: list[list[str]], top: float,
                bottom: float, base_row: bool = False, max_fs: float = 8.5) -> float:
    """A table drawn with text and rectangles below figure height `top`.

    It is sized in points so the font stays as large as the page width allows; the columns of a
    group share a titled band. Returns the figure height of its bottom edge.
    """
    import matplotlib.patches as mpatches

    chars = [max([len(x) for x in h.split("\n")] + [len(r[j]) for r in rows]) + 2.2
             for j, h in enumerate(headers)]
    fs = min(max_fs, 0.96 * PAGE[0] * 72 / (sum(chars) * 0.6))  # DejaVu Sans: ~0.6 em a char
    widths = [c * fs * 0.6 for c in chars]
    row_h = fs * 1.75
    head_lines = max(h.count("\n") + 1 for h in headers)
    heights = [row_h * 1.1, row_h * (0.55 + 0.55 * head_lines)] + [row_h] * len(rows)
    W, H = sum(widths), sum(heights)
    h_frac = min(H / (PAGE[1] * 72), top - bottom)
    ax = fig.add_axes([0.02, top - h_frac, W / (PAGE[0] * 72), h_frac])
    ax.set_xlim(0, W)
    ax.set_ylim(-H, 0)
    ax.axis("off")
    xs = np.r_[0.0, np.cumsum(widths)]
    ys = -np.r_[0.0, np.cumsum(heights)]
    j = 0
    while j < len(headers):  # a band with the group's title over each run of its columns
        k = j
        while k + 1 < len(headers) and groups[k + 1] == groups[j]:
            k += 1
        if groups[j]:
            span = xs[k + 1] - xs[j]
            title = next((t for t in GROUP_TITLES.get(groups[j], (groups[j],))
                          if len(t) * fs * 0.6 < span - 4), "")
            ax.add_patch(mpatches.Rectangle((xs[j] + 1, ys[1] + 1), span - 2, heights[0] - 2,
                                            fc=GROUP_SHADES.get(groups[j], "#e6e6e6"), ec="none"))
            ax.text((xs[j] + xs[k + 1]) / 2, (ys[0] + ys[1]) / 2, title, ha="center",
                    va="center", fontsize=fs, fontweight="bold")
        j = k + 1
    for j, h in enumerate(headers):
        ax.add_patch(mpatches.Rectangle((xs[j], ys[2]), widths[j], heights[1], ec="white", lw=1,
                                        fc=GROUP_SHADES.get(groups[j], "#e6e6e6")))
        ax.text((xs[j] + xs[j + 1]) / 2, (ys[1] + ys[2]) / 2, h, ha="center", va="center",
                fontsize=fs, fontweight="bold", linespacing=1.1)
    for i, r in enumerate(rows):
        y0, y1 = ys[2 + i], ys[3 + i]
        bold = i == 0 and base_row
        if bold or i % 2 == 1:
            ax.add_patch(mpatches.Rectangle((0, y1), W, row_h, ec="none",
                                            fc="#fff8dc" if bold else "#f4f4f4"))
        for j, text in enumerate(r):
            ax.text((xs[j] + xs[j + 1]) / 2, (y0 + y1) / 2, text, ha="center", va="center",
                    fontsize=fs, fontweight="bold" if bold else "normal")
    for y, lw in [(ys[2], 0.8), (ys[-1], 0.8)] + ([(ys[3], 0.5)] if base_row else []):
        ax.plot([0, W], [y, y], color="black" if lw > 0.5 else "0.4", lw=lw)
    return top - h_frac


def _wrap(lines: Sequence[str], width: int) -> list[str]:
    out = []
    for ln in lines:
        out += textwrap.wrap(ln, width, subsequent_indent="    ") or [""]
    return out


def _overview_page(pdf, r: RunReport) -> None:
    """Page 1 of a run: what was searched on which data, the table, and the loss table."""
    plt = _plt()
    run = r.run
    fig = plt.figure(figsize=PAGE)
    fig.text(0.02, 0.965, f"heartjax tuning report: {run.name}", fontsize=17,
             fontweight="bold", va="top")
    fig.text(0.02, 0.922, f"{run.path} · {run.dataset} · generated "
             f"{time.strftime('%Y-%m-%d %H:%M')}", fontsize=9, color="0.35", va="top")
    body = overview_lines(r)[1:] + operating_text(r)[:2] + [f"Note: {n}" for n in r.notes]
    y = 0.885
    for ln in _wrap(body, 160):
        fig.text(0.02, y, ln, fontsize=9, va="top")
        y -= 0.0235
    shown = min(TOP_PDF_ROWS, len(r.table))
    what = (f"All {shown} trials" if shown == len(r.table)
            else f"Top {shown} of {len(r.table)} trials")
    key = (f"{what} by {run.metric}: the base row is the best trial; a blank hyperparameter is "
           "the base row's value; R = recall, acc = accuracy.")
    y -= 0.012
    for ln in _wrap([key], 150):
        fig.text(0.02, y, ln, fontsize=9, fontweight="bold", va="top")
        y -= 0.0235
    cols = display_columns(run, r.table)
    rows = display_rows(run, r.table, cols, TOP_PDF_ROWS)
    y = _draw_table(fig, [c.pdf for c in cols], [c.group for c in cols], rows, y - 0.008, 0.03,
                    base_row=True) - 0.035
    for title, df in r.losses[:1]:  # the finer split (by power) is in summary.md
        headers, groups, rows = _loss_cells(df)
        if y - (len(rows) + 4) * 0.026 < 0.02:
            break
        fig.text(0.02, y, "What the loss did to per-class recall: mean recall over the trials, "
                 f"{title}", fontsize=9, fontweight="bold", va="top")
        _draw_table(fig, headers, groups, rows, y - 0.03, 0.02, max_fs=8)
    pdf.savefig(fig)
    plt.close(fig)


def _place_images(fig, images: Sequence[Path], box: tuple[float, float, float, float]) -> None:
    """PNGs side by side in the figure rectangle `box` (x, y, w, h), aspect kept."""
    x, y, w, h = box
    cell = w / len(images)
    for k, img in enumerate(images):
        ax = fig.add_axes([x + k * cell, y, cell, h])
        ax.imshow(_plt().imread(img), interpolation="antialiased")
        ax.axis("off")


def _page(title: str):
    fig = _plt().figure(figsize=PAGE)
    fig.text(0.5, 0.975, title, fontsize=13, fontweight="bold", ha="center", va="top")
    return fig


def _metric_grid(fig, run: Run, params: list[Param], height: float, per_row: int) -> None:
    """Compact metric-vs-hyperparameter scatters in rows at the bottom of a page."""
    nrows = math.ceil(len(params) / per_row)
    w, row_h = 0.94 / per_row, height / nrows
    axes = []
    for i, q in enumerate(params):
        r, c = divmod(i, per_row)
        ax = fig.add_axes([0.05 + c * w, 0.115 + (nrows - 1 - r) * row_h, w - 0.045,
                           row_h - 0.085])
        _draw_metric_vs_param(ax, run, q, compact=True)
        ax.tick_params(labelsize=8)
        ax.xaxis.label.set_size(8.5)
        if c == 0:
            ax.set_ylabel(f"{metric_label(run.metric)} (0-1)", fontsize=8.5)
        axes.append(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 0.005))


def _plot_pages(pdf, r: RunReport) -> None:
    """Pages 2+ of a run: the search (learning curves, parallel coordinates), then the best
    model on test and the tuning metric against each hyperparameter."""
    plt = _plt()
    p, run = r.plots, r.run
    search = [p[k] for k in ("learning_curves", "parallel_coordinates") if k in p]
    if search:
        fig = _page(f"{run.name}: how the search went")
        h = 0.92 / len(search)
        for i, img in enumerate(search):
            _place_images(fig, [img], (0.02, 0.94 - (i + 1) * h, 0.96, h - 0.01))
        pdf.savefig(fig)
        plt.close(fig)
    best = [p[k] for k in ("confusion_matrix", "per_class_recall", "pr_curve") if k in p]
    params = [q for q in run.params if _plot_key(q) in p]
    per_row = 5
    pages = [(best, params[:per_row])]
    pages += [([], params[i:i + 2 * per_row]) for i in range(per_row, len(params), 2 * per_row)]
    where = "on test" if "confusion_matrix" in p else "(no test metrics)"
    for n, (top, chunk) in enumerate(pages):
        if n == 0:
            title = (f"{run.name}: the best trial {run.ranked['trial_id'].iloc[0]} {where}, and "
                     f"{metric_label(run.metric)} against each hyperparameter")
        else:
            title = f"{run.name}: {metric_label(run.metric)} against each hyperparameter (cont.)"
        fig = _page(title)
        y_split = 0.39 if top and chunk else 0.03
        if top:
            _place_images(fig, top, (0.01, y_split, 0.98, 0.935 - y_split))
        if chunk:
            _metric_grid(fig, run, chunk, 0.31 if top else 0.86, per_row)
        pdf.savefig(fig)
        plt.close(fig)


def write_pdf(reports: list[RunReport], path: Path) -> Path:
    """report.pdf: per run an overview page and its key plots."""
    _plt()
    from matplotlib.backends.backend_pdf import PdfPages

    meta = {"Title": "heartjax tuning report", "Creator": "heartjax.report"}
    with PdfPages(path, metadata=meta) as pdf:
        for r in reports:
            _overview_page(pdf, r)
            _plot_pages(pdf, r)
    return path


# ----------------------------------------------------------------------------- entry points


def _unique_names(runs: list[Run]) -> None:
    """Two runs in folders of the same name get their parent folder's name as a prefix."""
    seen: set[str] = set()
    for run in runs:
        name, k = run.name, 2
        if name in seen:
            name = f"{run.path.parent.name}-{run.name}"
        while name in seen:
            name, k = f"{run.name}-{k}", k + 1
        run.name = name
        seen.add(name)


def build_report(run_dirs: Sequence[str | Path], out: str | Path,
                 data_dir: str | Path | None = None, target_recall: float = 0.99) -> dict[str, Any]:
    """Write summary.md, summary.csv, report.pdf and the PNG plots of `run_dirs` into `out`.

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
    _unique_names(runs)
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    plt = _plt()
    with plt.rc_context(STYLE):
        reports = [report_run(run, out if len(runs) == 1 else out / run.name, data_dir,
                              float(target_recall)) for run in runs]
        csv = out / "summary.csv"
        pd.concat([r.table for r in reports], ignore_index=True).to_csv(csv, index=False)
        md = write_markdown(reports, out / "summary.md")
        pdf = write_pdf(reports, out / "report.pdf")
    return {
        "out": out, "markdown": md, "csv": csv, "pdf": pdf,
        "runs": [{"name": r.run.name, "path": r.run.path, "metric": r.run.metric,
                  "table": r.table, "plots": r.plots, "notes": r.notes,
                  "operating_point": r.operating, "loss_tables": r.losses} for r in reports],
    }


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m heartjax.report",
        description="Report on finished tuning runs: a summary table per run (the best trial as\n"
                    "the base row, the other trials by the tuning metric; validation and test\n"
                    "metrics), PNG plots and a PDF. Each trial's best checkpoint is evaluated\n"
                    "on the dataset's test table.",
        epilog="example:\n"
               "  python -m heartjax.report runs/mitbih runs/ptb-smoke --out reports/tuning\n"
               "writes summary.md, summary.csv, report.pdf and the PNG plots (those of each run\n"
               "in OUT/<run name> when several runs are given)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="a tuning run folder (the --workdir of `python -m heartjax.tune`)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the report (created; report files in it are replaced)")
    parser.add_argument("--data-dir", default=None, metavar="D",
                        help="folder with the dataset's train and test tables "
                             "(default: each run's config data.dir)")
    parser.add_argument("--target-recall", type=float, default=0.99, metavar="R",
                        help="binary datasets: recall of the positive class to reach; its "
                             "threshold is chosen on the validation split and shown on the test "
                             "PR curve (default 0.99)")
    args = parser.parse_args(argv)
    result = build_report(args.run_dirs, args.out, args.data_dir, args.target_recall)
    for r in result["runs"]:
        b, metric = r["table"].iloc[0], r["metric"]
        test = b.get("test_macro_recall")
        print(f"{r['name']}: {len(r['table'])} trials; best {b['trial_id']} {metric} "
              f"{b[metric]:.3f}" + (f", test macro recall {test:.3f}" if not _isnan(test) else
                                    ", no test metrics"))
    print(f"report: {result['markdown']}, {result['csv']}, {result['pdf']}")


if __name__ == "__main__":
    main()
