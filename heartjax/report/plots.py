"""The report's PNG plots, one function per file; the PDF reuses the metric-vs-param scatter."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heartjax.report.formatting import decision_rule, fmt_value, metric_label, missing
from heartjax.report.runs import RANGES, Param, Run

STATUS_COLORS = {"finished": "tab:blue", "stopped": "tab:orange", "error": "tab:red",
                 "interrupted": "tab:gray"}
STATUS_LABELS = {"finished": "finished", "stopped": "stopped early by the scheduler",
                 "error": "error", "interrupted": "interrupted"}
TOP_CURVES = 5  # trials drawn in colour in learning_curves.png
TOP_PARALLEL = 10  # trials in parallel_coordinates.png
DPI = 150
# Matplotlib style of every figure; applied per report so a caller's settings stay untouched.
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
         "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12}


def pyplot():
    """matplotlib.pyplot on the Agg backend: files only, no display on servers and CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    pyplot().close(fig)
    return path


def plot_key(p: Param) -> str:
    """The name of a hyperparameter's plot: `metric_vs_<param>`."""
    return f"metric_vs_{p.name.replace('.', '_')}"


def _tick(v: float) -> str:
    """A compact tick label: 0.001, 5e-5."""
    text = f"{v:g}"
    return text.replace("e-0", "e-").replace("e+0", "e")


def _positions(p: Param, values: pd.Series) -> tuple[np.ndarray, list[str] | None]:
    """x positions of a parameter's values; category names for a choice."""
    if p.kind == "choice" or not pd.api.types.is_numeric_dtype(values):
        cats = [fmt_value(c) for c in (p.args[0] if p.kind == "choice" and p.args else [])]
        for v in values:
            if fmt_value(v) not in cats:
                cats.append(fmt_value(v))
        return np.array([cats.index(fmt_value(v)) for v in values], float), cats
    return values.to_numpy(float), None


def _log_axis(ax, p: Param, compact: bool) -> None:
    """A log x axis with ticks that suit the decades the search spans."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    decades = math.log10(float(p.args[1]) / float(p.args[0])) if len(p.args) >= 2 else 2.0
    subs = ((1.0, 3.0) if compact else (1.0, 2.0, 5.0)) if decades <= 1.2 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw_metric_vs_param(ax, run: Run, p: Param, compact: bool = False) -> None:
    """Scatter of every trial with a metric on `ax`: tuning metric against one hyperparameter."""
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
    best = (df["trial_id"] == run.best_id).to_numpy()
    if best.any():
        ax.scatter(x[best], y[best], marker="*", s=size * 5, color="gold", edgecolor="black",
                   lw=0.8, label="best trial (base row)", zorder=4)
    log = p.kind == "loguniform"
    if cats is not None:
        ax.set_xticks(range(len(cats)), cats)
        ax.set_xlim(-0.6, len(cats) - 0.4)
    elif log:
        _log_axis(ax, p, compact)
    if cats is None and len(p.args) >= 2 and p.kind in RANGES:
        lo, hi = float(p.args[0]), float(p.args[1])  # the whole searched range
        if log:
            ax.set_xlim(lo / 1.2, hi * 1.2)
        else:
            pad = 0.05 * (hi - lo or 1.0)
            ax.set_xlim(lo - pad, hi + pad)
    if compact:
        unit = f" ({p.unit})" if p.unit else ""
        ax.set_xlabel(p.name + unit + ("\nlog scale" if log else ""))
        ax.set_title(p.path, fontsize=10)
    else:
        ax.set_xlabel(p.label + (", log scale" if log else ""))
        ax.set_ylabel(f"{metric_label(run.metric)} (0-1)\nat each trial's best epoch")
        ax.set_title(f"{run.name}: {metric_label(run.metric)} vs {p.name}")
    ax.grid(alpha=0.3)


def plot_metric_vs_param(run: Run, p: Param, path: Path) -> Path:
    """metric_vs_<param>.png: every trial's tuning metric against one hyperparameter."""
    fig, ax = pyplot().subplots(figsize=(6.4, 4.6))
    draw_metric_vs_param(ax, run, p)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, frameon=False)
    return _save(fig, path)


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
    f = np.log if p.kind == "loguniform" and lo > 0 else np.asarray
    span = float(f(hi) - f(lo)) or 1.0
    return (f(v) - f(lo)) / span, [(0.0, fmt_value(lo)), (1.0, fmt_value(hi))]


def _parallel_axes(run: Run, top: pd.DataFrame) -> list[tuple[str, np.ndarray, list]]:
    """(label, positions on [0, 1], ticks) of each axis: the tuned parameters, then metrics."""
    axes = []
    for p in run.params:
        y, ticks = _normalise(p, top[p.column])
        axes.append((p.short + ("\n(log scale)" if p.kind == "loguniform" else ""), y, ticks))
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
    return axes


def plot_parallel(run: Run, table: pd.DataFrame, path: Path) -> Path:
    """Parallel coordinates of the top trials: tuned hyperparameters, then the metrics."""
    plt = pyplot()
    import matplotlib as mpl

    top = table.head(TOP_PARALLEL)
    axes = _parallel_axes(run, top)
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
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    top = list(run.ranked["trial_id"].head(TOP_CURVES))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))

    def draw(g: pd.DataFrame, **kw: Any) -> None:
        a1.plot(g["epoch"], g[run.metric], **kw)
        if "train_loss" in g:
            a2.plot(g["epoch"], g["train_loss"], **kw)

    grey = True
    for tid, g in ep.groupby("trial_id", sort=False):
        if tid not in top:
            draw(g.sort_values("epoch"), color="0.7", lw=0.9, marker=".", ms=3, zorder=1,
                 label="other trials" if grey else None)
            grey = False
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    scores = dict(zip(run.ranked["trial_id"], run.ranked[run.metric], strict=False))
    for i, tid in enumerate(top):
        draw(ep[ep["trial_id"] == tid].sort_values("epoch"), color=colors[i % len(colors)],
             lw=2.6 if i == 0 else 1.5, marker="o", ms=4, zorder=3 + (i == 0),
             label=f"{tid} ({scores[tid]:.3f}){' base' if i == 0 else ''}")
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
    names = run.class_names
    val = [row.get(f"val_recall_{c}", np.nan) for c in names]
    test = [row.get(f"test_recall_{c}", np.nan) for c in names]
    has_test = not all(missing(v) for v in test)
    x = np.arange(len(names))
    w = 0.38 if has_test else 0.6
    fig, ax = pyplot().subplots(figsize=(max(5.0, 1.25 * len(names) + 1.6), 4.4))
    bars = ax.bar(x - (w / 2 if has_test else 0), val, w, color="tab:blue",
                  label="validation (best epoch, arg-max)")
    ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=9)
    labels = list(names)
    if has_test:
        rule = decision_rule(row.get("test_threshold"), len(names))
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
    c = op["curve"]
    pos = op["positive"]
    fig, ax = pyplot().subplots(figsize=(5.4, 4.6))
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
    """The best model's test confusion matrix (`heartjax.evaluate.draw_confusion`), titled
    with the model, data and decision rule it shows."""
    from heartjax.evaluate import draw_confusion

    k = len(run.class_names)
    fig, ax = pyplot().subplots(figsize=(0.75 * k + 3.2, 0.7 * k + 2.5))
    im = draw_confusion(ax, m, run.class_names)
    ax.set_title(f"{run.name}: test confusion matrix, best trial {trial_id}\n"
                 f"rows sum to 1 (recall on the diagonal), "
                 f"{decision_rule(m.get('threshold'), k)}\n"
                 f"accuracy {m['accuracy']:.3f}, macro recall {m['macro_recall']:.3f}", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    return _save(fig, path)