"""The data scientist's notebooks run headless from the repo root on small synthetic data, each
pointed at it through its environment variables."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO


def execute(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[str, int]:
    """Run notebooks/NAME (a failing cell fails the test); returns its printed text and its
    number of figures."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits them
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    return text, sum("image/png" in o.get("data", {}) for o in outputs)


def test_explore_data_shows_both_datasets(synthetic_dir: Path, monkeypatch):
    text, figures = execute("explore_data.ipynb", monkeypatch, HEARTJAX_DATA=str(synthetic_dir),
                            HEARTJAX_PTB=str(synthetic_dir / "ptb"))
    assert "mitbih train: 500 beats" in text and "ptb test: 75 beats" in text
    assert "median R-R intervals" in text
    assert figures == 5  # class balance, a mean beat per class of each, R-R of each


@pytest.mark.slow  # it needs a tuning run
def test_tuning_results_shows_the_run_and_its_winner(synthetic_tune_run: Path,
                                                     synthetic_dir: Path, monkeypatch):
    text, figures = execute("tuning_results.ipynb", monkeypatch,
                            HEARTJAX_RUN=str(synthetic_tune_run),
                            HEARTJAX_TEST=str(synthetic_dir / "ptb" / "heart_test.parq"))
    assert "2 trials" in text and "on 75 beats" in text and "test beats misclassified" in text
    assert figures == 4  # rungs, best so far, confusion matrix, misclassified beats
