"""Wall time of a tuning rung trained in one program against a loop: the folds of a
cross-validated rung (`tune.batch_folds`), and a population's members against the same
configurations one trial after another (`heartjax.fidelity.train_ladder(members=...)`).

    python experiments/fidelity_batching.py folds --data /tmp/hj_mitbih
    python experiments/fidelity_batching.py population --data /tmp/hj_mitbih --members 8

The tables are `python -m heartjax.data build mitbih --split interpatient` (DS1 trains, as
`:tune_interpatient` searches; the second lead's extra beats are left out: a rung's pool is
drawn from the first 6,000-beat pool whatever the split's size). Every variant runs rung 0
once to compile, then the timed runs alternate between the variants (A B A B), so that a
machine shared with other work slows both alike; each time is printed as it comes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import jax

from heartjax import fidelity, population, space
from heartjax.cli import load_config
from heartjax.train import load_folds, load_splits


def config_for(data: str, folds: int, batch_folds: str = "off"):
    """`:tune_interpatient` on the tables in `data`, rung 0 only (12,288 beats, pool 6,000)."""
    c = load_config("configs/mitbih.py:tune_interpatient")
    c.data.dir, c.data.extra_train = data, ""
    c.tune.folds = folds
    c.tune.ladder = (6_000,)
    c.tune.batch_folds = batch_folds
    return c


def timed(fn: Callable[[], dict]) -> tuple[float, float, dict]:
    """Wall and CPU seconds of `fn()` (CPU seconds: this process's, all threads: less moved by
    other work on a shared machine than the wall time), and its row."""
    t0, c0 = time.perf_counter(), time.process_time()
    row = fn()
    return time.perf_counter() - t0, time.process_time() - c0, row


def alternate(variants: dict[str, Callable[[], dict]], repeats: int) -> dict[str, list[float]]:
    """Each variant once untimed (compilation), then `repeats` timed rounds, A B A B."""
    for name, fn in variants.items():
        s, cpu, row = timed(fn)
        print(f"{name}: first run {s:.1f} s ({cpu:.1f} CPU s, compile_s "
              f"{row.get('compile_s', 0):.1f})", flush=True)
    times = {name: [] for name in variants}
    for r in range(repeats):
        for name, fn in variants.items():
            s, cpu, row = timed(fn)
            times[name].append(s)
            print(f"{name} round {r}: {s:.1f} s ({cpu:.1f} CPU s), train_s {row['train_s']:.1f}, "
                  f"eval_s {row['eval_s']:.1f}, {row['beats_per_s']:,.0f} beats/s, load "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    return times


def folds(args) -> dict:
    """Rung 0 over `args.folds` folds: the loop against one batched program (the rung's wall
    seconds after compilation, the Trainer and arrays set up once)."""
    splits = load_folds(config_for(args.data, args.folds), args.folds)
    rungs = {mode: fidelity.Rungs(config_for(args.data, args.folds, mode), splits)
             for mode in ("off", "on")}
    return alternate({f"folds {m}": (lambda r=r: r.run(0)) for m, r in rungs.items()},
                     args.repeats)


def members_of(c, k: int) -> list[dict]:
    """K members as a tuning trial draws them, member 0 at the config's own values."""
    searched = space.parse(c.tune.search_space, c)
    first = {p: c.train[p.split(".")[1]] for p in population.MEMBER_FIELDS}
    return population.sample_members(searched, first, k, c.train.seed, rng_seed=0)


def populations(args) -> dict:
    """Rung 0 of a population of K against the same K configurations one trial after another,
    each trial set up afresh as Ray's would be (its compilation loaded from the persistent
    cache that the first, untimed, run filled)."""
    c = config_for(args.data, 0)
    split = load_splits(c)
    members = members_of(c, args.members)
    configs = population.member_configs(c, members)

    def population_trial() -> dict:
        return fidelity.Rungs(c, [split], members).run(0)

    def one_by_one() -> dict:
        rows = [fidelity.Rungs(m, [split]).run(0) for m in configs]
        return {key: sum(r[key] for r in rows) for key in ("train_s", "eval_s")} | {
            "beats_per_s": sum(r["beats_per_s"] for r in rows) / len(rows)}

    times = alternate({f"population of {args.members}": population_trial,
                       f"{args.members} trials": one_by_one}, args.repeats)
    for name, seconds in times.items():
        print(f"{name}: " + ", ".join(f"{args.members / s * 3600:.0f}" for s in seconds)
              + " configurations an hour", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("folds", "population"))
    parser.add_argument("--data", default="/tmp/hj_mitbih")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s)", flush=True)
    times = (folds if args.what == "folds" else populations)(args)
    print(json.dumps(times))


if __name__ == "__main__":
    main()
