"""`python -m heartjax.tune --config configs/mitbih.py --workdir runs/mitbih`: Ray Tune.

The config's `tune` section is the whole experiment: the search space (see heartjax.space),
the search algorithm, the scheduler, the fidelity ladder and the budget.

With a ladder (`tune.ladder`, see heartjax.fidelity) a trial climbs rungs of growing budget in
training beats seen, each a short training on a class-stratified pool, and ASHA keeps the best
1/`tune.reduction_factor` of each rung for the next; no trial checkpoint is written. With
`tune.folds` every rung trains one model per fold of the records and is scored out of fold
on all of them (cross-validation). When the search ends (all trials done, or
`tune.time_budget_s` spent) the winner, the best trial of the highest rung reached, is trained
at full fidelity (`train.epochs` on the whole split, as `heartjax.train`) into `WORKDIR/best`.
Without a ladder every trial runs `train_and_evaluate` into `WORKDIR/trials/<trial id>` and
reports every epoch.

Afterwards the run folder holds a tidy table of every trial (`trials.csv`, and `rungs.csv` or
`epochs.csv`) and `summary.json`; the run's best model is `heartjax.load_checkpoint(WORKDIR)`.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shlex
import shutil
import signal
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from heartjax import cluster, fidelity, population, space
from heartjax.config import validate
from heartjax.errors import UserError, cli_entry

SEARCH_ALGS = ("random", "optuna", "bohb")
SCHEDULERS = ("fifo", "asha", "hyperband")


def check_tune_config(config: ml_collections.ConfigDict) -> list[space.Param]:
    """Validate the tune section and its search space before Ray starts."""
    validate(config)
    t = config.tune
    if t.search_alg not in SEARCH_ALGS:
        raise UserError(f"bad config: tune.search_alg={t.search_alg!r}; use one of {', '.join(SEARCH_ALGS)}")
    if t.scheduler not in SCHEDULERS:
        raise UserError(f"bad config: tune.scheduler={t.scheduler!r}; use one of {', '.join(SCHEDULERS)}")
    if t.num_samples < 1:
        raise UserError(f"bad config: tune.num_samples={t.num_samples} must be >= 1")
    if t.population < 1:
        raise UserError(f"bad config: tune.population={t.population} must be >= 1")
    cluster.check_resources(t)
    from heartjax.metrics import SELECTABLE

    if t.metric not in {f"val_{m}" for m in SELECTABLE} or t.mode != "max":
        raise UserError(
            f"bad config: tune.metric={t.metric!r} (mode {t.mode}); tune a validation metric to "
            f"maximise: {', '.join('val_' + m for m in SELECTABLE)}"
        )
    if t.search_alg == "bohb":
        try:
            import ConfigSpace  # noqa: F401
            import hpbandster  # noqa: F401
        except ImportError:
            raise UserError("tune.search_alg=bohb needs `pip install hpbandster ConfigSpace`") from None
    fidelity.check_ladder(t)
    if t.folds and (t.folds < 2 or not t.ladder or config.data.val_by != "records"):
        raise UserError(f"bad config: tune.folds={t.folds}: use 0, or >= 2 with a tune.ladder "
                        "and data.val_by='records' (cross-validation by whole records)")
    if t.time_budget_s < 0:
        raise UserError(f"bad config: tune.time_budget_s={t.time_budget_s} must be >= 0 (0: none)")
    searched = space.parse(t.search_space, config)
    for point in t.start_points:
        space.start_point(searched, config, dict(point))  # a bad start point fails here
    return searched


# ----------------------------------------------------------------------------- the trial


def trainable(
    trial_config: dict[str, Any], base: dict[str, Any], splits, searched: list[space.Param],
    folds=None,
) -> None:
    """One Ray trial: the base config with the sampled values, trained up the ladder (on each
    of `folds`, the cross-validation splits, when given) or by train_and_evaluate.

    The trial trains in a private local folder and hands it to Ray with every report, so that
    Ray copies it into the run's storage whichever node runs it; a restarted trial (after
    --resume, or on another node) starts from that copy: at its next rung, or its next epoch."""
    from ray import tune

    from heartjax.train import train_and_evaluate

    values = trial_config.get("params", trial_config)  # BOHB passes the values flat
    config = space.apply(ml_collections.ConfigDict(base), values)
    where = cluster.check_trial_device(config.tune)
    trial_id = tune.get_context().get_trial_id()
    workdir = Path(tempfile.mkdtemp(prefix=f"heartjax-{trial_id}-"))
    last = tune.get_checkpoint()
    if last is not None:
        last.to_directory(str(workdir))

    def report(row: dict[str, Any]) -> None:
        tune.report({**row, **where}, checkpoint=tune.Checkpoint.from_directory(str(workdir)))

    members = None
    if config.tune.population > 1:  # seeded by the trial id: a restarted trial redraws the same
        members = population.sample_members(searched, values, config.tune.population,
                                            config.train.seed, zlib.crc32(trial_id.encode()))
    try:
        if config.tune.ladder:
            budgets = fidelity.rung_budgets(config.tune)
            log = workdir / "rungs.jsonl"  # the rungs finished so far
            done = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

            def report_rung(row: dict[str, Any]) -> None:
                rung_members = row.pop("members", [])  # each member's row: not a Ray metric
                if row["rung"] >= len(done):
                    with log.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    with (workdir / "members.jsonl").open("a") as f:
                        f.writelines(json.dumps({**m, "rung": row["rung"]}) + "\n"
                                     for m in rung_members)
                # ASHA decides on "budget", the rung's nominal beats (its milestones exactly)
                report({**row, "budget": budgets[row["rung"]]})

            fidelity.train_ladder(config, folds or [splits], report_rung, done, members=members)
            return
        # the scheduler decides by the reported epoch, which a restart keeps counting
        run = (functools.partial(population.train_population, members=members) if members
               else train_and_evaluate)
        run(config, workdir, report=lambda epoch, row, ckpt_dir: report(row), progress=False,
            splits=splits, resume=True, overwrite=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # Ray holds its copy in the storage


# ----------------------------------------------------------------------------- the run


def _scheduler(config: ml_collections.ConfigDict):
    from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler

    from heartjax.promotion import QuotaASHA

    t = config.tune
    if t.ladder and t.scheduler != "fifo":  # decisions at the rung ends, in beats seen
        budgets = fidelity.rung_budgets(t)
        kind = QuotaASHA if t.scheduler == "asha" else HyperBandScheduler
        extra = ({"grace_period": budgets[0], "exempt_first": len(t.start_points)}
                 if t.scheduler == "asha" else {})
        return kind(time_attr="budget", max_t=budgets[-1], reduction_factor=t.reduction_factor,
                    **extra)
    if t.scheduler == "asha":
        return QuotaASHA(
            time_attr="epoch",
            max_t=config.train.epochs,
            grace_period=min(t.grace_period, config.train.epochs),
            reduction_factor=t.reduction_factor,
            exempt_first=len(t.start_points),
        )
    if t.scheduler == "hyperband" and t.search_alg == "bohb":  # BOHB's own HyperBand
        from ray.tune.schedulers import HyperBandForBOHB

        return HyperBandForBOHB(time_attr="epoch", max_t=config.train.epochs,
                                reduction_factor=t.reduction_factor)
    if t.scheduler == "hyperband":
        return HyperBandScheduler(
            time_attr="epoch", max_t=config.train.epochs, reduction_factor=t.reduction_factor
        )
    return FIFOScheduler()


def _searcher(config: ml_collections.ConfigDict, searched: list[space.Param]):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    t = config.tune
    if not searched:
        return None
    if t.search_alg == "bohb":
        from ray.tune.search.bohb import TuneBOHB

        return TuneBOHB(space=space.configspace(searched), metric=t.metric, mode=t.mode, seed=t.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (
        optuna.samplers.RandomSampler(seed=t.seed)
        if t.search_alg == "random"
        else optuna.samplers.TPESampler(seed=t.seed, n_startup_trials=min(t.startup_trials, t.num_samples))
    )
    points = [space.start_point(searched, config, dict(p)) for p in t.start_points]
    return OptunaSearch(space.DefineByRun(tuple(searched)), metric=t.metric, mode=t.mode,
                        sampler=sampler, points_to_evaluate=points or None)


def _dataset_record(config, splits, folds=None) -> dict[str, Any]:
    train, val = splits
    record = {
        "dataset": config.data.dataset,
        "train_table": train.path,
        "val_by": config.data.val_by,
        "val_fraction": config.data.val_fraction,
        "split_seed": config.data.seed,
        "train_rows": len(train),
        "val_rows": len(val),
        "train_counts": dict(zip(train.class_names, np.bincount(train.y, minlength=len(train.class_names)).tolist())),
        "val_counts": dict(zip(val.class_names, np.bincount(val.y, minlength=len(val.class_names)).tolist())),
    }
    if folds:  # the search scores by cross-validation: each fold's validation records
        record["folds"] = [sorted(set(v.records.astype(str))) for _, v in folds]
    return record


def run(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    resume: bool = False,
    ray_address: str | None = None,
    mlflow: str | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Tune `config` into `workdir` (or resume it there); returns the run's summary."""
    from heartjax.train import load_folds, load_splits

    # a driver that never trains must not hold GPU memory (JAX's default preallocates 75%)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    workdir = Path(workdir).absolute()
    t = config.tune
    if resume and not t.storage:  # the storage the run was started with
        t.storage = cluster.saved_storage(workdir)
    if t.storage:
        t.storage = str(Path(t.storage).absolute())
    searched = check_tune_config(config)
    # trials keep checkpoints by the tuned metric, so the run's best checkpoint is the best trial's
    config.train.select_metric = t.metric[len("val_"):]
    ray_dir = cluster.experiment_dir(t.storage, workdir)
    if resume and not ray_dir.exists():
        raise UserError(f"--resume: {workdir} holds no tuning run to resume (no {ray_dir})")
    if not resume and ray_dir.exists():
        raise UserError(f"{ray_dir} already holds a tuning run; add --resume to continue it or "
                        "pick a new --workdir")
    if t.storage:
        cluster.check_storage(Path(t.storage))
    if mlflow is not None:
        _check_mlflow()
    splits = load_splits(config)  # bad data fails here, before Ray starts
    folds = load_folds(config, t.folds) if t.folds else None

    address = ray_address or os.environ.get("RAY_ADDRESS")
    with _ray_session(config, address, verbose):
        _check_cluster(config, address)
        workdir.mkdir(parents=True, exist_ok=True)
        if not resume:
            (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
            (workdir / "dataset.json").write_text(
                json.dumps(_dataset_record(config, splits, folds), indent=2))
        t0 = time.time()
        results = _fit(config, searched, splits, folds, workdir, resume, mlflow, verbose)
        summary = write_tables(workdir, results, config, searched, time.time() - t0)
        if set(summary["status_counts"]) == {"error"}:
            first = pd.read_csv(workdir / "trials.csv")["error"].dropna()
            raise UserError(f"every trial failed ({summary['trials']}; trials.csv in {workdir} "
                            f"has each error), the first with: {first.iloc[0] if len(first) else '?'}")
        if summary["status_counts"].get("interrupted") and not _budget_spent(config, time.time() - t0):
            summary["interrupted"] = True
            return summary
        if t.ladder and t.retrain and summary["best"]:
            summary["retrained"] = retrain_best(config, summary, workdir, splits, verbose)
            trials = pd.read_csv(workdir / "trials.csv", dtype={"trial_id": str})
            trials.loc[trials["trial_id"] == summary["best"]["trial_id"], "workdir"] = str(workdir / "best")
            trials.to_csv(workdir / "trials.csv", index=False)
            summary["best"]["workdir"] = str(workdir / "best")
        if t.train_original:
            summary["original"] = train_full(config, {}, workdir / "original", splits, verbose,
                                             "the untuned original")
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


@contextlib.contextmanager
def _ray_session(config: ml_collections.ConfigDict, address: str | None, verbose: int):
    """Ray started (or joined at `address`) for the run, with every trial's environment set;
    SIGTERM ends the run as Ctrl-C does (Ray saves its state, the trials so far are written)."""
    if address:
        _match_cluster_auth()  # before Ray is imported: it reads the mode once
    if verbose < 2:  # Ray's own tables and banners stay quiet; heartjax prints its own line
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        # every report hands Ray a checkpoint, which Ray would warn about on cheap rungs
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray

    try:
        ray.init(
            # "local" starts a private Ray: without it ray.init() joins the last `ray start`
            # cluster recorded in /tmp/ray, even a dead one left by an earlier `ray start`
            address=address or "local",
            runtime_env={"env_vars": cluster.trial_env(config.tune)},
            include_dashboard=False,
            log_to_driver=verbose > 1,
            configure_logging=verbose > 1,
            ignore_reinit_error=True,
        )
    except ConnectionError as e:
        raise UserError(
            f"cannot connect to the Ray cluster at {address}: start it with `ray start --head` "
            f"or drop --ray_address and RAY_ADDRESS to run locally ({e})"
        ) from None
    previous_term = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        ray.shutdown()
        signal.signal(signal.SIGTERM, previous_term)


def _check_cluster(config: ml_collections.ConfigDict, address: str | None) -> None:
    """Before any trial starts: a cluster of several nodes needs a storage they all see, some
    node must offer a trial's resources, and a trial that asks for a GPU must see one (asked
    of a Ray task with a trial's resources)."""
    t = config.tune
    if address and not t.storage and (nodes := cluster.alive_nodes()) > 1:
        raise UserError(f"the Ray cluster at {address} has {nodes} nodes: give --storage a folder "
                        "every node sees, or trials write to the disk of whichever node runs them")
    cluster.check_feasible(t)
    if t.gpus_per_trial > 0:
        cluster.probe_device(t)


def _fit(config, searched, splits, folds, workdir: Path, resume: bool, mlflow: str | None,
         verbose: int):
    """Ray Tune's search: started, or continued from the experiment folder."""
    from ray import tune

    t = config.tune
    ray_dir = cluster.experiment_dir(t.storage, workdir)
    fn = tune.with_resources(
        tune.with_parameters(trainable, base=config.to_dict(), splits=splits, searched=searched,
                             folds=folds),
        cluster.trial_resources(t),
    )
    if resume:
        return tune.Tuner.restore(str(ray_dir), trainable=fn, resume_unfinished=True,
                                  resume_errored=False, restart_errored=False).fit()
    return tune.Tuner(
        fn,
        tune_config=tune.TuneConfig(
            metric=t.metric,
            mode=t.mode,
            search_alg=_searcher(config, searched),
            scheduler=_scheduler(config),
            num_samples=t.num_samples,
            max_concurrent_trials=t.max_concurrent_trials or None,  # 0: the resources decide
            time_budget_s=t.time_budget_s or None,
            reuse_actors=True,  # no new process (and jax import) per trial
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=ray_dir.name,
            storage_path=str(ray_dir.parent),
            failure_config=tune.FailureConfig(max_failures=0),
            # a trial's checkpoint is its whole run folder as of its last report
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[
                *([_progress(config)] if verbose == 1 else []),
                *(_mlflow_callbacks(mlflow, workdir, config) if mlflow is not None else []),
            ],
            # verbose 1 is heartjax's progress line, 2 Ray's own tables and logs
            verbose=0 if verbose < 2 else 2,
        ),
    ).fit()


def _trial_dirname(trial) -> str:
    """A trial's folder in the experiment folder: `trial_<id>` (Ray's default lists its values)."""
    return f"trial_{trial.trial_id}"


def _budget_spent(config: ml_collections.ConfigDict, wall_s: float) -> bool:
    """Whether the search ended on its time budget (its running trials are then cut short)."""
    return bool(config.tune.time_budget_s) and wall_s >= config.tune.time_budget_s - 5


def retrain_best(config: ml_collections.ConfigDict, summary: dict[str, Any], workdir: Path,
                 splits, verbose: int) -> dict[str, Any]:
    """Train the winning values at full fidelity into WORKDIR/best: the run's best checkpoint."""
    trial_id = summary["best"]["trial_id"]
    return {"trial_id": trial_id, **train_full(config, summary["best_values"], workdir / "best",
                                               splits, verbose, f"the winner {trial_id}")}


def train_full(config: ml_collections.ConfigDict, values: dict[str, Any], out: Path, splits,
               verbose: int, what: str) -> dict[str, Any]:
    """`config` with `values` trained at full fidelity (`train.epochs` on the whole split, as
    `heartjax.train` does) into `out`, as a Ray task with a trial's resources (on a cluster:
    on a node that could run a trial, not the driver's); its validation metrics and cost."""
    import ray

    c = space.apply(config, values)
    if verbose:
        print(f"training {what} at full fidelity ({c.train.epochs} epochs on "
              f"{len(splits[0]):,} beats) into {out}", flush=True)
    task = ray.remote(_train_full_task).options(**cluster.task_options(c.tune))
    result, archive = ray.get(task.remote(c.to_dict(), splits))
    shutil.rmtree(out, ignore_errors=True)
    _unpack(archive, out)
    if verbose:
        print(f"  {what}: best epoch {result['epoch']} of {c.train.epochs} in "
              f"{result['train_s'] / 60:.1f} min on {result['backend']}", flush=True)
    return {"workdir": str(out), **result}


def _train_full_task(base: dict[str, Any], splits) -> tuple[dict[str, Any], bytes]:
    """In a Ray worker: train into a local folder; its metrics and the folder as a tar."""
    from heartjax.metrics import flat_scalars
    from heartjax.train import train_and_evaluate

    config = ml_collections.ConfigDict(base)
    where = cluster.check_trial_device(config.tune)
    out = Path(tempfile.mkdtemp(prefix="heartjax-full-"))
    try:
        t0 = time.time()
        best = train_and_evaluate(config, out, progress=False, splits=splits, overwrite=True)
        result = {"epoch": best["epoch"], "train_s": time.time() - t0,
                  "compile_s": best.get("compile_s"), "params": best["params"],
                  **flat_scalars(best["val"], "val_"), **where}
        return result, _archive(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _archive(folder: Path) -> bytes:
    """`folder` as an uncompressed tar, its paths relative to it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def _unpack(archive: bytes, out: Path) -> None:
    """A folder written by `_archive`, unpacked into `out`."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")


def _progress(config: ml_collections.ConfigDict):
    """heartjax's progress line: rungs on a ladder, epochs without."""
    from heartjax.tune_progress import Progress

    t = config.tune
    return Progress(t.metric, t.time_budget_s, rung_key="rung" if t.ladder else "epoch",
                    population=t.population)


def _match_cluster_auth() -> None:
    """Use Ray's auth token when one exists, as `ray start --head` does.

    `ray start` turns token authentication on when a token file exists (Ray >= 2.5x), but a
    driver given an explicit address does not, and is then refused by the cluster.
    """
    token = os.environ.get("RAY_AUTH_TOKEN_PATH", str(Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or Path(token).exists()):
        os.environ["RAY_AUTH_MODE"] = "token"


def _check_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UserError("--mlflow needs MLflow: pip install -e '.[mlflow]'") from None


def _mlflow_callbacks(uri: str, workdir: Path, config) -> list:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    tracking = uri or f"sqlite:///{workdir / 'mlflow.db'}"
    return [MLflowLoggerCallback(tracking_uri=tracking, experiment_name=f"heartjax-{config.data.dataset}", save_artifact=False)]


# ----------------------------------------------------------------------------- tables


def trial_states(ray_dir: Path) -> dict[str, str]:
    """Ray's state of every trial (TERMINATED, ERROR, PENDING, RUNNING, PAUSED) by trial id."""
    from ray.tune import ExperimentAnalysis

    return {t.trial_id: t.status for t in ExperimentAnalysis(str(ray_dir)).trials}


def run_was_cut(states: dict[str, str]) -> bool:
    """Whether the search ended with trials still to run (Ctrl-C or SIGTERM leave some RUNNING
    or PENDING); a search that ends by itself leaves none."""
    return any(s in ("RUNNING", "PENDING") for s in states.values())


def trial_status(result, ray_state: str, cut: bool) -> str:
    """finished (all epochs or early stop), stopped (by the scheduler), error, or interrupted.
    `cut`: whether the search itself was cut short (`run_was_cut`)."""
    if result.error is not None or ray_state == "ERROR":
        return "error"
    if (result.metrics or {}).get("final"):
        # its last epoch is reported and on disk, whatever Ray's state: HyperBandForBOHB can
        # pause a trial on the last report of a function that then returns, leaving it PAUSED
        return "finished"
    if ray_state == "TERMINATED" or (ray_state == "PAUSED" and not cut):
        # HyperBandForBOHB pauses a trial at a rung and may stop it there; when the stop meets
        # the pause's checkpoint, Ray can record it PAUSED in a search that ended by itself
        return "stopped"
    return "interrupted"  # --resume runs it again


def _error_line(error: BaseException) -> str:
    """The trial's own exception, not Ray's wrapper line (last line of the text, no colours)."""
    import re

    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(error).__name__)[:300]


def write_tables(workdir: Path, results, config, searched, wall_s: float) -> dict[str, Any]:
    """`trials.csv` (one row per trial), `epochs.csv` (one per trial-epoch), `summary.json`."""
    t = config.tune
    states = trial_states(cluster.experiment_dir(t.storage, workdir))
    cut = run_was_cut(states)
    rows, epochs, members = [], [], []
    values_of: dict[str, dict[str, Any]] = {}
    for result in results:
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        trial_id = trial_id or Path(result.path).name.split("_")[1]
        config_of = result.config or {}
        values = config_of.get("params", config_of)  # BOHB passes the values flat
        df = result.metrics_dataframe
        row: dict[str, Any] = {"trial_id": trial_id, "status": trial_status(result, states.get(trial_id, ""), cut)}
        row.update({f"param:{k}": v for k, v in values.items()})
        values_of[trial_id] = values
        if t.ladder and df is not None and len(df) and t.metric in df:
            cols = [c for c in df.columns if c.startswith("val_") or c in LADDER_COLUMNS]
            e = df[cols].copy()
            e.insert(0, "trial_id", trial_id)
            epochs.append(e)
            top = df.iloc[-1]  # the highest rung reached: the longest training
            row.update({"rung": int(top["rung"]), "budget": int(top["budget"]),
                        "train_s": float(df["train_s"].sum() + df["eval_s"].sum()),
                        "compile_s": float(df["compile_s"].sum())})
            row.update({c: float(top[c]) for c in cols if c.startswith("val_")})
        elif df is not None and len(df) and t.metric in df:
            cols = [c for c in df.columns if c.startswith("val_") or c in ("epoch", "train_loss", "beats_per_s", "epoch_s", "timestamp")]
            e = df[cols].copy()
            e.insert(0, "trial_id", trial_id)
            epochs.append(e)
            best = df.loc[df[t.metric].idxmax() if t.mode == "max" else df[t.metric].idxmin()]
            row.update({"epochs": int(df["epoch"].max()), "best_epoch": int(best["epoch"]),
                        "train_s": float(df["epoch_s"].sum())})
            row.update({c: float(best[c]) for c in cols if c.startswith("val_")})
        # the trial's run folder as of its last report, in the storage (none before a report)
        folder = Path(result.checkpoint.path) if result.checkpoint else Path(result.path)
        member_rows = _members(folder, trial_id, t.metric)
        if member_rows is not None and len(member_rows):
            members.append(member_rows)
            # the trial's checkpoint and reported metrics are its best member's: so are its
            # values, and the winner's full training trains them
            lead = member_rows.loc[member_rows[t.metric].idxmax()]
            lead_values = {k: _plain(lead[k]) for k in population.MEMBER_FIELDS if k in lead}
            row["member"] = int(lead["member"])
            row.update({f"param:{k}": v for k, v in lead_values.items()})
            values_of[trial_id] = {**values, **lead_values}
        if result.error is not None:
            row["error"] = _error_line(result.error)
        if result.metrics and "params" in result.metrics:
            row["params_count"] = int(result.metrics["params"])
        row.update({k: result.metrics[k] for k in cluster.WHERE if k in (result.metrics or {})})
        row["workdir"] = str(folder)
        rows.append(row)
    if not rows:
        raise UserError(f"{workdir}: the tuning run produced no trials")
    trials = pd.DataFrame(rows)
    if t.metric in trials:  # a ladder ranks by the rung reached first: a longer training
        keys = ["rung", t.metric] if t.ladder else [t.metric]
        trials = trials.sort_values(keys, ascending=t.mode == "min", na_position="last")
    trials.to_csv(workdir / "trials.csv", index=False)
    if epochs:
        pd.concat(epochs, ignore_index=True).to_csv(workdir / ("rungs.csv" if t.ladder else "epochs.csv"), index=False)
    if members:
        pd.concat(members, ignore_index=True).to_csv(workdir / "members.csv", index=False)
    ok = trials[trials["status"].isin(["finished", "stopped"])] if t.metric in trials else trials.iloc[:0]
    best = ok.iloc[0].to_dict() if len(ok) else {}
    previous = workdir / "summary.json"
    started_at = time.time() - wall_s
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
        "search_space": [{"path": p.key, "kind": p.kind, "args": list(p.args), "when": p.when} for p in searched],
        # what the trials computed on (trials.csv has each trial's node and GPU share)
        "device": {k: sorted(set(trials[k].dropna().astype(str))) for k in ("backend", "device_kind")
                   if k in trials},
        "best": {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in best.items()},
        "best_values": values_of.get(best.get("trial_id"), {}),
    }
    if t.ladder:
        reached = trials["rung"].dropna().astype(int) if "rung" in trials else pd.Series([], dtype=int)
        rungs = pd.concat(epochs, ignore_index=True) if epochs else pd.DataFrame(columns=["rung", "pool"])
        pools = rungs.groupby("rung")["pool"].first().to_dict()  # the pools as drawn
        summary["ladder"] = [
            {"rung": k, "pool": int(pools.get(k, pool)), "beats": budget,
             "trials": int((reached >= k).sum())}
            for k, (pool, budget) in enumerate(zip(t.ladder, fidelity.rung_budgets(t)))
        ]
        summary["configurations"] = int(len(reached)) * t.population  # every member counts
        if "compile_s" in trials:
            summary["compile_share"] = float(trials["compile_s"].sum() / max(trials["train_s"].sum(), 1e-9))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


LADDER_COLUMNS = ("rung", "budget", "beats_seen", "pool", "train_loss", "beats_per_s", "compile_s",
                  "train_s", "eval_s", "timestamp")


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
    return df


def _plain(value: Any) -> Any:
    """A numpy scalar of a table as the Python value a config holds."""
    return value.item() if isinstance(value, np.generic) else value


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal at the end of a run."""
    best = summary["best"]
    counts = ", ".join(f"{v} {k}" for k, v in summary["status_counts"].items())
    lines = [f"{summary['trials']} trials ({counts}) in {summary['wall_s'] / 60:.1f} min"]
    if summary.get("population", 1) > 1:
        lines.append(f"populations of {summary['population']}: {summary['configurations']} configurations trained")
    if summary.get("ladder"):
        per_hour = summary["configurations"] / max(summary["wall_s"], 1e-9) * 3600
        rungs = ", ".join(f"{r['rung']}: {r['trials']}" for r in summary["ladder"])
        lines.append(f"{summary['configurations']} configurations ({per_hour:.0f} an hour); "
                     f"trials per rung {rungs}")
    if summary["status_counts"].get("interrupted"):
        lines.append("the run was interrupted: the same command with --resume continues it")
    if best:
        values = ", ".join(f"{k[6:]}={v:.4g}" if isinstance(v, float) else f"{k[6:]}={v}"
                           for k, v in best.items() if k.startswith("param:") and v is not None)
        lines.append(f"best trial {best['trial_id']}: {summary['metric']} {best.get(summary['metric'], float('nan')):.4f}"
                     f" (val accuracy {best.get('val_accuracy', float('nan')):.4f}, macro F1 {best.get('val_macro_f1', float('nan')):.4f})")
        if values:
            lines.append(f"  {values}")
    r = summary.get("retrained")
    if r:
        tuned = summary["metric"]  # the winner's epoch was chosen by it
        lines.append(f"winner retrained at full fidelity ({r['train_s'] / 60:.1f} min, best epoch "
                     f"{r['epoch']}): {tuned} {r.get(tuned, float('nan')):.4f}, accuracy "
                     f"{r['val_accuracy']:.4f}, macro F1 {r['val_macro_f1']:.4f}")
    return "\n".join(lines)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    from heartjax.cli import parse_config_flags

    config, args = parse_config_flags(
        argv,
        "Tune a model with Ray Tune; the config's `tune` section defines the search space, "
        "algorithm, scheduler and budget.",
        extra=[
            ("--workdir", dict(default=None, help="run folder (default runs/<dataset>-<model name>)")),
            ("--resume", dict(action="store_true", help="continue an interrupted run in WORKDIR")),
            ("--ray_address", dict(default=None, help="address of an existing Ray cluster (default: RAY_ADDRESS or a local Ray)")),
            ("--storage", dict(default=None, help="folder every node of a Ray cluster sees, where trials' metrics, checkpoints and last states land (tune.storage; default: WORKDIR/ray)")),
            ("--mlflow", dict(nargs="?", const="", default=None, metavar="URI",
                              help="also log every trial to MLflow (default store: WORKDIR/mlflow.db)")),
            ("--verbose", dict(type=int, default=1, help="0 silent, 1 a progress line every 30 s and at each new best, 2 Ray's own tables and logs")),
            ("--no-report", dict(action="store_true", help="skip the report (WORKDIR/report) at the end; `python -m heartjax.report WORKDIR` writes it later")),
        ],
    )
    workdir = args.workdir or f"runs/{config.data.dataset}-{config.model.name}"
    if args.storage:
        config.tune.storage = args.storage
    again = shlex.join(["python", "-m", "heartjax.tune", *(argv if argv is not None else sys.argv[1:]),
                        *([] if args.resume else ["--resume"])])
    try:
        summary = run(config, workdir, resume=args.resume, ray_address=args.ray_address,
                      mlflow=args.mlflow, verbose=args.verbose)
    except KeyboardInterrupt:  # during the winner's training: the search itself is saved
        summary = {"interrupted": True}
    if summary.get("interrupted"):
        if "trials" in summary:
            print(format_summary(summary))
        print(f"interrupted: what ran so far is in {Path(workdir).absolute()}; continue with "
              f"`{again}`", file=sys.stderr)
        sys.exit(130)
    print(format_summary(summary))
    print(f"run folder: {Path(workdir).absolute()}  (heartjax.load_checkpoint on it gives the best model)")
    if not args.no_report:
        from heartjax.report import build_report

        out = build_report([workdir], Path(workdir) / "report")
        print(f"report: {out['markdown']}, {out['pdf']}")


if __name__ == "__main__":
    main()
