"""Training speed on an accelerator: `python -m heartjax.bench_gpu [--json] [--out FILE] [--quick]`.

Meant for one NVIDIA H100 or H200 (any JAX backend runs it); about 5 minutes there. On the card
it runs on it measures:

- training beats/s of cnn2d, transformer and resnet1d at batch 32, 128 and 1024 on MIT-BIH-sized
  data (87,554 beats; the first calls of an epoch, about 2 seconds each; compile excluded);
- populations of 8, 32 and 128 cnn2d members (`heartjax.population`'s program) in
  model-beats/s (members x beats/s), beside one model alone (target: 32 members >= 10x);
- `patch` against `xla` convolutions (`model.conv_impl`) of cnn2d and resnet1d at batch 128;
- 1, 4 and 8 processes sharing the card, each training first rungs of the MIT-BIH ladder as
  tuning trials do (`heartjax.fidelity.train_rung`, then a prediction of the validation split),
  set up as Ray trials that share a GPU are (no preallocation, 0.9/processes of its memory):
  configurations an hour over all processes after warm-up (target: >= 2,000 on one card).

The beats are random (speed does not depend on their values) unless data/heart_big_train.parq
exists (`heartjax.bench.beats`). Needs neither Ray nor the raw-data packages. `--quick` measures
tiny sizes with 1 and 2 processes (1-2 minutes on a CPU). `--out FILE` is rewritten after each
section, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from heartjax import bench, fidelity, losses, metrics, steps
from heartjax.cli import load_config
from heartjax.config import base_config
from heartjax.data import CLASS_NAMES
from heartjax.errors import Parser, cli_entry
from heartjax.models.layers import conv_impl_for
from heartjax.runtime import device_info, enable_compilation_cache

RUNG_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "mitbih.py")
CONV_MODELS = ("cnn2d", "resnet1d")
TARGET_SPEEDUP = 10.0  # a population of 32 against one model alone, in model-beats/s
TARGET_CONFIGS = 2_000.0  # rung-0 configurations an hour on one card
SECTIONS = ("processes", "population", "train", "conv")  # in the order they run
RATES = ("beats_per_s", "model_beats_per_s", "compile_s", "timed_beats")  # of bench.time_training


@dataclass(frozen=True)
class Plan:
    """What one run measures."""

    batches: tuple[int, ...]
    members: tuple[int, ...]
    processes: tuple[int, ...]
    conv_batch: int  # batch of the patch/xla comparison
    beats: int  # training beats of each measurement (0: bench.QUICK_BEATS of the model)
    calls: int  # jitted calls an epoch is cut into (0: train.calls_per_epoch)
    max_s: float  # seconds timed per training measurement, after its warm call
    window_s: float  # seconds each group of processes trains rungs, after warm-up
    rung_table: int  # beats split into training and validation (data.val_fraction)
    rung_pool: int = 0  # rung-0 pool (0: the config's tune.ladder[0])
    rung_beats: int = 0  # rung-0 training beats (0: the config's tune.rung_beats)


FULL = Plan((32, 128, 1024), (8, 32, 128), (1, 4, 8), 128, bench.SIZES["mitbih"], 0, 2.0, 12.0,
            bench.SIZES["mitbih"])
# XLA:CPU's own convolutions are 15-50x slower than patch: batch 32 reuses the patch timings
QUICK = Plan((32,), (2, 4), (1, 2), 32, 0, 4, 1.0, 3.0, 5_120, rung_pool=1_000, rung_beats=4_096)


def run(plan: Plan, log: Callable[..., None], save: Callable[[dict], None],
        sections: tuple[str, ...] = SECTIONS) -> dict[str, Any]:
    """Every measurement of `sections` as one dict (what `--json` prints); `save` gets it after
    each measurement."""
    data, source = bench.beats(plan.beats or max(bench.QUICK_BEATS.values()))
    info = device_info()
    precision = str(jax.config.jax_default_matmul_precision or "default")
    log(f"{bench.describe(info)}; matmul precision {precision}; beats: {source}")
    out: dict[str, Any] = {"device": info, "matmul_precision": precision, "beats": source,
                           "quick": plan is QUICK, "cpus": bench.cpu_count()}
    done: dict[tuple, dict[str, float]] = {}

    def measure(model: str, batch: int, members: int = 0, conv_impl: str = "") -> dict[str, float]:
        impl = conv_impl_for(conv_impl or base_config("mitbih", model).model.conv_impl)
        key = (model, batch, members, impl)
        if key not in done:
            n = plan.beats or bench.QUICK_BEATS["population" if members else model]
            r = bench.time_training(model, batch, data, n, members, plan.calls, impl, plan.max_s)
            done[key] = {"conv_impl": impl, **{k: r[k] for k in RATES}}
        return done[key]

    # processes first, while this process holds next to nothing on the card; the sections
    # that show a target next, so that a run cut short by its time limit has those
    out["targets"] = {}
    if "processes" in sections:
        processes(plan, out, log, save)
    if "population" in sections:
        population(plan, measure, out, log, save)
    if "train" in sections:
        out["train"] = []
        for model in bench.MODELS:
            for batch in plan.batches:
                r = measure(model, batch)
                out["train"].append({"model": model, "batch": batch, **r})
                log(f"{model:12s} batch {batch:5d}: {r['beats_per_s']:10,.0f} beats/s  "
                    f"({r['conv_impl']} convolutions; compile {r['compile_s']:5.1f} s)")
                save(out)
    if "conv" in sections:
        out["conv"] = []
        for model in CONV_MODELS:
            patch, xla = (measure(model, plan.conv_batch, conv_impl=impl)["beats_per_s"]
                          for impl in ("patch", "xla"))
            out["conv"].append({"model": model, "batch": plan.conv_batch,
                                "patch_beats_per_s": patch, "xla_beats_per_s": xla,
                                "xla_over_patch": xla / patch})
            log(f"{model:12s} batch {plan.conv_batch}: patch {patch:10,.0f}, xla {xla:10,.0f} "
                f"beats/s (xla {xla / patch:.2f}x patch)")
            save(out)
    return out


def processes(plan: Plan, out: dict[str, Any], log: Callable[..., None],
              save: Callable[[dict], None]) -> None:
    """Groups of processes sharing the card, training rungs (`time_processes`), into `out`."""
    out["processes"] = []
    # the later groups load the first's programs from a persistent compilation cache
    with tempfile.TemporaryDirectory() as cache:
        for count in plan.processes:
            r = time_processes(count, plan, cache)
            out["processes"].append(r)
            log(f"{count} process(es) sharing the card: {r['configs_per_hour']:8,.0f} rung-0 "
                f"configurations an hour ({r['rungs']} rungs in {r['wall_s']:.1f} s, "
                f"{r['rung_s']:.2f} s a rung; warm-up {r['warmup_s']:.0f} s)")
            save(out)
    best = max(r["configs_per_hour"] for r in out["processes"])
    out["targets"]["rung0_configs_per_hour"] = {"target": TARGET_CONFIGS, "measured": best}
    log(f"  target >= {TARGET_CONFIGS:,.0f} an hour on one card: {_met(best >= TARGET_CONFIGS)}")
    save(out)


def population(plan: Plan, measure: Callable[..., dict[str, float]], out: dict[str, Any],
               log: Callable[..., None], save: Callable[[dict], None]) -> None:
    """Populations of cnn2d members beside one model alone, into `out`."""
    one = measure("cnn2d", 32)
    out["population"] = {"model": "cnn2d", "batch": 32, "members": [],
                         "one_model_beats_per_s": one["beats_per_s"]}
    log(f"one cnn2d alone (batch 32): {one['beats_per_s']:12,.0f} beats/s")
    for k in plan.members:
        r = measure("cnn2d", 32, members=k)
        speedup = r["model_beats_per_s"] / one["beats_per_s"]
        out["population"]["members"].append({"members": k, **r, "speedup": speedup})
        target = ""
        if k == 32:
            out["targets"]["population_32_speedup"] = {"target": TARGET_SPEEDUP,
                                                       "measured": speedup}
            target = f" (target >= {TARGET_SPEEDUP:.0f}x: {_met(speedup >= TARGET_SPEEDUP)})"
        log(f"population of {k:3d} cnn2d: {r['model_beats_per_s']:12,.0f} model-beats/s = "
            f"{speedup:5.1f}x one model{target}  (compile {r['compile_s']:.1f} s)")
        save(out)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def time_processes(count: int, plan: Plan, cache: str) -> dict[str, Any]:
    """`count` worker processes (`--worker`) that warm up, then train rungs together for
    `plan.window_s` seconds; the rungs all finished over the longest worker's time."""
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{0.9 / count:.4f}", "HEARTJAX_XLA_CACHE": cache}
    cmd = [sys.executable, "-m", "heartjax.bench_gpu", "--worker",
           *(["--quick"] if plan is QUICK else [])]
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(count)]
    ok = False
    try:
        for p in procs:
            _expect(p, "ready")
        warmup_s = time.perf_counter() - t0
        for p in procs:  # all start timing together
            p.stdin.write("go\n")
            p.stdin.flush()
        rows = [json.loads(_expect(p, "{")) for p in procs]
        ok = True
    finally:
        for p in procs:
            if not ok:  # one failed: the others would train on for nothing
                p.kill()
            p.wait()
    rungs = sum(r["rungs"] for r in rows)
    wall = max(r["wall_s"] for r in rows)
    return {"processes": count, "rungs": rungs, "wall_s": wall,
            "configs_per_hour": 3600 * rungs / wall,
            "rung_s": float(np.mean([r["wall_s"] / r["rungs"] for r in rows])),
            "rung_compile_s": float(np.mean([r["compile_s"] for r in rows])),
            "warmup_s": warmup_s, "rung_beats": rows[0]["rung_beats"], "pool": rows[0]["pool"],
            "train_beats": rows[0]["train_beats"], "val_beats": rows[0]["val_beats"]}


def _expect(proc: subprocess.Popen, prefix: str) -> str:
    """The worker's next stdout line that starts with `prefix` (others are passed on)."""
    for line in proc.stdout:
        if line.startswith(prefix):
            return line
        print(line, end="", file=sys.stderr)
    raise RuntimeError(f"a benchmark worker exited ({proc.wait()}) before it printed {prefix!r}")


def worker(plan: Plan) -> None:
    """One process of the shared-card measurement: warm up (compile, one rung), print "ready",
    wait for a line on stdin, train rungs for `plan.window_s` seconds, print one JSON line."""
    enable_compilation_cache()  # HEARTJAX_XLA_CACHE: the run's own folder
    config = load_config(RUNG_CONFIG)  # the default `make tune` search's first trial
    tune = config.tune
    pool_size, budget = plan.rung_pool or tune.ladder[0], plan.rung_beats or tune.rung_beats
    data, _ = bench.beats(plan.rung_table)
    cut = plan.rung_table - round(plan.rung_table * config.data.val_fraction)
    train = steps.Arrays(*(a[:cut] for a in data))
    val = steps.Arrays(*(a[cut:] for a in data))
    y, y_val = np.asarray(train.y), np.asarray(val.y)
    classes = CLASS_NAMES["mitbih"]
    (pool,) = fidelity.nested_pools(y, (pool_size,), config.data.seed)
    weights = (losses.loss_weights(y, len(classes), config.train)
               * fidelity.importance(y, pool, len(classes)))
    trainer = fidelity.Trainer(config, len(classes))

    def rung(seed: int) -> dict[str, float]:  # as fidelity.train_ladder runs one
        state, _, row = fidelity.train_rung(trainer, train, [pool], weights, budget, seed)
        metrics.evaluate_predictions(y_val, fidelity.predict_rung(trainer, state, val), classes)
        return row

    first = rung(0)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    rungs = 0
    while time.perf_counter() - t0 < plan.window_s:
        rung(rungs + 1)
        rungs += 1
    print(json.dumps({"rungs": rungs, "wall_s": time.perf_counter() - t0,
                      "compile_s": first["compile_s"], "rung_beats": first["beats_seen"],
                      "pool": len(pool), "train_beats": cut, "val_beats": len(y_val)}), flush=True)


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = Parser(prog="python -m heartjax.bench_gpu",
               description="Measure heartjax's training speed on this machine's accelerator.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.add_argument("--out", type=Path, help="also write the JSON to this file (after each section)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, 1 and 2 processes (1-2 min on a CPU)")
    p.add_argument("--sections", type=bench.csv_of(str, SECTIONS), default=SECTIONS,
                   help=f"comma-separated (default: all of {','.join(SECTIONS)})")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.worker:
        return worker(plan)
    # take card memory as needed: the worker processes share the card with this one
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    log = (lambda *a, **k: print(*a, **k, file=sys.stderr)) if args.json else print

    def save(out: dict[str, Any]) -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(out, indent=2))
            tmp.replace(args.out)

    out = run(plan, log, save, args.sections)
    if args.json:
        print(json.dumps(out, indent=2))
    if args.out:
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
