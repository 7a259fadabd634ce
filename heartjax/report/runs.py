"""Reading and checking tuning run folders: the run, its tuned hyperparameters, ranked trials."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from heartjax.config import migrate
from heartjax.errors import UserError
from heartjax.report.formatting import status_counts

RANGES = ("uniform", "loguniform", "quniform", "randint")  # search kinds with a low and a high
REPORTED = ("finished", "stopped")
TOP_LADDER = 25  # trials a ladder run's table shows (of often 100 and more)  # trials the table shows; error/interrupted ones are counted
# Short names for the PDF table and plot labels; anything else shows its last path component.
SHORT = {"learning_rate": "lr", "weight_decay": "wd", "batch_size": "batch",
         "class_weight_power": "cw power", "warmup_epochs": "warmup", "focal_gamma": "gamma"}
UNITS = {"learning_rate": "peak step size", "weight_decay": "decay coefficient",
         "batch_size": "beats per step", "dropout": "drop probability",
         "class_weight_power": "exponent of n/n_c", "warmup_epochs": "epochs",
         "epochs": "epochs", "focal_gamma": "exponent", "channels": "channels",
         "num_blocks": "blocks"}


@dataclass(frozen=True)
class Param:
    """One tuned hyperparameter as the run's summary.json records it."""

    path: str
    kind: str
    args: tuple
    name: str  # unique short label (the last path component unless that is ambiguous)

    @property
    def column(self) -> str:
        """Its column in trials.csv."""
        return f"param:{self.path}"

    @property
    def unit(self) -> str | None:
        """What its values measure, if known."""
        return UNITS.get(self.path.rsplit(".", 1)[-1])

    @property
    def short(self) -> str:
        """The shortest label: for the PDF table and parallel coordinates."""
        return SHORT.get(self.name, self.name)

    @property
    def label(self) -> str:
        """The full label: path and unit."""
        return f"{self.path} ({self.unit})" if self.unit else self.path


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
    rungs: pd.DataFrame = field(default_factory=pd.DataFrame)  # ladder runs: a row per rung

    @property
    def dataset(self) -> str:
        """The dataset the run tuned on."""
        return self.config.data.dataset

    @property
    def class_names(self) -> tuple[str, ...]:
        """The dataset's classes, in label order."""
        from heartjax.data import CLASS_NAMES

        return CLASS_NAMES[self.dataset]

    @property
    def binary(self) -> bool:
        """Whether the dataset has two classes (thresholds, PR curves)."""
        return len(self.class_names) == 2

    @property
    def best_id(self) -> str:
        """The best reported trial: the base row."""
        return self.ranked["trial_id"].iloc[0]


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


def _nothing_to_report(p: Path, trials: pd.DataFrame, metric: str) -> UserError:
    """The error for a run without a reportable trial, with what to do next."""
    counts = status_counts(trials["status"].value_counts()) or "none"
    errors = trials["error"].dropna() if "error" in trials else pd.Series(dtype=str)
    if (trials["status"] == "interrupted").any():
        hint = "continue it with `python -m heartjax.tune ... --resume`"
    elif len(errors):
        hint = "the trials failed (see the error column of trials.csv); fix that, tune again"
    else:
        hint = "tune again"
    return UserError(f"{p}: no finished or stopped trial with {metric} to report (trials: "
                     f"{counts}); {hint}")


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
    try:  # a run of an earlier heartjax: its config in today's fields
        config = ml_collections.ConfigDict(migrate(_read_json(p / "config.json")))
    except (KeyError, TypeError, AttributeError):
        config = None
    if config is None or config.data.dataset not in CLASS_NAMES:
        raise UserError(f"{p / 'config.json'}: no known data.dataset; is the run folder damaged?")
    trials = _read_csv(p / "trials.csv")
    epochs = _read_csv(p / "epochs.csv") if (p / "epochs.csv").is_file() else pd.DataFrame()
    dataset_info = _read_json(p / "dataset.json") if (p / "dataset.json").is_file() else {}
    metric = summary.get("metric") or config.tune.metric
    mode = summary.get("mode") or config.tune.mode
    for col in ("trial_id", "status"):
        if col not in trials:
            raise UserError(f"{p / 'trials.csv'}: no {col!r} column; is the run folder damaged?")
    ok = trials["status"].isin(REPORTED)
    if metric in trials:
        ok &= trials[metric].notna()
    else:
        ok &= False
    if not ok.any():
        raise _nothing_to_report(p, trials, metric)
    rungs = _read_csv(p / "rungs.csv") if (p / "rungs.csv").is_file() else pd.DataFrame()
    # a ladder ranks by the rung reached first (a longer training), and shows its best trials
    keys = ["rung", metric] if "rung" in trials else [metric]
    ranked = trials[ok].sort_values(keys, ascending=mode == "min", kind="stable")
    if not rungs.empty:
        ranked = ranked.head(TOP_LADDER)
    return Run(path=p.absolute(), name=p.absolute().name, config=config, summary=summary,
               dataset_info=dataset_info, trials=trials, epochs=epochs,
               params=_params(summary, trials), metric=metric, mode=mode,
               ranked=ranked.reset_index(drop=True), rungs=rungs)


def within_run(path: str, root: Path) -> str:
    """`path` relative to the run folder `root` when it lies inside it, so that a written report
    names no machine's folders; any other string as it is."""
    p = Path(path)
    return p.relative_to(root).as_posix() if p.is_absolute() and p.is_relative_to(root) else path


def write_run_summary(run: Run, path: Path) -> Path:
    """The run's summary.json beside its report, with its paths relative to the run folder."""
    def relative(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: relative(x) for k, x in v.items()}
        if isinstance(v, list):
            return [relative(x) for x in v]
        return within_run(v, run.path) if isinstance(v, str) else v

    path.write_text(json.dumps(relative(run.summary), indent=2) + "\n")
    return path


def unique_names(runs: list[Run]) -> None:
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
