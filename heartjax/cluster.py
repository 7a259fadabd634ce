"""Where a tuning run's work happens: each trial's Ray resources and environment, the storage
that every node writes to, and the check that a trial got the device it asked for.

A trial asks Ray for `tune.cpus_per_trial` CPUs, `tune.gpus_per_trial` GPUs (0.25: four trials
share a GPU) and any custom resources of `tune.resources`; the winner's and the original's
full-fidelity trainings run as Ray tasks with the same resources. Its environment is set before
JAX starts in the worker process, because XLA reads it once:

- a CPU trial (0 GPUs) runs on JAX's CPU backend, whatever GPUs the node has: Ray counts no GPU
  for it, so it must not use one; with one CPU, XLA:CPU's Eigen kernels run single-threaded
  (concurrent trials would otherwise fight over every core);
- a GPU trial allocates memory as it needs it, up to its share of the GPU
  (`XLA_PYTHON_CLIENT_MEM_FRACTION`), so trials sharing a GPU do not starve each other.

Storage (`tune.storage`, `--storage`): a folder every node sees. Trials write into a private
local folder and hand it to Ray as a checkpoint at every report, so that Ray copies it into the
storage from whichever node ran them; a restarted trial starts from its last copy there.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import ml_collections

from heartjax.errors import UserError

# A GPU trial's memory share leaves the rest of its fraction to the CUDA context and libraries
MEMORY_SHARE = 0.9
RAY_DIR = "ray"  # Ray's experiment folder inside the run folder, without a storage


def experiment_dir(storage: str, workdir: Path) -> Path:
    """Ray's experiment folder of the run in `workdir`: WORKDIR/ray, or STORAGE/<its name>."""
    return Path(storage) / workdir.name if storage else workdir / RAY_DIR


def saved_storage(workdir: Path) -> str:
    """The storage a tuning run in `workdir` was started with ("" for none or no run)."""
    from heartjax.config import migrate

    try:
        return str(migrate(json.loads((workdir / "config.json").read_text()))["tune"]["storage"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def custom_resources(t: ml_collections.ConfigDict) -> dict[str, float]:
    """`tune.resources` ("NAME=AMOUNT,...") as Ray's custom resources."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in t.resources.split(","))):
        name, _, amount = part.partition("=")
        try:
            out[name.strip()] = float(amount)
        except ValueError:
            raise UserError(f"bad config: tune.resources={t.resources!r}: write "
                            "NAME=AMOUNT[,NAME=AMOUNT], e.g. 'worker=1'") from None
        if not name.strip() or out[name.strip()] <= 0:
            raise UserError(f"bad config: tune.resources={t.resources!r}: each resource needs a "
                            "name and an amount > 0")
    return out


def check_resources(t: ml_collections.ConfigDict) -> None:
    """One line for resources Ray cannot schedule."""
    if t.cpus_per_trial <= 0:
        raise UserError(f"bad config: tune.cpus_per_trial={t.cpus_per_trial} must be > 0")
    g = t.gpus_per_trial
    if g < 0 or (g > 1 and g != int(g)):
        raise UserError(f"bad config: tune.gpus_per_trial={g}: use 0 (CPU), a share of one GPU "
                        "in (0, 1] (0.25: four trials a GPU) or a whole number of GPUs")
    if t.max_concurrent_trials < 0:
        raise UserError(f"bad config: tune.max_concurrent_trials={t.max_concurrent_trials} must "
                        "be >= 0 (0: as many as the resources hold)")
    custom_resources(t)
    if "://" in t.storage:
        raise UserError(f"tune.storage={t.storage!r}: give a folder every node sees (mount a "
                        "bucket as a folder); heartjax reads the trials' checkpoints from it")


def trial_resources(t: ml_collections.ConfigDict) -> dict[str, float]:
    """A trial's Ray resources, as `tune.with_resources` takes them."""
    return {"cpu": t.cpus_per_trial, "gpu": t.gpus_per_trial, **custom_resources(t)}


def task_options(t: ml_collections.ConfigDict) -> dict[str, Any]:
    """The same resources as options of a Ray task (`fn.options(**task_options(t))`)."""
    return {"num_cpus": t.cpus_per_trial, "num_gpus": t.gpus_per_trial,
            "resources": custom_resources(t)}


def trial_env(t: ml_collections.ConfigDict) -> dict[str, str]:
    """Environment of every trial and full-training process (Ray's runtime_env)."""
    n = max(int(t.cpus_per_trial), 1)
    flags = os.environ.get("XLA_FLAGS", "")
    if t.gpus_per_trial == 0 and n == 1 and "xla_cpu_multi_thread_eigen" not in flags:
        flags += " --xla_cpu_multi_thread_eigen=false"
    env = {
        "XLA_FLAGS": flags.strip(),
        "OMP_NUM_THREADS": str(n),
        "OPENBLAS_NUM_THREADS": str(n),
        "MKL_NUM_THREADS": str(n),
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # trials sharing a GPU must not grab it all
    }
    if t.gpus_per_trial > 0:
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{MEMORY_SHARE * min(t.gpus_per_trial, 1):.3f}"
        env["JAX_PLATFORMS"] = os.environ.get("JAX_PLATFORMS", "")
    else:  # Ray counts no GPU for this trial (and may leave the node's GPUs visible to it)
        env["JAX_PLATFORMS"] = "cpu"
    return env


def device_error(t: ml_collections.ConfigDict, backend: str, visible: str) -> str | None:
    """Why a process with JAX backend `backend` cannot run a trial of `t` (None: it can)."""
    if t.gpus_per_trial > 0 and backend == "cpu":
        return (f"tune.gpus_per_trial={t.gpus_per_trial} but JAX in the trial process sees no GPU "
                f"(backend cpu, CUDA_VISIBLE_DEVICES={visible!r}); install JAX's CUDA wheels on "
                "every node (`make setup CUDA=1`) or set --config.tune.gpus_per_trial=0")
    return None


class DeviceError(RuntimeError):
    """A trial that runs on another device than it asked Ray for."""


def where() -> dict[str, Any]:
    """Where this process runs: node, JAX backend and device kind, GPU ids, GPU memory share
    (the columns `WHERE` of a tuning run's trials.csv)."""
    import ray

    from heartjax.runtime import device_info

    node = os.uname().nodename  # and Ray's id of the node: several can share a host
    if ray.is_initialized():
        node += "/" + ray.get_runtime_context().get_node_id()[:8]
    device = device_info()
    return {"node": node, "backend": device["backend"], "device_kind": device["device_kind"],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "memory_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "")}


WHERE = ("node", "backend", "device_kind", "cuda_visible_devices", "memory_fraction")


def check_trial_device(t: ml_collections.ConfigDict) -> dict[str, Any]:
    """Inside a trial: `where()`, or DeviceError when it got no device of the kind it asked for."""
    info = where()
    problem = device_error(t, info["backend"], info["cuda_visible_devices"])
    if problem:
        raise DeviceError(problem)
    return info


def check_storage(path: Path) -> None:
    """One line unless `path` is a folder this process can create and write."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".heartjax-write-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"storage {path}: cannot create or write it ({e.strerror or e}); give "
                        "--storage a folder every node of the cluster can write") from None


def alive_nodes() -> int:
    """Nodes of the Ray cluster this driver joined."""
    import ray

    return sum(1 for n in ray.nodes() if n.get("Alive"))


def check_feasible(t: ml_collections.ConfigDict) -> None:
    """One line when no node of the cluster offers a trial's resources (Ray would wait forever)."""
    import ray

    need = {"CPU": t.cpus_per_trial, "GPU": t.gpus_per_trial, **custom_resources(t)}
    for node in ray.nodes():
        have = node.get("Resources", {})
        if node.get("Alive") and all(have.get(k, 0.0) >= v for k, v in need.items() if v):
            return
    wanted = ", ".join(f"{k}={v:g}" for k, v in need.items() if v)
    raise UserError(f"no node of the Ray cluster offers a trial's resources ({wanted}); lower "
                    "tune.cpus_per_trial / tune.gpus_per_trial or tune.resources, or add a node "
                    "that has them")


def probe_device(t: ml_collections.ConfigDict) -> dict[str, Any]:
    """`where()` a trial would run, asked of a Ray task with a trial's resources before any
    trial starts: a trial given a GPU that JAX cannot see ends the run with one line."""
    import ray

    info = ray.get(ray.remote(where).options(**task_options(t)).remote())
    problem = device_error(t, info["backend"], info["cuda_visible_devices"])
    if problem:
        raise UserError(problem)
    return info
