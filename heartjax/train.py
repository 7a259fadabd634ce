"""Training one model: `train_and_evaluate(config, workdir)` serves the CLI, every Ray trial
and every experiment.

The steps and the train state are in `heartjax.steps`. Here is the loop: an epoch of jitted
chunks, validation (every `train.eval_every` epochs), best-k Orbax checkpoints, early stopping,
logs, and the whole train state after each epoch (`--resume` continues from it). `Training`
holds the parts that `heartjax.population` reuses for K models in one program.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from heartjax import checkpoint as ckpt
from heartjax import losses, metrics, predict
from heartjax.config import validate
from heartjax.data import (
    RR_COLUMNS,
    BeatTable,
    add_training_beats,
    join_tables,
    load_dataset,
    load_table,
    needs_rr,
    stratified_split,
    train_val_split,
)
from heartjax.errors import UserError, cli_entry
from heartjax.noise import bank_of
from heartjax.runtime import device_info, enable_compilation_cache
from heartjax.steps import build_program, make_train_chunk, record_sampling_of, run_epoch, to_arrays

Metrics = dict[str, Any]
# Called after every validated epoch with (epoch, flat validation metrics, checkpoint dir or None).
ReportFn = Callable[[int, dict[str, float], "Path | None"], None]


def training_table(d: ml_collections.ConfigDict) -> BeatTable:
    """The table training and validation are drawn from: data.train_files joined, else
    data.train_file, else data.dir's standard training table."""
    if d.train_files:
        return join_tables([load_table(f, d.dataset) for f in d.train_files])
    if d.train_file:
        return load_table(d.train_file, d.dataset)
    return load_dataset(d.dir, d.dataset, "train")


def extra_tables(d: ml_collections.ConfigDict) -> list[BeatTable]:
    """The tables of data.extra_train (comma-separated paths)."""
    out = []
    for path in (p.strip() for p in d.extra_train.split(",")):
        if not path:
            continue
        if not Path(path).exists():
            raise UserError(
                f"data.extra_train: {path}: table not found; build the second lead's tables "
                "with `python -m heartjax.data build mitbih --raw MITDB --split interpatient "
                "--leads V1,V2,V4,V5 --out DIR` (`make data-interpatient` does) or set "
                "--config.data.extra_train=''")
        out.append(load_table(path, d.dataset))
    return out


def load_splits(config: ml_collections.ConfigDict) -> tuple[BeatTable, BeatTable]:
    """Training table minus the stratified validation split, and that split."""
    d = config.data
    table = training_table(d)
    if table.dataset != d.dataset:
        raise UserError(f"{table.path}: holds {table.dataset} beats but data.dataset={d.dataset}")
    if needs_rr(config.model.context) and table.rr is None:
        raise UserError(
            f"{table.path}: model.context={tuple(config.model.context)} needs the R-R columns "
            f"{', '.join(RR_COLUMNS)}; rebuild the tables with `python -m heartjax.data build` "
            "or leave \"rr\" out of --config.model.context"
        )
    train, val = train_val_split(table, d.val_fraction, d.seed, d.val_by, d.folds, d.fold)
    for extra in extra_tables(d):
        train = add_training_beats(train, val, extra)
    if 0 < d.train_limit < len(train):  # quick runs: a stratified subsample of the training part
        keep, _ = stratified_split(train.y, 1 - d.train_limit / len(train), d.seed)
        train = train.subset(np.sort(keep))
    return train, val


def load_folds(config: ml_collections.ConfigDict, folds: int) -> list[tuple[BeatTable, BeatTable]]:
    """Cross-validation by whole records: `load_splits` once per fold (`data.folds`,
    `data.fold`), each fold's records validating once and training the other folds' models."""
    out = []
    for fold in range(folds):
        c = config.copy_and_resolve_references()
        c.data.folds, c.data.fold = folds, fold
        out.append(load_splits(c))
    return out


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="beat", unit_scale=True, leave=False, disable=not enabled)


class Training:
    """One training run's fixed parts and bookkeeping: the splits on the device, the compiled
    program's pieces, the best-k checkpoints, early stopping, the logs and the last state."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | Path, *,
                 splits: tuple[BeatTable, BeatTable] | None = None, overwrite: bool = False,
                 resume: bool = False, progress: bool = True) -> None:
        validate(config)
        enable_compilation_cache()
        self.noise = bank_of(config)  # train.augment.real_noise's bank (None when off)
        self.config, self.workdir, self.progress = config, Path(workdir), progress
        self.last = ckpt.LastState(self.workdir)
        self.resuming = resume and self.last.exists()
        if ckpt.has_checkpoints(self.workdir) and not (overwrite or self.resuming):
            raise UserError(f"{self.workdir} already holds a trained run" + (
                " without a saved train state, so it cannot be resumed" if resume else "")
                + "; pick a new --workdir, pass --resume to continue it or --overwrite to "
                "replace it")
        if not self.resuming:  # what a cut attempt left before its first epoch ended goes
            ckpt.clear_run(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.train_table, self.val_table = splits or load_splits(config)
        sampling = record_sampling_of(self.train_table, config.train)  # before anything is written
        self.sampling = None if sampling is None else jnp.asarray(sampling, jnp.float32)
        self.class_names = self.train_table.class_names
        self.program = build_program(config, len(self.train_table), len(self.class_names),
                                     _init_source(config, self.class_names))
        # after the model's fields are checked (build_program builds it)
        # what it ran on beside the config (a report compares runs of several machines)
        (self.workdir / "config.json").write_text(json.dumps(
            {**json.loads(config.to_json_best_effort()), "runtime": device_info()}, indent=2))
        parts = config.model.context
        self.train, self.val = to_arrays(self.train_table, parts), to_arrays(self.val_table, parts)
        self.predict_fn = predict.make_predict_fn(self.program.model.apply)
        self.manager = ckpt.Manager(self.workdir, config.train.select_metric,
                                    config.train.keep_checkpoints)
        self.writer = _tensorboard(self.workdir)
        self.epoch, self.rng = 0, jax.random.PRNGKey(config.train.seed + 1)
        self.best: Metrics = {}
        self.best_score, self.since_best, self.compile_s = -math.inf, 0, None
        self.validated = 0  # the last validated epoch (since_best counts epochs from the best)
        self.unlogged_s = 0.0  # seconds of the epochs since the last metrics row
        self.params = 0

    # -- state in and out

    def start(self, state: Any, one: Any) -> Any:
        """`state` as it was after the last finished epoch when resuming, else as given;
        `one` is a single model's state (for the parameter count)."""
        self.params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(one.params))
        if not self.resuming:
            return state
        (state, self.rng), loop = self.last.restore((state, self.rng))
        self.epoch, self.best = loop["epoch"], loop["best"]
        self.best_score, self.since_best = loop["best_score"], loop["since_best"]
        self.validated = loop.get("validated", self.epoch)  # older states validated every epoch
        self.manager.drop_after(self.epoch)
        for log in ("metrics.jsonl", "members.jsonl"):  # rows of epochs that will be redone
            _truncate(self.workdir / log, self.epoch)
        with (self.workdir / "resumes.jsonl").open("a") as f:  # when and where it went on
            f.write(json.dumps({"after_epoch": self.epoch, "time": time.time()}) + "\n")
        if self.progress:
            print(f"resuming {self.workdir} after epoch {self.epoch}", flush=True)
        return state

    def save_last(self, state: Any) -> None:
        loop = {"epoch": self.epoch, "best": self.best, "best_score": self.best_score,
                "since_best": self.since_best, "validated": self.validated}
        self.last.save((state, self.rng), loop)

    # -- one epoch

    def train_epoch(self, train_chunk: Callable, state: Any, weights: jax.Array
                    ) -> tuple[Any, np.ndarray, dict[str, float]]:
        """One epoch; returns the state, each model's mean loss and the epoch's timing."""
        self.epoch += 1
        self.rng, key = jax.random.split(self.rng)
        plan, t = self.program.plan, self.config.train
        first = self.compile_s is None  # this process's first epoch includes compilation
        t0 = time.perf_counter()
        with _progress(plan.beats, f"epoch {self.epoch}/{t.epochs}", self.progress) as bar:

            def on_chunk() -> None:
                if self.compile_s is None:
                    self.compile_s = time.perf_counter() - t0
                bar.update(plan.chunk * plan.batch)

            state, chunk_losses = run_epoch(train_chunk, state, self.train, plan, key, weights,
                                            self.noise, on_chunk=on_chunk,
                                            sampling=self.sampling)
        train_s = time.perf_counter() - t0
        timed = train_s - (self.compile_s if first else 0.0)
        beats = (plan.calls - int(first)) * plan.chunk * plan.batch
        loss = np.atleast_1d(chunk_losses.mean(axis=0))
        if not np.isfinite(loss).any():
            raise FloatingPointError(f"training diverged at epoch {self.epoch} (loss {loss})")
        timing = {"beats_per_s": beats / timed if timed > 0 and beats else float("nan"),
                  "epoch_s": train_s}
        return state, loss, timing

    @property
    def validates(self) -> bool:
        """Whether this epoch is validated: every `train.eval_every`-th one and the last."""
        t = self.config.train
        return self.epoch % t.eval_every == 0 or self.epoch >= t.epochs

    def evaluate(self, one: Any) -> tuple[Metrics, np.ndarray]:
        """Validation metrics and probabilities of one model's state."""
        variables = predict.variables_of(one.params, one.batch_stats)
        proba = predict.predict_proba(self.predict_fn, variables, self.val.x, self.val.context,
                                      self.config.train.eval_batch_size)
        return metrics.evaluate_predictions(self.val_table.y, proba, self.class_names), proba

    def row(self, loss: float, timing: dict[str, float], val_m: Metrics) -> dict[str, float]:
        """A validated epoch's metrics row; its epoch_s covers the epochs since the last row."""
        timing = {**timing, "epoch_s": timing["epoch_s"] + self.unlogged_s}
        return {"epoch": self.epoch, "train_loss": float(loss), **timing,
                **metrics.flat_scalars(val_m, "val_")}

    def select(self, one: Any, config: ml_collections.ConfigDict, val_m: Metrics,
               proba: np.ndarray, score: float, **extra: Any) -> Path | None:
        """Keep `one` when `score` beats the best so far (early stopping counts the epochs
        since the best); returns the new checkpoint's folder, or None."""
        since, self.validated = self.epoch - self.validated, self.epoch
        if score <= self.best_score:
            self.since_best += since
            return None
        self.best_score, self.since_best = score, 0
        meta = _meta(config, self.class_names, self.epoch, val_m, self.params, self.val_table, proba)
        ckpt_dir = self.manager.save(self.epoch, one, meta, score)
        self.best = {"epoch": self.epoch, "val": val_m, "checkpoint": str(ckpt_dir),
                     "params": self.params, **extra}
        return ckpt_dir

    @property
    def done(self) -> bool:
        """The last epoch, or `train.patience` epochs without a better model (known at a
        validation: with eval_every > 1 the first one `patience` or more epochs after the best)."""
        return self.epoch >= self.config.train.epochs or self.since_best >= self.config.train.patience

    def log(self, row: dict[str, float], improved: bool) -> None:
        """metrics.jsonl, TensorBoard and the epoch line of the leading model."""
        row["final"] = int(self.done)
        _log(self.workdir / "metrics.jsonl", self.writer, row)
        if self.progress:
            print(_epoch_line(row, self.config.train.select_metric, improved), flush=True)

    def report(self, report: ReportFn | None, row: dict[str, float], ckpt_dir: Path | None) -> None:
        """Tell Ray (or any caller) about the epoch, once everything is on disk: Ray may end
        this process right after a report."""
        if report is not None:
            self.manager.wait()
            report(self.epoch, {**row, "params": self.params}, ckpt_dir)

    def end_epoch(self, state: Any, row: dict[str, float], ckpt_dir: Path | None,
                  report: ReportFn | None) -> None:
        """Log the leading model's row, save the whole state, then report: in this order, so a
        report that ends the process (Ray) finds everything on disk."""
        self.log(row, ckpt_dir is not None)
        self.unlogged_s = 0.0
        self.save_last(state)
        self.report(report, row, ckpt_dir)

    def skip_epoch(self, state: Any, loss: float, timing: dict[str, float]) -> None:
        """An epoch without validation: its loss goes to TensorBoard and the console (every
        metrics.jsonl row is a validated epoch's, as every report is), and the whole state is
        saved for --resume."""
        row = {"epoch": self.epoch, "train_loss": float(loss), **timing}
        self.unlogged_s += timing["epoch_s"]
        _log(None, self.writer, row)
        if self.progress:
            print(f"epoch {self.epoch:3d}  loss {row['train_loss']:.4f}  (not validated)  "
                  f"{row['beats_per_s']:,.0f} beats/s", flush=True)
        self.save_last(state)

    def close(self) -> None:
        self.manager.close()
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> Metrics:
        """best.json: the best epoch's metrics and checkpoint."""
        if self.progress and self.since_best >= self.config.train.patience:
            print(f"early stop: no better {self.config.train.select_metric} for "
                  f"{self.config.train.patience} epochs")
        self.best["compile_s"] = self.compile_s
        (self.workdir / "best.json").write_text(json.dumps(self.best, indent=2))
        return self.best


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    report: ReportFn | None = None,
    progress: bool = True,
    splits: tuple[BeatTable, BeatTable] | None = None,
    overwrite: bool = False,
    resume: bool = False,
) -> Metrics:
    """Train `config` into `workdir`; return the best validation metrics (and where they are).

    Validates every `train.eval_every` epochs and after the last, keeps the best-k checkpoints
    by `train.select_metric`, stops after `train.patience` epochs without improvement, logs
    every validated epoch to `metrics.jsonl` (TensorBoard gets every epoch's loss) and saves the
    whole train state after each epoch: `resume=True` continues from it and ends with the
    metrics an uninterrupted run has (with `overwrite=True` too, it starts afresh where there is
    no saved state, as a restarted tuning trial does).
    """
    run = Training(config, workdir, splits=splits, overwrite=overwrite, resume=resume,
                   progress=progress)
    t = config.train
    state = run.program.create(t.seed)
    state = run.start(state, state)
    train_chunk = make_train_chunk(t)
    weights = jnp.asarray(losses.loss_weights(run.train_table.y, len(run.class_names), t))
    try:
        while not run.done:
            state, loss, timing = run.train_epoch(train_chunk, state, weights)
            if not run.validates:
                run.skip_epoch(state, loss[0], timing)
                continue
            val_m, proba = run.evaluate(state)
            ckpt_dir = run.select(state, config, val_m, proba, val_m[t.select_metric])
            run.end_epoch(state, run.row(loss[0], timing, val_m), ckpt_dir, report)
    finally:
        run.close()
    return run.finish()


def _init_source(config: ml_collections.ConfigDict, class_names: tuple[str, ...]) -> Any:
    """Variables of the checkpoint named by `train.init_from`, or None."""
    if not config.train.init_from:
        return None
    from heartjax.checkpoint import load_checkpoint

    try:
        source = load_checkpoint(config.train.init_from)
    except UserError as e:
        raise UserError(f"train.init_from={config.train.init_from!r}: {e} (train the source model "
                        "first, or point init_from at a trained run)") from None
    if source.config.model.name != config.model.name:
        raise UserError(
            f"train.init_from: the checkpoint is a {source.config.model.name}, this config a "
            f"{config.model.name}; set --config.model.name={source.config.model.name}"
        )
    return source.variables


def _meta(config, class_names, epoch, val_m, params, val_table, proba) -> dict[str, Any]:
    """What makes a checkpoint self-describing: config, classes, metrics, decision rule."""
    meta = {
        "config": config.to_dict(),
        "dataset": config.data.dataset,
        "class_names": list(class_names),
        "epoch": epoch,
        "params": params,
        "val": metrics.flat_scalars(val_m),
        "threshold": None,
    }
    if len(class_names) == 2 and config.train.target_recall > 0:
        # recall first: chosen on validation, never on test
        meta["threshold"] = metrics.threshold_for_recall(
            val_table.y, proba[:, 1], config.train.target_recall
        )
    return meta


def _epoch_line(row: dict[str, float], select: str, improved: bool) -> str:
    star = " *" if improved else ""
    # the metric that picks the best epoch, when the line does not show it already
    value = row.get(f"val_{select}")
    chosen = ("" if select in ("accuracy", "macro_recall", "macro_f1") or value is None
              else f"{select.replace('_', ' ')} {value:.4f}  ")
    return (
        f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  "
        f"val acc {row['val_accuracy']:.4f}  macro recall {row['val_macro_recall']:.4f}  "
        f"macro F1 {row['val_macro_f1']:.4f}  {chosen}{row['beats_per_s']:,.0f} beats/s{star}"
    )


def _tensorboard(workdir: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # logging to TensorBoard is a convenience, not a requirement
        return None
    return SummaryWriter(str(workdir / "tensorboard"))


def _truncate(path: Path, epoch: int) -> None:
    """Drop the rows of epochs after `epoch` from a JSON-lines log."""
    if path.exists():
        rows = [ln for ln in path.read_text().splitlines() if json.loads(ln)["epoch"] <= epoch]
        path.write_text("".join(ln + "\n" for ln in rows))


def _log(path: Path | None, writer, row: dict[str, float]) -> None:
    """`row` appended to the JSON-lines log `path` (None: none) and written to TensorBoard."""
    if path is not None:
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")
    if writer is not None:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k, v, row["epoch"])
        writer.flush()


# ----------------------------------------------------------------------------- CLI


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """`python -m heartjax.train --config configs/mitbih.py --workdir DIR`."""
    from heartjax.cli import parse_config_flags

    config, args = parse_config_flags(
        argv,
        "Train one model from a config file; keeps its best checkpoints in WORKDIR/checkpoints.",
        extra=[
            ("--workdir", dict(required=True, help="output folder (created if missing)")),
            ("--overwrite", dict(action="store_true", help="replace a run already in WORKDIR")),
            ("--resume", dict(action="store_true",
                              help="continue an interrupted run in WORKDIR from its last epoch")),
        ],
    )
    best = train_and_evaluate(config, args.workdir, overwrite=args.overwrite, resume=args.resume)
    val = best["val"]
    print(
        f"best epoch {best['epoch']}: val accuracy {val['accuracy']:.4f}, macro recall "
        f"{val['macro_recall']:.4f}, macro F1 {val['macro_f1']:.4f} -> {best['checkpoint']}"
    )


if __name__ == "__main__":
    main()
