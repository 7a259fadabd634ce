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
import logging
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

from heartjax import cluster, fidelity, population, space, tune_tables
from heartjax.config import validate
from heartjax.errors import UserError, cli_entry
from heartjax.noise import read_bank

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

    values = tune_tables.trial_values(trial_config)
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
    searched = _check_run(config, workdir, resume, mlflow)
    splits = load_splits(config)  # bad data fails here, before Ray starts
    if config.train.augment.real_noise:
        read_bank(config.data.noise_file)  # and so does a missing or broken noise bank
    folds = load_folds(config, config.tune.folds) if config.tune.folds else None
    address = ray_address or os.environ.get("RAY_ADDRESS")
    with _ray_session(config, address, verbose):
        _check_cluster(config, address)
        if not resume:
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
            (workdir / "dataset.json").write_text(
                json.dumps(_dataset_record(config, splits, folds), indent=2))
        t0 = time.time()
        results = _fit(config, searched, splits, folds, workdir, resume, mlflow, verbose)
        summary = tune_tables.write_tables(workdir, results, config, searched, time.time() - t0)
        if set(summary["status_counts"]) == {"error"}:
            first = pd.read_csv(workdir / "trials.csv")["error"].dropna()
            raise UserError(f"every trial failed ({summary['trials']}; trials.csv in {workdir} "
                            f"has each error), the first with: {first.iloc[0] if len(first) else '?'}")
        if summary["status_counts"].get("interrupted") and not _budget_spent(config, time.time() - t0):
            return {**summary, "interrupted": True}
        if config.tune.ladder and config.tune.retrain and summary["best"]:
            summary["retrained"] = retrain_best(config, summary, workdir, splits, verbose)
        if config.tune.train_original:
            summary["original"] = train_full(config, {}, workdir / "original", splits, verbose,
                                             "the untuned original")
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _check_run(config: ml_collections.ConfigDict, workdir: Path, resume: bool,
               mlflow: str | None) -> list[space.Param]:
    """Everything about the run that can fail before Ray starts: the config, the storage (on
    --resume, the one the run was started with), a run to resume or none to overwrite; returns
    the searched fields."""
    t = config.tune
    if resume and not t.storage:
        t.storage = cluster.saved_storage(workdir)
    if t.storage:
        t.storage = str(Path(t.storage).absolute())
    if config.data.noise_file:  # a trial reads it in its own folder, maybe on another node
        config.data.noise_file = str(Path(config.data.noise_file).absolute())
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
    return searched


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

    if verbose < 2:  # after Ray's import, which sets its logger: a user error stays one line
        logging.getLogger("ray").setLevel(logging.ERROR)
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
    """Train the winning values at full fidelity into WORKDIR/best: the run's best checkpoint,
    which trials.csv and the summary then name as the winner's folder."""
    trial_id = summary["best"]["trial_id"]
    out = workdir / "best"
    retrained = train_full(config, summary["best_values"], out, splits, verbose,
                           f"the winner {trial_id}")
    trials = pd.read_csv(workdir / "trials.csv", dtype={"trial_id": str})
    trials.loc[trials["trial_id"] == trial_id, "workdir"] = str(out)
    trials.to_csv(workdir / "trials.csv", index=False)
    summary["best"]["workdir"] = str(out)
    return {"trial_id": trial_id, **retrained}


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
            print(tune_tables.format_summary(summary))
        print(f"interrupted: what ran so far is in {Path(workdir).absolute()}; continue with "
              f"`{again}`", file=sys.stderr)
        sys.exit(130)
    print(tune_tables.format_summary(summary))
    print(f"run folder: {Path(workdir).absolute()}  (heartjax.load_checkpoint on it gives the best model)")
    if not args.no_report:
        from heartjax.report import build_report

        out = build_report([workdir], Path(workdir) / "report")
        print(f"report: {out['markdown']}, {out['pdf']}")


if __name__ == "__main__":
    main()
