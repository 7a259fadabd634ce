"""Orbax checkpoints: best-k saving during training, and `load_checkpoint(path)` for reuse.

A checkpoint step folder holds `variables` (params and batch stats) and `meta` (the config,
class names, validation metrics, the selection score and an optional decision threshold), so it
is self-describing: nothing else is needed to rebuild the model and predict.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from heartjax import predict
from heartjax.cluster import experiment_dir, saved_storage
from heartjax.config import migrate
from heartjax.data import RR_COLUMNS, SIGNAL_LEN, context_features, context_width, needs_rr
from heartjax.errors import UserError

CHECKPOINTS = "checkpoints"
LAST = "last_state.msgpack"


class Manager:
    """Keeps the best `keep` checkpoints of a run by its selection score (higher is better)."""

    def __init__(self, workdir: Path, metric: str, keep: int):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, best_fn=lambda m: m["score"], best_mode="max"
        )
        self.directory = (Path(workdir) / CHECKPOINTS).absolute()
        self.metric = metric
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state: Any, meta: dict[str, Any], score: float) -> Path:
        """Start an async save of `state`'s variables with `meta`; returns the step folder."""
        variables = {"params": state.params, "batch_stats": state.batch_stats or {}}
        meta = {**meta, "metric": self.metric, "score": float(score)}
        self._manager.save(
            step,
            args=ocp.args.Composite(
                variables=ocp.args.StandardSave(variables), meta=ocp.args.JsonSave(meta)
            ),
            metrics={"score": float(score)},
        )
        return self.directory / str(step)

    def drop_after(self, step: int) -> None:
        """Delete checkpoints saved after `step` (a resumed run redoes those epochs)."""
        for s in self._manager.all_steps():
            if s > step:
                self._manager.delete(s)

    def wait(self) -> None:
        """Block until pending async saves are complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending async saves (before reporting or exiting), then release."""
        self._manager.wait_until_finished()
        self._manager.close()


class LastState:
    """The whole train state after the latest epoch (parameters, optimiser state, step, key
    streams) and the loop's counters: what a resumed run continues from. One file, replaced
    atomically each epoch, so an interruption leaves the previous epoch's state intact."""

    def __init__(self, workdir: Path):
        self.path = (Path(workdir) / LAST).absolute()

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, tree: Any, loop: dict[str, Any]) -> None:
        payload = {"tree": serialization.to_state_dict(jax.device_get(tree)),
                   "loop": json.dumps(loop, default=float)}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(serialization.msgpack_serialize(payload))
        os.replace(tmp, self.path)

    def restore(self, like: Any) -> tuple[Any, dict[str, Any]]:
        """The saved tree in the structure of `like`, and the loop's counters."""
        try:
            raw = serialization.msgpack_restore(self.path.read_bytes())
            tree = serialization.from_state_dict(like, raw["tree"])
            loop = json.loads(raw["loop"])
        except Exception as e:  # noqa: BLE001 - any damage reads as one user-facing line
            raise UserError(f"{self.path}: cannot resume from this state ({type(e).__name__}); "
                            "is it corrupt? start over with --overwrite") from None
        return tree, loop


_PROGRAMS: dict[str, Any] = {}


def _program(model_config: ml_collections.ConfigDict, num_classes: int, model: Any) -> Any:
    """One compiled predict function per architecture and process: checkpoints whose models
    differ only in dropout (off at inference) share it, as a report's many trials do."""
    fields = {k: v for k, v in model_config.to_dict().items() if "dropout" not in k}
    key = json.dumps([fields, num_classes], sort_keys=True, default=str)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = predict.make_predict_fn(model.apply)
    return _PROGRAMS[key]


def has_checkpoints(workdir: str | Path) -> bool:
    """Whether `workdir` already holds a run's checkpoints."""
    d = Path(workdir) / CHECKPOINTS
    return d.is_dir() and any(d.iterdir())


def clear_run(workdir: str | Path) -> None:
    """Remove a previous run's outputs from `workdir` (only with an explicit --overwrite)."""
    w = Path(workdir)
    for name in (CHECKPOINTS, "tensorboard"):
        shutil.rmtree(w / name, ignore_errors=True)
    for name in ("metrics.jsonl", "members.jsonl", "resumes.jsonl", "best.json", "config.json",
                 LAST):
        (w / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- loading


# Model inputs measured on DS1 and not taken (docs/new-patients.md); their code is at commit
# 1daa95e, which loads a model trained with one of them.
def _read_meta(step_dir: Path) -> dict[str, Any]:
    """The JSON metadata of one step folder (written by Orbax's JsonSave)."""
    meta_dir = step_dir / "meta"
    files = [f for f in meta_dir.glob("*") if f.is_file()] if meta_dir.is_dir() else []
    for f in files:
        try:
            meta = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and "config" in meta:
            return meta
    raise UserError(f"{step_dir}: not a heartjax checkpoint (no readable meta); is it corrupt?")


def find_checkpoints(path: str | Path) -> list[Path]:
    """All finished checkpoint step folders at or below `path` (a step, a workdir or a tune run)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"checkpoint path {p} does not exist")
    if (p / "meta").is_dir() and (p / "variables").exists():
        return [p]
    roots = [p]
    if storage := saved_storage(p):  # a tuning run whose trials Ray keeps in a storage
        roots.append(experiment_dir(storage, p.absolute()))
    steps = sorted(m.parent for root in roots for m in root.rglob("meta")
                   if (m.parent / "variables").exists())
    # Orbax writes into *.orbax-checkpoint-tmp-* folders first: unfinished saves don't count
    return [s for s in steps if "tmp" not in s.name]


def best_checkpoint(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The step folder with the highest selection score at or below `path`, and its meta."""
    candidates = find_checkpoints(path)
    if not candidates:
        raise UserError(f"{path}: no heartjax checkpoint found (train or tune into it first)")
    scored = []
    for step in candidates:
        try:
            meta = _read_meta(step)
        except UserError:
            continue  # a damaged sibling must not hide a good best checkpoint
        scored.append((float(meta.get("score", -np.inf)), str(step), meta))
    if not scored:
        raise UserError(f"{path}: every checkpoint found there is unreadable or corrupt")
    score, step, meta = max(scored, key=lambda s: (s[0], s[1]))
    return Path(step), meta


@dataclass
class Predictor:
    """A trained model ready for a notebook: `.predict_proba(beats)` and `.predict(beats)`."""

    config: ml_collections.ConfigDict
    class_names: tuple[str, ...]
    variables: Any
    path: Path
    meta: dict[str, Any]
    threshold: float | None = None  # binary decision rule chosen on validation, if any
    _predict_fn: Any = field(default=None, repr=False)

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def needs_rr(self) -> bool:
        """Whether predictions need the R-R columns (a context part reads them)."""
        return needs_rr(self.config.model.context)

    def _check(self, beats: Any, rr: Any) -> tuple[np.ndarray, np.ndarray | None]:
        x = np.asarray(beats, np.float32)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != SIGNAL_LEN:
            raise UserError(f"beats must have shape (N, {SIGNAL_LEN}) at 125 Hz; "
                            f"got {tuple(np.shape(beats))}")
        if not np.isfinite(x).all():
            raise UserError("beats contain NaN or infinite values")
        if rr is None:
            if self.needs_rr:
                raise UserError(f"this model needs R-R features: pass rr of shape (N, {len(RR_COLUMNS)}), "
                                f"columns {', '.join(RR_COLUMNS)}")
            return x, None
        rr = np.asarray(rr, np.float32)
        if rr.shape != (len(x), len(RR_COLUMNS)):
            raise UserError(f"rr must have shape ({len(x)}, {len(RR_COLUMNS)}) "
                            f"({', '.join(RR_COLUMNS)}); got {rr.shape}")
        return x, rr

    def predict_proba(self, beats: Any, rr: Any = None, records: Any = None) -> np.ndarray:
        """Class probabilities, shape (N, num_classes).

        `rr` (N, 4) holds the R-R columns; `records` names each beat's recording (the template
        features compare a beat with its record's other beats; None: all beats are one
        record), whose beats come in time order.
        """
        x, rr = self._check(beats, rr)
        if records is not None and len(records) != len(x):
            raise UserError(f"records must name the record of each of the {len(x)} beats; got {len(records)}")
        # as training computes it (steps.to_arrays)
        ctx = context_features(x, rr, records, self.config.model.context)
        return predict.predict_proba(self._predict_fn, self.variables, x, ctx,
                                     self.config.train.eval_batch_size)

    def with_model(self, **fields: Any) -> Predictor:
        """The same weights with model fields that act only at evaluation changed (e.g.
        `morph_mix`); a field that shapes the weights fails to build or to apply."""
        from heartjax.models import build_model

        config = ml_collections.ConfigDict(self.config.to_dict())
        config.model.update(fields)
        model = build_model(config.model, len(self.class_names))
        return replace(self, config=config,
                       _predict_fn=_program(config.model, len(self.class_names), model))

    def predict(self, beats: Any, rr: Any = None, records: Any = None) -> np.ndarray:
        """Class ids; a binary model with a stored threshold applies it to P(class 1)."""
        proba = self.predict_proba(beats, rr, records)
        if self.threshold is not None and proba.shape[1] == 2:
            return (proba[:, 1] >= self.threshold).astype(np.int64)
        return proba.argmax(axis=1)


@dataclass
class Ensemble:
    """Models trained apart (seeds, configs) as one: the mean of their class probabilities.

    Seeds of one config can disagree a lot on new patients (DS2 S recall 0.68-0.87 over three
    seeds); their mean is steadier than any one of them. No decision threshold is applied: one
    chosen for a member's probabilities does not hold for the mean.
    """

    members: list[Predictor]

    def __post_init__(self) -> None:
        if not self.members:
            raise UserError("an ensemble needs at least one checkpoint")
        first = self.members[0]
        for m in self.members[1:]:
            if m.class_names != first.class_names:
                raise UserError(f"{m.path}: classes {', '.join(m.class_names)} differ from "
                                f"{first.path}'s {', '.join(first.class_names)}; an ensemble "
                                "needs models of one dataset")

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.members[0].class_names

    @property
    def dataset(self) -> str:
        return self.members[0].dataset

    @property
    def needs_rr(self) -> bool:
        return any(m.needs_rr for m in self.members)

    @property
    def threshold(self) -> None:
        return None

    @property
    def path(self) -> str:
        return ", ".join(str(m.path) for m in self.members)

    def predict_proba(self, beats: Any, rr: Any = None, records: Any = None) -> np.ndarray:
        """The members' mean class probabilities, shape (N, num_classes)."""
        return np.mean([m.predict_proba(beats, rr, records) for m in self.members], axis=0)

    def predict(self, beats: Any, rr: Any = None, records: Any = None) -> np.ndarray:
        """Class ids: the most probable class of the mean."""
        return self.predict_proba(beats, rr, records).argmax(axis=1)


def load_ensemble(paths: list[str | Path]) -> Ensemble:
    """An `Ensemble` of the best checkpoint at each of `paths` (as `load_checkpoint`)."""
    return Ensemble([load_checkpoint(p) for p in paths])


def load_models(paths: list[str | Path]) -> Predictor | Ensemble:
    """One checkpoint as a `Predictor`, several as their `Ensemble` (the CLIs' `--checkpoint`)."""
    return load_checkpoint(paths[0]) if len(paths) == 1 else load_ensemble(paths)


def _on_this_device(abstract: Any) -> Any:
    """`abstract` (ShapeDtypeStructs) placed on this process's first device: Orbax then restores
    onto it whatever devices the checkpoint names (a GPU's `cuda:0` on a CPU, and back)."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), abstract)


# What Orbax says when a checkpoint's devices or mesh do not exist here (not damaged bytes).
_TOPOLOGY = re.compile(r"topology|local_devices|jax\.devices|device mesh", re.IGNORECASE)


def _is_topology_error(e: BaseException | None) -> bool:
    """Whether `e` or an exception it came from is about devices rather than damage."""
    while e is not None:
        if _TOPOLOGY.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
    return False


def load_checkpoint(path: str | Path) -> Predictor:
    """Load the best checkpoint at `path`: a step folder, a train workdir or a tuning run."""
    from heartjax.models import build_model

    step_dir, meta = best_checkpoint(path)
    step_dir = step_dir.absolute()  # Orbax refuses relative paths
    config = ml_collections.ConfigDict(migrate(meta["config"]))
    class_names = tuple(meta["class_names"])
    model = build_model(config.model, len(class_names))
    width = context_width(config.model.context)
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, SIGNAL_LEN)),
                           jnp.zeros((2, width)), train=False)
    )
    target = _on_this_device(
        {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})})
    try:
        with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
            restored = checkpointer.restore(
                step_dir / "variables", args=ocp.args.StandardRestore(target)
            )
    except Exception as e:  # a damaged file must be one clear line, not a traceback
        if _is_topology_error(e):
            raise UserError(f"{step_dir}: cannot restore the weights ({type(e).__name__}); saved "
                            "on another device topology that cannot be mapped onto this "
                            f"machine's {jax.devices()[0].platform} device") from e
        raise UserError(f"{step_dir}: cannot restore the weights ({type(e).__name__}); corrupt or incomplete checkpoint") from e
    variables = predict.variables_of(restored["params"], restored["batch_stats"])
    return Predictor(
        config=config,
        class_names=class_names,
        variables=variables,
        path=step_dir,
        meta=meta,
        threshold=meta.get("threshold"),
        _predict_fn=_program(config.model, len(class_names), model),
    )
