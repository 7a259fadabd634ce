"""Benchmark the real training path: `python -m heartjax.bench [--json] [--quick]`.

For the original cnn2d and transformer configs and the default resnet1d it measures training
beats/s at batch 32 and 128 over whole epochs of PTB-sized (11,641 beats) and MIT-BIH-sized
(87,554 beats) data, with compilation timed separately; evaluation beats/s; train FLOPs per
beat (XLA's cost analysis of one step) and the fraction of this machine's measured matmul peak;
and population training (K cnn2d members in one program) against the same members one by one.

Everything runs through `heartjax.train` / `heartjax.population`: the programs `heartjax.train`
runs, not a special benchmark path. Beats are the real MIT-BIH training beats when
`data/heart_big_train.parq` exists (tiled to size), else random ones of the same shape (the
speed does not depend on the values). `--quick` (< 2 min) times short slices of an epoch
(QUICK_BEATS) instead of whole epochs, at PTB size only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from heartjax import population, predict, steps
from heartjax.config import base_config
from heartjax.errors import Parser, UserError, cli_entry
from heartjax.models import build_model
from heartjax.runtime import device_info

SIZES = {"ptb": 11_641, "mitbih": 87_554}  # training beats of each dataset's standard split
MODELS = ("cnn2d", "transformer", "resnet1d")  # original configs, default resnet1d
QUICK_BEATS = {"cnn2d": 4_096, "resnet1d": 2_048, "transformer": 512, "population": 2_048}


def matmul_peak(n: int = 1024, reps: int = 20) -> float:
    """Measured float32 matmul throughput (GFLOP/s): the best of `reps` chained n×n products."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32) / math.sqrt(n))

    @jax.jit
    def chain(x):  # each product depends on the last: nothing can be hoisted or skipped
        return jax.lax.fori_loop(0, 8, lambda _, y: y @ a, x)

    chain(a).block_until_ready()
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        chain(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 8 * 2 * n**3 / best / 1e9


def beats(n: int, data_dir: str = "data") -> tuple[steps.Arrays, str]:
    """n real MIT-BIH training beats (tiled) when the table exists, else random ones."""
    path = Path(data_dir) / "heart_big_train.parq"
    if path.exists():
        from heartjax.data import load_table

        table = load_table(path, "mitbih")
        idx = np.arange(n) % len(table)
        x, y = table.x[idx], table.y[idx]
        source = f"{path} (tiled to {n})"
    else:
        rng = np.random.default_rng(0)
        x = rng.random((n, 187), np.float32)
        y = rng.integers(0, 5, n).astype(np.int32)
        source = "random beats"
    no_context = jnp.zeros((n, 0), jnp.float32)  # the benchmarked models read none
    return steps.Arrays(jnp.asarray(x), jnp.asarray(y, jnp.int32), no_context), source


def step_flops(compiled: Any) -> float:
    """FLOPs of one train step: XLA's cost analysis of a compiled chunk program counts the
    `lax.scan` body (one step) once, whatever the trip count."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def describe(info: dict[str, Any]) -> str:
    """One line for `heartjax.runtime.device_info()`: "gpu: 1 x NVIDIA H100 ... (jax 0.10.2)"."""
    return f"{info['backend']}: {info['device_count']} x {info['device_kind']} (jax {info['jax']})"


def _setup(model_name: str, batch: int, n: int, members: int = 0, calls: int = 0,
           conv_impl: str | None = None):
    """State, chunk program, plan and class weights as training builds them
    (`heartjax.steps.build_program`; `calls` > 0 overrides `train.calls_per_epoch`;
    `conv_impl` the model's convolutions)."""
    c = base_config("mitbih", model_name)
    c.train.batch_size = batch
    if conv_impl:
        c.model.conv_impl = conv_impl
    c.train.calls_per_epoch = calls or c.train.calls_per_epoch
    program = steps.build_program(c, n, 5)
    if members:
        configs = population.member_configs(
            c, [{"train.seed": i, "train.learning_rate": 1e-3 * 2 ** (i % 4 - 2)} for i in range(members)]
        )
        state = population.create_population_state(program.create, configs)
        weights = jnp.ones((members, 5))
        chunk = population.make_population_chunk(c.train)
    else:
        state = program.create(c.train.seed)
        weights = jnp.ones(5)
        chunk = steps.make_train_chunk(c.train)
    return state, chunk, program.plan, weights


def time_training(
    model_name: str, batch: int, data: steps.Arrays, n: int, members: int = 0, calls: int = 0,
    conv_impl: str | None = None, max_s: float = 0.0,
) -> dict[str, float]:
    """Compile time, then one whole epoch over the first n beats (beats/s; × members =
    model-beats/s). `max_s` > 0: only the epoch's first calls, as many (at least 2) as fit in
    about max_s seconds at the warm call's pace, so a slow configuration cannot hold up a run."""
    sub = steps.Arrays(data.x[:n], data.y[:n], data.context[:n])
    state, chunk, plan, weights = _setup(model_name, batch, n, members, calls, conv_impl)
    idx = jnp.zeros((plan.chunk, plan.batch), jnp.int32)
    t0 = time.perf_counter()
    compiled = chunk.lower(state, sub, idx, weights).compile()
    compile_s = time.perf_counter() - t0
    flops = step_flops(compiled) / plan.batch / max(members, 1)
    rng = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    state, _ = jax.block_until_ready(compiled(state, sub, idx, weights))  # warm: caches, allocator
    if max_s > 0:
        fit = max(math.ceil(max_s / (time.perf_counter() - t0)), 2)
        plan = plan._replace(calls=min(plan.calls, fit))
    jax.random.permutation(rng, n).block_until_ready()  # compiles the epoch's shuffle
    t0 = time.perf_counter()
    state, chunk_losses = steps.run_epoch(compiled, state, sub, plan, rng, weights)
    train_s = time.perf_counter() - t0
    if not np.isfinite(chunk_losses).all():
        raise FloatingPointError(f"{model_name}: the benchmark's training diverged")
    done = plan.beats
    return {"compile_s": compile_s, "epoch_s": train_s, "timed_beats": done,
            "beats_per_s": done / train_s,
            "train_flops_per_beat": flops,
            "model_beats_per_s": done * max(members, 1) / train_s}


def time_eval(model_name: str, data: steps.Arrays) -> float:
    """Evaluation beats/s of `predict_proba` (softmax of the model in fixed-size chunks)."""
    c = base_config("mitbih", model_name)
    model = build_model(c.model, 5)
    state = steps.create_train_state(model, steps.create_optimizer(c.train, 100), 0)
    fn = predict.make_predict_fn(model.apply)
    variables = predict.variables_of(state.params, state.batch_stats)
    predict.predict_proba(fn, variables, data.x, data.context, c.train.eval_batch_size)  # compile
    t0 = time.perf_counter()
    predict.predict_proba(fn, variables, data.x, data.context, c.train.eval_batch_size)
    return data.x.shape[0] / (time.perf_counter() - t0)


def run(
    models: tuple[str, ...] = MODELS,
    batches: tuple[int, ...] = (32, 128),
    sizes: tuple[str, ...] = ("ptb", "mitbih"),
    population_size: int = 8,
    quick: bool = False,
    log=print,
) -> dict[str, Any]:
    """All measurements as one dict (what `--json` prints)."""
    calls = 4 if quick else 0  # a short slice: few, long jitted calls, as in a real epoch
    if quick:
        sizes = ("ptb",)
    data, source = beats(max(SIZES[s] for s in sizes))
    peak = matmul_peak()
    info = device_info()
    log(f"{describe(info)}; matmul peak {peak:,.0f} GFLOP/s; beats: {source}")
    out: dict[str, Any] = {
        "device": info,
        "cpus": cpu_count(),
        "matmul_peak_gflops": peak,
        "beats": source,
        "quick": quick,
        "models": {},
    }
    for name in models:
        entry: dict[str, Any] = {"train": []}
        for size in sizes:
            n = QUICK_BEATS[name] if quick else SIZES[size]
            for batch in batches:
                r = time_training(name, batch, data, n, calls=calls)
                flops = entry.setdefault("train_flops_per_beat", r.pop("train_flops_per_beat"))
                r.update(size=size, beats=n, batch=batch,
                         peak_fraction=flops * r["beats_per_s"] / (peak * 1e9))
                entry["train"].append(r)
                log(f"{name:12s} {size:6s} batch {batch:4d}: {r['beats_per_s']:9,.0f} beats/s  "
                    f"epoch {r['epoch_s']:7.2f} s  compile {r['compile_s']:5.1f} s  "
                    f"{100 * r['peak_fraction']:4.1f}% of peak")
        m = 2 * QUICK_BEATS[name] if quick else SIZES["ptb"]
        entry["eval_beats_per_s"] = time_eval(name, steps.Arrays(data.x[:m], data.y[:m], data.context[:m]))
        log(f"{name:12s} eval: {entry['eval_beats_per_s']:,.0f} beats/s ({flops / 1e6:.1f} M train FLOPs/beat)")
        out["models"][name] = entry
    if population_size > 1:
        n = QUICK_BEATS["population"] if quick else SIZES["ptb"]
        one = time_training("cnn2d", 32, data, n, calls=calls)
        pop = time_training("cnn2d", 32, data, n, members=population_size, calls=calls)
        out["population"] = {
            "model": "cnn2d", "batch": 32, "members": population_size, "beats": n,
            "one_model_beats_per_s": one["beats_per_s"],
            "population_model_beats_per_s": pop["model_beats_per_s"],
            "speedup": pop["model_beats_per_s"] / one["beats_per_s"],
            "population_compile_s": pop["compile_s"],
        }
        p = out["population"]
        log(f"population of {population_size} cnn2d (batch 32): {p['population_model_beats_per_s']:,.0f} "
            f"model-beats/s vs {p['one_model_beats_per_s']:,.0f} one by one ({p['speedup']:.2f}x)")
    return out


def cpu_count() -> int:
    """CPU cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def csv_of(kind, allowed=None):
    """An argparse type: comma-separated values of `kind`, each in `allowed` when given."""
    def parse(text: str):
        items = tuple(kind(v) for v in text.split(",") if v)
        if allowed is not None and (bad := [v for v in items if v not in allowed]):
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(str, bad))}; choose from {', '.join(allowed)}")
        return items

    return parse


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    p = Parser(
        prog="python -m heartjax.bench",
        description="Measure heartjax's training and evaluation speed on this machine.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    p.add_argument("--quick", action="store_true", help="short epoch slices, PTB size only (< 2 min)")
    p.add_argument("--models", type=csv_of(str, MODELS), default=MODELS, help="comma-separated (default: all)")
    p.add_argument("--batches", type=csv_of(int), default=None, help="comma-separated (default 32,128; --quick: 32)")
    p.add_argument("--sizes", type=csv_of(str, tuple(SIZES)), default=tuple(SIZES), help="ptb,mitbih")
    p.add_argument("--population", type=int, default=8, help="cnn2d members of the population run (0: skip)")
    args = p.parse_args(argv)
    args.batches = args.batches or ((32,) if args.quick else (32, 128))
    if any(b < 1 for b in args.batches):
        raise UserError("--batches: batch sizes must be >= 1")
    log = (lambda *a, **k: print(*a, **k, file=sys.stderr)) if args.json else print
    out = run(args.models, args.batches, args.sizes, args.population, args.quick, log)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
