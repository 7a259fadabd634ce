"""The Table-3-style tables of a run (raw rows, one shown table per architecture, cells) and its
loss tables."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from heartjax.report.evaluation import TrialEval
from heartjax.report.formatting import fmt_count, fmt_metric, fmt_seconds, fmt_value, missing, same
from heartjax.report.runs import RANGES, Param, Run, within_run


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
            row["checkpoint"] = within_run(e.checkpoint, run.path)
        elif e is not None:
            row["test_error"] = e.error
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TrialGroup:
    """The trials of one architecture, as one shown table."""

    model: str
    table: pd.DataFrame  # its rows of the run's table, best first
    params: list[Param]  # the searched fields whose values differ among these trials
    fixed: dict[str, Any]  # display name -> value: searched fields alike in every trial here


def model_groups(run: Run, table: pd.DataFrame) -> list[TrialGroup]:
    """The rows of `table` per architecture (`model.name`), the best trial's first.

    Each architecture has its own fields, so one table of all of them is mostly `n/a`; a group
    keeps the searched fields that vary among its trials, and lists those that do not.
    """
    col = "param:model.name"
    names = (table[col].fillna(run.config.model.name).astype(str) if col in table
             else pd.Series(run.config.model.name, index=table.index))
    groups = []
    for model in dict.fromkeys(names):
        rows = table[names == model].reset_index(drop=True)
        present = [p for p in run.params if p.path != "model.name" and p.column in rows
                   and rows[p.column].notna().any()]  # all n/a: not a field of this model
        names_here = _group_names(model, present)
        varying, fixed = [], {}
        for p in present:
            if rows[p.column].nunique(dropna=False) > 1:
                varying.append(replace(p, name=names_here[p.path]))
            else:
                fixed[names_here[p.path]] = rows[p.column].iloc[0]
        groups.append(TrialGroup(model, rows, varying, fixed))
    return groups


def _group_names(model: str, params: list[Param]) -> dict[str, str]:
    """Short names within one architecture's table: `model.resnet1d.channels` is `channels`
    there, unless another field there ends the same way."""
    inner = {p.path: p.path.removeprefix(f"model.{model}.") for p in params}
    last = [v.rsplit(".", 1)[-1] for v in inner.values()]
    return {k: v.rsplit(".", 1)[-1] if last.count(v.rsplit(".", 1)[-1]) == 1 else v
            for k, v in inner.items()}


@dataclass(frozen=True)
class Column:
    """A column of the shown table: its key in the raw table, its headers and its group."""

    key: str
    md: str  # header in summary.md
    pdf: str  # header in the PDF (two short lines)
    group: str  # "" | "hp" | "val" | "test"


def _any(table: pd.DataFrame, key: str) -> bool:
    return key in table and table[key].notna().any()


def display_columns(run: Run, table: pd.DataFrame,
                    params: list[Param] | None = None) -> list[Column]:
    """The columns of a Table-3-style table, in order: `params` (default: all the run's
    searched fields), then the metrics (PDF headers are short: the PDF groups them under
    hyperparameters / validation / test)."""
    cols = [Column("rank", "", "", ""), Column("trial_id", "trial", "trial", ""),
            Column("status", "status", "status", "")]
    cols += [Column(p.column, p.name, p.short.replace("_", "\n", 1), "hp")
             for p in (run.params if params is None else params)]
    cols += [Column("epochs", "best/ran epochs", "epochs\nbest/ran", ""),
             Column("params_count", "params", "params", ""),
             Column("train_s", "train time", "train\ntime", "")]
    for split in ("val", "test"):
        if split == "test" and run.binary and _any(table, "test_threshold"):
            cols.append(Column("test_threshold", "test threshold", "thresh-\nold", "test"))
        cols += [Column(f"{split}_macro_recall", f"{split} macro recall", "macro\nR", split),
                 Column(f"{split}_macro_f1", f"{split} macro F1", "macro\nF1", split),
                 Column(f"{split}_accuracy", f"{split} accuracy", "acc", split)]
        cols += [Column(f"{split}_recall_{c}", f"{split} recall {c}", f"R\n{c}", split)
                 for c in run.class_names]
        if split == "test" and _any(table, "test_argmax_macro_recall"):
            # the validation columns use arg-max: this one compares like with like
            cols.append(Column("test_argmax_macro_recall", "test macro recall (arg-max)",
                               "macro R\narg-max", "test"))
    return cols


def _cell(c: Column, r: dict[str, Any], first: dict[str, Any]) -> str:
    """One cell as text; a hyperparameter equal to the table's first row's is blank."""
    v = r.get(c.key)
    if c.key == "rank":
        return "base" if r["base"] else str(r["rank"])
    if c.group == "hp":
        return fmt_value(v) if r is first or not same(v, first.get(c.key)) else ""
    if c.key == "epochs":
        be, ep = r.get("best_epoch"), r.get("epochs")
        return "" if missing(ep) else f"{fmt_value(be)}/{fmt_value(ep)}"
    if c.key == "params_count":
        return fmt_count(v)
    if c.key == "train_s":
        return fmt_seconds(v)
    if c.key in ("trial_id", "status"):
        return str(v)
    return fmt_metric(v)


def display_rows(run: Run, table: pd.DataFrame, cols: list[Column],
                 limit: int | None = None) -> list[list[str]]:
    """Cells as text: the first row in full, the others blank where they equal it."""
    records = table.to_dict("records")[:limit]
    return [[_cell(c, r, records[0]) for c in cols] for r in records]


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
    metrics_cols += [c for c in test_cols if _any(df, c)]
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


def loss_cells(df: pd.DataFrame) -> tuple[list[str], list[str], list[list[str]]]:
    """Short headers, column groups and text cells of a loss table (for the PDF)."""
    headers, groups = [], []
    for c in df.columns:
        split = next((s for s in ("val", "test") if c.startswith(f"{s}_")), "")
        name = c.removeprefix(f"{split}_")
        if split:
            headers.append("macro\nR" if name == "macro_recall" else f"R\n{name[7:]}")
        else:
            headers.append(c.replace("_", " ").replace("class weight power", "cw power"))
        groups.append(split)
    return headers, groups, loss_rows(df)


def loss_rows(df: pd.DataFrame) -> list[list[str]]:
    """The cells of a loss table as text: metrics with three decimals."""
    return [[fmt_metric(v) if c.startswith(("val_", "test_")) else fmt_value(v)
             for c, v in zip(df.columns, rec, strict=False)] for rec in df.itertuples(index=False)]
