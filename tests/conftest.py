"""Shared real-data fixtures (the read-only ../shared folder, one MIT-BIH build per test run) and
the test tiers: `pytest -m "not slow"` is the fast tier, which needs no ../shared."""

from __future__ import annotations

import os

# Before JAX loads, here and in every CLI the tests start (they inherit os.environ): on a GPU,
# take memory as needed instead of 75% of the card up front, and run float32 matmuls and
# convolutions in full precision rather than TF32, so tolerances set on the CPU hold there.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from heartjax.runtime import enable_compilation_cache

# The persistent XLA compilation cache the CLIs use, here too: a rerun of the suite reuses the
# programs it compiled, about half its JAX time (HEARTJAX_XLA_CACHE="" disables it).
enable_compilation_cache()

REPO = Path(__file__).parents[1]
# the read-only shared data folder; HEARTJAX_SHARED points elsewhere (a missing folder skips the
# real-data tests, as on a machine without it)
SHARED = Path(os.environ.get("HEARTJAX_SHARED", REPO.parent / "shared"))

# Fixtures that read ../shared or train on what it holds: a test that uses one, directly or
# through another fixture, is slow.
REAL_DATA_FIXTURES = {"shared_dir", "mitdb_dir", "svdb_dir", "ptbdb_dir", "nstdb_dir",
                      "ptb_sample_path", "mitbih_tables", "ptb_tables", "ptb_run", "mitbih_model"}
# Tests without real data that took over 5 s on the two shared CPU cores (`--durations=0`, load 6-9), by
# "file::test" (all its parameters); tests/test_fast.py checks that each still exists.
SLOW_TESTS = {
    "tests/test_bench.py::test_quick_gpu_bench_measures_every_section",  # 170 s
    "tests/test_bench.py::test_quick_bench_reports_every_measurement",  # 23 s
    "tests/test_cluster.py::test_trials_share_a_gpu_by_its_fraction_and_see_their_share",  # Ray, 48 s
    "tests/test_fidelity.py::test_folds_batched_in_one_program_train_as_the_loop_does",  # 37 s
    "tests/test_fidelity.py::test_a_ladder_over_folds_scores_every_record_out_of_fold",  # 9 s
    "tests/test_fidelity.py::test_a_ladder_population_reports_its_best_member_and_all_members",  # 8 s
    "tests/test_loop.py::test_population_resumes_too",  # 10 s
    "tests/test_noise.py::test_real_noise_off_changes_no_bit",  # 16-31 s
    "tests/test_noise.py::test_the_bank_is_an_argument_of_the_step_and_populations_share_it",  # 12 s
    "tests/test_noise.py::test_bad_noise_inputs_are_one_line_and_exit_2",  # CLIs, 3-9 s
    "tests/test_noise.py::test_training_with_real_noise_runs",  # 5-10 s
    "tests/test_noise.py::test_a_fold_batched_ladder_trains_with_real_noise",  # 10-20 s
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark slow the tests that use real data and those of SLOW_TESTS."""
    for item in items:
        if (REAL_DATA_FIXTURES & set(item.fixturenames)
                or f"{item.path.relative_to(REPO)}::{item.originalname}" in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


def synthetic_frame(dataset: str, n: int, seed: int) -> pd.DataFrame:
    """A beat table in the built tables' layout ("0".."186", "target", the R-R columns, "record")
    whose classes a small model tells apart: each class has its bump at its own place in the beat,
    and every class but the first comes early (a shorter previous R-R interval)."""
    from heartjax.data import CLASS_NAMES, RR_COLUMNS, SIGNAL_LEN

    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES[dataset])
    y = np.arange(n) % k  # every class, evenly
    t = np.arange(SIGNAL_LEN)
    centre = 25 + 140 * y[:, None] / max(k - 1, 1) + rng.integers(-4, 5, (n, 1))
    x = 0.2 + 0.7 * np.exp(-(((t - centre) / 6.0) ** 2)) + 0.03 * rng.standard_normal((n, SIGNAL_LEN))
    frame = pd.DataFrame(np.clip(x, 0, 1).astype(np.float32), columns=[str(i) for i in t])
    frame["target"] = y.astype(float)
    prev = np.where(y == 0, 0.8, 0.5) + 0.05 * rng.standard_normal(n)
    for name, values in zip(RR_COLUMNS, (prev, np.full(n, 0.9), np.full(n, 0.8), np.full(n, 0.8))):
        frame[name] = values.astype(np.float32)
    frame["record"] = (100 + np.arange(n) % 6).astype(str)
    return frame


def write_synthetic_tables(folder: Path) -> Path:
    """Small synthetic train/test tables of both datasets under their standard names: MIT-BIH's
    in `folder`, PTB's in `folder/ptb` (as `data` and `data/ptb`)."""
    from heartjax.data import TABLE_FILES, write_table

    for dataset, where, n in (("mitbih", folder, 500), ("ptb", folder / "ptb", 300)):
        for name, rows, seed in zip(TABLE_FILES[dataset], (n, n // 4), (0, 1)):
            write_table(synthetic_frame(dataset, rows, seed), where / name)
    return folder


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`write_synthetic_tables` once per test run (no ../shared needed)."""
    return write_synthetic_tables(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def synthetic_tune_run(synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-trial `heartjax.tune` run on a two-rung ladder over the synthetic PTB tables (Ray
    starts; the winner is retrained into RUN/best), without its report."""
    run = tmp_path_factory.mktemp("tune") / "run"
    result = subprocess.run(
        [sys.executable, "-m", "heartjax.tune", "--config", "configs/ptb.py:smoke",
         f"--config.data.dir={synthetic_dir / 'ptb'}", "--workdir", str(run), "--verbose", "0",
         "--no-report", "--config.tune.ladder=(100,0)", "--config.tune.rung_beats=256",
         "--config.tune.reduction_factor=2", "--config.tune.num_samples=2",
         "--config.train.epochs=1"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def run_data_cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m heartjax.data ARGS` from the repo root and capture its output."""
    return subprocess.run([sys.executable, "-m", "heartjax.data", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared data folder next to the repo (skips when absent)."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data folder {SHARED}/data not found (expected next to the repo, "
                    "or where HEARTJAX_SHARED points)")
    return SHARED


def physionet_dir(shared_dir: Path, name: str, what: str) -> Path:
    """../shared's copy of the PhysioNet database `name` (skips when it has no RECORDS)."""
    path = shared_dir / "data" / "physionet" / name
    if not (path / "RECORDS").is_file():
        pytest.skip(f"{what} records not found in {path}")
    return path


@pytest.fixture(scope="session")
def svdb_dir(shared_dir: Path) -> Path:
    """The development half of the MIT-BIH Supraventricular Arrhythmia Database (39 records)."""
    return physionet_dir(shared_dir, "svdb-dev", "svdb")


@pytest.fixture(scope="session")
def mitdb_dir(shared_dir: Path) -> Path:
    """The 48 raw MIT-BIH records."""
    return physionet_dir(shared_dir, "mitdb", "MIT-BIH")


@pytest.fixture(scope="session")
def ptbdb_dir(shared_dir: Path) -> Path:
    """The raw PTB records of patient001."""
    path = shared_dir / "data" / "physionet" / "ptbdb"
    if not any(path.rglob("*.hea")):
        pytest.skip(f"PTB records not found in {path}")
    return path


@pytest.fixture(scope="session")
def nstdb_dir(shared_dir: Path) -> Path:
    """The MIT-BIH Noise Stress Test records: bw, ma, em_est118, 118e00, 118e_6."""
    path = shared_dir / "data" / "physionet" / "nstdb"
    if not (path / "bw.hea").is_file():
        pytest.skip(f"nstdb records not found in {path}")
    return path


@pytest.fixture(scope="session")
def ptb_sample_path(shared_dir: Path) -> Path:
    """The course-format PTB sample (1940 beats, 1403 abnormal)."""
    path = shared_dir / "data" / "course" / "ptb_sample.parq"
    if not path.is_file():
        pytest.skip(f"PTB sample {path} not found")
    return path


@pytest.fixture(scope="session")
def mitbih_tables(mitdb_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build all 48 MIT-BIH records once (kaggle split) through the CLI; returns the out dir.

    The dir also holds build.json: the CLI's stdout, stderr and wall time.
    """
    out = tmp_path_factory.mktemp("mitbih")
    t0 = time.perf_counter()
    result = run_data_cli("build", "mitbih", "--raw", mitdb_dir, "--out", out)
    seconds = time.perf_counter() - t0
    assert result.returncode == 0, result.stderr
    (out / "build.json").write_text(json.dumps(
        {"stdout": result.stdout, "stderr": result.stderr, "seconds": seconds}))
    return out


def run_module(module: str, *args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m MODULE ARGS` from the repo root and capture its output."""
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2, exactly one line on stderr that names the problem, and no traceback."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


@pytest.fixture(scope="session")
def ptb_tables(ptb_sample_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real PTB sample split 80/20 (stratified, seed 0) into heart_train/heart_test.parq."""
    out = tmp_path_factory.mktemp("ptb")
    result = run_data_cli("split", ptb_sample_path, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def ptb_run(ptb_tables: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short real training run of the PTB smoke config (cnn1d), shared by several tests."""
    return train_run("configs/ptb.py:smoke", ptb_tables, tmp_path_factory.mktemp("ptb_run") / "run",
                     epochs=3)


def train_run(config: str, data_dir: Path, workdir: Path, epochs: int) -> Path:
    """`heartjax.train` of `config` on the tables in `data_dir` into `workdir` (asserted to work)."""
    result = run_module("heartjax.train", "--config", config, f"--config.data.dir={data_dir}",
                        f"--config.train.epochs={epochs}", "--workdir", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def mitbih_model(mitbih_tables: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The new-patient model (R-R and template inputs; DS1 alone) trained briefly on 8,000
    beats: a model too small or too short-trained sits near its decision boundaries, where a
    resampled beat flips class."""
    workdir = tmp_path_factory.mktemp("mitbih_model") / "run"
    result = run_module("heartjax.train", "--config", "configs/mitbih.py:interpatient_ds1",
                        f"--config.data.dir={mitbih_tables}", "--config.data.extra_train=",
                        "--config.data.train_limit=8000",
                        "--config.train.epochs=3", "--workdir", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir
