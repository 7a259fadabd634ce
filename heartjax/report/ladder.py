"""What a search on the fidelity ladder did: trials per rung, compilation's share, the best
result against wall time, each trial's climb, and the untuned original beside the tuned winner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from heartjax.report.formatting import fmt_seconds, metric_label
from heartjax.report.plots import _save, pyplot
from heartjax.report.runs import Run

TOP = 8  # trials drawn in colour on the rung plot


def ladder_lines(run: Run) -> list[str]:
    """The overview's facts about the ladder and the full-fidelity winner."""
    s = run.summary
    lines = []
    if s.get("ladder"):
        rungs = "; ".join(f"rung {r['rung']}: {r['trials']} trials of {r['beats']:,} beats on a "
                          f"{r['pool']:,}-beat pool" for r in s["ladder"])
        lines.append(f"Fidelity ladder (budget in training beats seen): {rungs}")
        per_hour = s["configurations"] / max(s["wall_s"], 1e-9) * 3600
        share = s.get("compile_share")
        lines.append(f"{s['configurations']} configurations in {fmt_seconds(s['wall_s'])} of "
                     f"search ({per_hour:.0f} an hour)"
                     + (f"; compilation took {share:.0%} of the trials' time" if share else ""))
    for key, what in (("retrained", "Winner retrained"), ("original", "Untuned original")):
        r = s.get(key)
        if r:
            lines.append(f"{what} at full fidelity ({run.config.train.epochs} epochs at most, "
                         f"{fmt_seconds(r['train_s'])}, best epoch {r['epoch']}): validation "
                         f"macro recall {r['val_macro_recall']:.3f}, accuracy "
                         f"{r['val_accuracy']:.3f}, macro F1 {r['val_macro_f1']:.3f}")
    return lines


def best_so_far(frame: pd.DataFrame, metric: str, started: float) -> pd.DataFrame:
    """(minutes since the start, best metric reported so far) at each new best."""
    if frame.empty or metric not in frame or "timestamp" not in frame:
        return pd.DataFrame(columns=["minutes", "best"])
    f = frame[["timestamp", metric]].dropna().sort_values("timestamp")
    best = f[metric].cummax()
    keep = best.ne(best.shift())
    return pd.DataFrame({"minutes": (f["timestamp"][keep] - started) / 60.0,
                         "best": best[keep]}).reset_index(drop=True)


def run_results(run: Run) -> pd.DataFrame:
    """Every report of the run: one row per rung (ladder) or per epoch."""
    return run.rungs if not run.rungs.empty else run.epochs


def best_at(runs: list[Run], minutes: tuple[float, ...] = (15, 30, 60)) -> pd.DataFrame:
    """Per run, the best validation metric reported within each of `minutes` of wall time (NaN
    before its first report), its configurations and its search."""
    rows = []
    for run in runs:
        started = run.summary.get("started_at")
        curve = best_so_far(run_results(run), run.metric, started) if started else None
        row: dict[str, Any] = {"run": run.name, "search": _search_name(run),
                               "configurations": run.summary.get("configurations", len(run.trials))}
        for m in minutes:
            seen = curve[curve["minutes"] <= m] if curve is not None else pd.DataFrame()
            row[f"best at {m:g} min"] = float(seen["best"].iloc[-1]) if len(seen) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_best_so_far(runs: list[Run], path: Path) -> Path | None:
    """Best validation metric so far against wall time, one step line per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    drawn = False
    for run in runs:
        started = run.summary.get("started_at")
        curve = best_so_far(run_results(run), run.metric, started) if started else None
        if curve is None or curve.empty:
            continue
        end = run.summary.get("wall_s", 0) / 60
        x = np.append(curve["minutes"].to_numpy(), max(end, curve["minutes"].max()))
        y = np.append(curve["best"].to_numpy(), curve["best"].iloc[-1])
        ax.step(x, y, where="post", lw=2, label=f"{run.name} ({_search_name(run)})")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel(f"best {metric_label(runs[0].metric)} so far")
    ax.set_title("best validation result so far (any rung or epoch)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def _search_name(run: Run) -> str:
    s = run.summary
    fidelity = "ladder" if s.get("ladder") else "full fidelity"
    return f"{s.get('search_alg', '?')}, {s.get('scheduler', '?')}, {fidelity}"


def plot_rungs(run: Run, path: Path) -> Path | None:
    """Each trial's validation metric at each rung it reached (x: beats seen, log scale)."""
    r = run.rungs
    if r.empty or run.metric not in r:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    top = list(run.ranked["trial_id"].head(TOP))
    for tid, g in r.groupby("trial_id", sort=False):
        if tid not in top:
            ax.plot(g["budget"], g[run.metric], color="0.75", lw=0.8, marker=".", ms=3, zorder=1)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, tid in enumerate(top):
        g = r[r["trial_id"] == tid].sort_values("budget")
        ax.plot(g["budget"], g[run.metric], color=colors[i % len(colors)], lw=2.4 if i == 0 else 1.4,
                marker="o", ms=4, zorder=3, label=tid + (" (winner)" if i == 0 else ""))
    ax.set_xscale("log", base=2)
    budgets = sorted(r["budget"].unique())
    counts = r.groupby("budget")["trial_id"].nunique()
    ax.set_xticks(budgets, [f"{b / 1000:.0f}k\n{counts[b]} trials" for b in budgets])
    ax.set_xlabel("training beats seen (rung)")
    ax.set_ylabel(metric_label(run.metric))
    ax.set_title(f"{run.name}: the ladder (grey: trials the scheduler stopped)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


COMPARED = (("original", "untuned original"), ("best", "tuned"))


def compare_original(run: Run, test) -> pd.DataFrame | None:
    """The untuned original and the tuned winner, both trained at full fidelity, on `test`:
    accuracy, macro recall and F1, recall and precision per class, parameters, training time."""
    from heartjax import metrics
    from heartjax.checkpoint import has_checkpoints, load_checkpoint

    dirs = {key: run.path / key for key, _ in COMPARED}
    if test is None or not all(has_checkpoints(d) for d in dirs.values()):
        return None
    rows = []
    for key, label in COMPARED:
        p = load_checkpoint(dirs[key])
        proba = p.predict_proba(test.x, test.rr if p.needs_rr else None, test.records)
        m = metrics.evaluate_predictions(test.y, proba, p.class_names, p.threshold)
        info: dict[str, Any] = run.summary.get("original" if key == "original" else "retrained", {})
        row = {"model": label, "architecture": p.config.model.name,
               "test_accuracy": m["accuracy"], "test_macro_recall": m["macro_recall"],
               "test_macro_f1": m["macro_f1"]}
        for c, scores in m["per_class"].items():
            row[f"recall_{c}"] = scores["recall"]
            row[f"precision_{c}"] = scores["precision"]
        row.update({"params": p.meta.get("params"), "train_s": info.get("train_s"),
                    "val_macro_recall": info.get("val_macro_recall")})
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_markdown(df: pd.DataFrame, class_names: tuple[str, ...]) -> list[str]:
    """The original-vs-tuned table as markdown lines."""
    head = ["model", "architecture", "test accuracy", "test macro recall", "test macro F1",
            *[f"recall / precision {c}" for c in class_names], "parameters", "training time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.to_dict("records"):
        cells = [r["model"], r["architecture"], f"{r['test_accuracy']:.4f}",
                 f"{r['test_macro_recall']:.4f}", f"{r['test_macro_f1']:.4f}",
                 *[f"{r[f'recall_{c}']:.3f} / {r[f'precision_{c}']:.3f}" for c in class_names],
                 f"{r['params']:,}" if r.get("params") else "", fmt_seconds(r.get("train_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
