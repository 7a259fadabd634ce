"""Shared real-data fixtures: the read-only ../shared folder and one MIT-BIH build per test run."""

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

import pytest

REPO = Path(__file__).parents[1]
SHARED = REPO.parent / "shared"


def run_data_cli(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m heartjax.data ARGS` from the repo root and capture its output."""
    return subprocess.run([sys.executable, "-m", "heartjax.data", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared data folder next to the repo (skips when absent)."""
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data folder {SHARED}/data not found (expected next to the repo)")
    return SHARED


@pytest.fixture(scope="session")
def mitdb_dir(shared_dir: Path) -> Path:
    """The 48 raw MIT-BIH records."""
    path = shared_dir / "data" / "physionet" / "mitdb"
    if not (path / "RECORDS").is_file():
        pytest.skip(f"MIT-BIH records not found in {path}")
    return path


@pytest.fixture(scope="session")
def ptbdb_dir(shared_dir: Path) -> Path:
    """The raw PTB records of patient001."""
    path = shared_dir / "data" / "physionet" / "ptbdb"
    if not any(path.rglob("*.hea")):
        pytest.skip(f"PTB records not found in {path}")
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
    workdir = tmp_path_factory.mktemp("ptb_run") / "run"
    result = run_module("heartjax.train", "--config", "configs/ptb.py:smoke",
                        f"--config.data.dir={ptb_tables}", "--config.train.epochs=3",
                        "--workdir", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def mitbih_model(mitbih_tables: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The new-patient model (R-R and template inputs) trained briefly on 8,000 beats: a model
    too small or too short-trained sits near its decision boundaries, where a resampled beat
    flips class."""
    workdir = tmp_path_factory.mktemp("mitbih_model") / "run"
    result = run_module("heartjax.train", "--config", "configs/mitbih.py:interpatient",
                        f"--config.data.dir={mitbih_tables}", "--config.data.extra_train=",
                        "--config.data.train_limit=8000",
                        "--config.train.epochs=3", "--workdir", workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir
