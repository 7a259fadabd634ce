"""A tuning run's tables, read from Ray's results: `trials.csv` (a row per trial, best first),
`rungs.csv` or `epochs.csv` (a row per trial and rung or epoch), `members.csv` (a population's
members) and `summary.json`; and the few lines printed at the end of a run.

Ray's own bookkeeping is read in one place, `_outcome`: a trial's id, its searched values and
its status as heartjax names it.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from heartjax import cluster, fidelity, population, space
from heartjax.errors import UserError

LADDER_COLUMNS = ("rung", "budget", "beats_seen", "pool", "train_loss", "beats_per_s", "compile_s",
                  "train_s", "eval_s", "timestamp")
EPOCH_COLUMNS = ("epoch", "train_loss", "beats_per_s", "epoch_s", "timestamp")


def trial_status(result, ray_state: str, cut: bool) -> str:
    """finished (its last rung or epoch, or an early stop), stopped (by the scheduler), error,
    or interrupted (--resume runs it again), from Ray's state of the trial (TERMINATED,
    ERROR, PAUSED, RUNNING, PENDING) and whether the search itself was cut short (`cut`)."""
    if result.error is not None or ray_state == "ERROR":
        return "error"
    if (result.metrics or {}).get("final"):
        # its last report is on disk, whatever Ray's state: HyperBandForBOHB can pause a trial
        # on the last report of a function that then returns, leaving it PAUSED
        return "finished"
    if ray_state == "TERMINATED" or (ray_state == "PAUSED" and not cut):
        # HyperBandForBOHB pauses a trial at a rung and may stop it there; when the stop meets
        # the pause's checkpoint, Ray can record it PAUSED in a search that ended by itself
        return "stopped"
    return "interrupted"


def run_was_cut(states: dict[str, str]) -> bool:
    """Whether the search ended with trials still to run (Ctrl-C or SIGTERM leave some RUNNING
    or PENDING); a search that ends by itself leaves none."""
    return any(s in ("RUNNING", "PENDING") for s in states.values())


def trial_values(trial_config: dict[str, Any]) -> dict[str, Any]:
    """A trial's searched values from its Ray config (BOHB passes them flat, the others under
    "params")."""
    return trial_config.get("params", trial_config)


def _outcome(results, ray_dir: Path) -> list[tuple[str, dict[str, Any], str, Any]]:
    """(trial id, searched values, status, Ray's result) of every trial."""
    from ray.tune import ExperimentAnalysis

    states = {t.trial_id: t.status for t in ExperimentAnalysis(str(ray_dir)).trials}
    cut = run_was_cut(states)
    out = []
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_")[1]
        status = trial_status(result, states.get(trial_id, ""), cut)
        out.append((trial_id, trial_values(result.config or {}), status, result))
    return out


def write_tables(workdir: Path, results, config: ml_collections.ConfigDict,
                 searched: list[space.Param], wall_s: float) -> dict[str, Any]:
    """Write the run's tables into `workdir`; returns the summary (also `summary.json`)."""
    t = config.tune
    rows, history, members, values_of = [], [], [], {}
    for trial_id, values, status, result in _outcome(results, cluster.experiment_dir(t.storage, workdir)):
        row, trial_history, trial_members = _trial(trial_id, values, status, result, t)
        rows.append(row)
        history += [trial_history] if trial_history is not None else []
        members += [trial_members] if trial_members is not None else []
        # the values the winner's full training trains: a population trial's best member's
        values_of[trial_id] = {k[len("param:"):]: v for k, v in row.items()
                               if k.startswith("param:")}
    if not rows:
        raise UserError(f"{workdir}: the tuning run produced no trials")
    trials = _ranked(pd.DataFrame(rows), t)
    trials.to_csv(workdir / "trials.csv", index=False)
    if history:
        pd.concat(history, ignore_index=True).to_csv(
            workdir / ("rungs.csv" if t.ladder else "epochs.csv"), index=False)
    if members:
        pd.concat(members, ignore_index=True).to_csv(workdir / "members.csv", index=False)
    summary = _summary(workdir, trials, history, members, values_of, config, searched, wall_s)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _trial(trial_id: str, values: dict[str, Any], status: str, result, t
           ) -> tuple[dict[str, Any], pd.DataFrame | None, pd.DataFrame | None]:
    """One trial's row of trials.csv, its rungs or epochs, and its members (or None)."""
    row: dict[str, Any] = {"trial_id": trial_id, "status": status,
                           **{f"param:{k}": v for k, v in values.items()}}
    df = result.metrics_dataframe
    history = None
    if df is not None and len(df) and t.metric in df:
        columns = LADDER_COLUMNS if t.ladder else EPOCH_COLUMNS
        history = df[[c for c in df.columns if c.startswith("val_") or c in columns]].copy()
        history.insert(0, "trial_id", trial_id)
        if t.ladder:  # its highest rung: its longest training
            top = df.iloc[-1]
            row.update({"rung": int(top["rung"]), "budget": int(top["budget"]),
                        "train_s": float(df["train_s"].sum() + df["eval_s"].sum()),
                        "compile_s": float(df["compile_s"].sum())})
        else:  # its best epoch
            top = df.loc[df[t.metric].idxmax() if t.mode == "max" else df[t.metric].idxmin()]
            row.update({"epochs": int(df["epoch"].max()), "best_epoch": int(top["epoch"]),
                        "train_s": float(df["epoch_s"].sum())})
        row.update({c: float(top[c]) for c in history.columns if c.startswith("val_")})
    # its run folder as of its last report, in the storage (none before a report)
    folder = Path(result.checkpoint.path) if result.checkpoint else Path(result.path)
    members = _members(folder, trial_id, t.metric)
    if members is not None:  # its checkpoint and metrics are its best member's: so are its values
        lead = members.loc[members[t.metric].idxmax()]
        row["member"] = int(lead["member"])
        row.update({f"param:{k}": _plain(lead[k]) for k in population.MEMBER_FIELDS if k in lead})
    if result.error is not None:
        row["error"] = _error_line(result.error)
    metrics = result.metrics or {}
    if "params" in metrics:
        row["params_count"] = int(metrics["params"])
    row.update({k: metrics[k] for k in cluster.WHERE if k in metrics})
    row["workdir"] = str(folder)
    return row, history, members


def _ranked(trials: pd.DataFrame, t: ml_collections.ConfigDict) -> pd.DataFrame:
    """Best first; on a ladder by the rung reached first (a longer training), then the metric."""
    if t.metric not in trials:
        return trials
    keys = ["rung", t.metric] if t.ladder else [t.metric]
    return trials.sort_values(keys, ascending=t.mode == "min", na_position="last")


def _summary(workdir: Path, trials: pd.DataFrame, history: list[pd.DataFrame],
             members: list[pd.DataFrame], values_of: dict[str, dict[str, Any]],
             config: ml_collections.ConfigDict, searched: list[space.Param],
             wall_s: float) -> dict[str, Any]:
    """summary.json: the run's counts, time, search, device and best trial."""
    t = config.tune
    ok = trials[trials["status"].isin(["finished", "stopped"])] if t.metric in trials else trials.iloc[:0]
    best = ok.iloc[0].to_dict() if len(ok) else {}
    started_at = time.time() - wall_s
    previous = workdir / "summary.json"
    if previous.exists():  # a resumed run: its wall time adds up over the parts it ran in
        before = json.loads(previous.read_text())
        wall_s += before.get("wall_s", 0.0)
        started_at = before.get("started_at", started_at)
    summary = {
        "metric": t.metric,
        "mode": t.mode,
        "num_samples": t.num_samples,
        "trials": int(len(trials)),
        "population": t.population,
        # configurations trained: each population trial trains `population` of them
        "configurations": int(sum(len(m) for m in members)) if members else int(len(trials)),
        "status_counts": trials["status"].value_counts().to_dict(),
        "wall_s": wall_s,
        "started_at": started_at,
        "search_alg": t.search_alg,
        "scheduler": t.scheduler,
        "search_space": [{"path": p.key, "kind": p.kind, "args": list(p.args), "when": p.when}
                         for p in searched],
        # what the trials computed on (trials.csv has each trial's node and GPU share)
        "device": {k: sorted(set(trials[k].dropna().astype(str)))
                   for k in ("backend", "device_kind") if k in trials},
        "best": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in best.items()},
        "best_values": values_of.get(best.get("trial_id"), {}),
    }
    if t.ladder:
        summary.update(_ladder_summary(trials, history, t))
    return summary


def _ladder_summary(trials: pd.DataFrame, history: list[pd.DataFrame],
                    t: ml_collections.ConfigDict) -> dict[str, Any]:
    """Trials per rung, the pools as drawn, configurations (every member counts), compile share."""
    reached = trials["rung"].dropna().astype(int) if "rung" in trials else pd.Series([], dtype=int)
    rungs = pd.concat(history, ignore_index=True) if history else pd.DataFrame(columns=["rung", "pool"])
    pools = rungs.groupby("rung")["pool"].first().to_dict()
    out: dict[str, Any] = {
        "ladder": [{"rung": k, "pool": int(pools.get(k, pool)), "beats": budget,
                    "trials": int((reached >= k).sum())}
                   for k, (pool, budget) in enumerate(zip(t.ladder, fidelity.rung_budgets(t)))],
        "configurations": int(len(reached)) * t.population,
    }
    if "compile_s" in trials:
        out["compile_share"] = float(trials["compile_s"].sum() / max(trials["train_s"].sum(), 1e-9))
    return out


def _members(trial_dir: Path, trial_id: str, metric: str) -> pd.DataFrame | None:
    """A population trial's members, one row each (None without a population): at its best
    epoch, or on a ladder at the trial's highest rung (scores of two rungs do not compare)."""
    path = trial_dir / "members.jsonl"
    if not path.exists() or not path.stat().st_size:
        return None
    df = pd.read_json(path, lines=True)
    if "rung" in df:
        df = df[df["rung"] == df["rung"].max()]
    df = df.dropna(subset=[metric])  # a diverged member has no score
    df = df.loc[df.groupby("member")[metric].idxmax()].reset_index(drop=True)
    df.insert(0, "trial_id", trial_id)
    return df if len(df) else None


def _plain(value: Any) -> Any:
    """A numpy scalar of a table as the Python value a config holds."""
    return value.item() if isinstance(value, np.generic) else value


def _error_line(error: BaseException) -> str:
    """The trial's own exception, not Ray's wrapper line (last line of the text, no colours)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal at the end of a run."""
    best, metric = summary["best"], summary["metric"]
    counts = ", ".join(f"{v} {k}" for k, v in summary["status_counts"].items())
    device = ", ".join(summary.get("device", {}).get("device_kind", []))
    lines = [f"{summary['trials']} trials ({counts}) in {summary['wall_s'] / 60:.1f} min"
             + (f" on {device}" if device else "")]
    if summary.get("population", 1) > 1:
        lines.append(f"populations of {summary['population']}: {summary['configurations']} "
                     "configurations trained")
    if summary.get("ladder"):
        per_hour = summary["configurations"] / max(summary["wall_s"], 1e-9) * 3600
        rungs = ", ".join(f"{r['rung']}: {r['trials']}" for r in summary["ladder"])
        lines.append(f"{summary['configurations']} configurations ({per_hour:.0f} an hour); "
                     f"trials per rung {rungs}")
    if summary["status_counts"].get("interrupted"):
        lines.append("the run was interrupted: the same command with --resume continues it")
    if best:
        nan = float("nan")
        lines.append(f"best trial {best['trial_id']}: {metric} {best.get(metric, nan):.4f} (val "
                     f"accuracy {best.get('val_accuracy', nan):.4f}, macro F1 "
                     f"{best.get('val_macro_f1', nan):.4f})")
        values = ", ".join(f"{k[6:]}={v:.4g}" if isinstance(v, float) else f"{k[6:]}={v}"
                           for k, v in best.items() if k.startswith("param:") and v is not None)
        if values:
            lines.append(f"  {values}")
    r = summary.get("retrained")
    if r:  # the winner's epoch was chosen by the tuned metric
        lines.append(f"winner retrained at full fidelity ({r['train_s'] / 60:.1f} min, best epoch "
                     f"{r['epoch']}): {metric} {r.get(metric, float('nan')):.4f}, accuracy "
                     f"{r['val_accuracy']:.4f}, macro F1 {r['val_macro_f1']:.4f}")
    return "\n".join(lines)
