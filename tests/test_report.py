"""The tuning report: one tiny real PTB tune, then `python -m heartjax.report` on it; the
tables per architecture on a made-up run."""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import assert_one_line_error, run_module

PLOTS = ("metric_vs_dropout", "metric_vs_batch_size", "metric_vs_learning_rate",
         "metric_vs_weight_decay", "parallel_coordinates", "learning_curves", "confusion_matrix",
         "per_class_recall", "pr_curve")
CLASSES = ("normal", "abnormal")


@pytest.fixture(scope="module")
def tune_run(ptb_tables: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-trial, 2-epoch tune of the PTB smoke config on the real beats."""
    workdir = tmp_path_factory.mktemp("report_tune") / "run"
    result = run_module("heartjax.tune", "--config", "configs/ptb.py:smoke",
                        f"--config.data.dir={ptb_tables}", "--config.tune.num_samples=3",
                        "--config.train.epochs=2", "--workdir", workdir, "--verbose", "0",
                        "--no-report", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def report(tune_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """The report CLI on the tune run: (out dir, completed process)."""
    out = tmp_path_factory.mktemp("report") / "out"
    result = run_module("heartjax.report", tune_run, "--out", out, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def _reported(tune_run: Path) -> pd.DataFrame:
    trials = pd.read_csv(tune_run / "trials.csv", dtype={"trial_id": str})
    ok = trials["status"].isin(["finished", "stopped"]) & trials["val_macro_recall"].notna()
    return trials[ok].sort_values("val_macro_recall", ascending=False, kind="stable")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def _md_tables(md: str) -> list[tuple[list[str], list[list[str]]]]:
    """The trial tables (one per architecture) of the first run: (header, body rows)."""
    section = md[md.index("### Trials by"):]
    lines = section[:section.find("\n### ", 1)].splitlines()
    tables = []
    for i, ln in enumerate(lines):
        if ln.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("| :--"):
            body = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                body.append(_cells(row))
            tables.append((_cells(ln), body))
    return tables


def _md_rows(md: str) -> list[list[str]]:
    """Body rows of all trial tables of the first run: cells, stripped."""
    return [row for _, body in _md_tables(md) for row in body]


def test_table_has_one_row_per_trial_best_first_with_test_metrics(tune_run, report):
    out, result = report
    reported = _reported(tune_run)
    table = pd.read_csv(out / "summary.csv", dtype={"trial_id": str})
    assert len(table) == len(reported) >= 1
    assert table["trial_id"].tolist() == reported["trial_id"].tolist()
    assert table["base"].tolist() == [True] + [False] * (len(table) - 1)
    assert table["val_macro_recall"].is_monotonic_decreasing
    assert set(table["status"]) <= {"finished", "stopped"}
    columns = ["test_macro_recall", "test_macro_f1", "test_accuracy",
               *(f"test_recall_{c}" for c in CLASSES), *(f"val_recall_{c}" for c in CLASSES)]
    for col in columns:
        assert table[col].between(0, 1).all(), col
    assert (table["params_count"] > 0).all() and (table["train_s"] > 0).all()
    # progress on stderr, one line per evaluated trial
    assert f"evaluating {len(table)} trial checkpoints" in result.stderr
    assert len(re.findall(r"\[\d+/\d+\] \w+: test macro recall", result.stderr)) == len(table)


def test_test_metrics_match_heartjax_evaluate(tune_run, report, ptb_tables):
    from heartjax.checkpoint import load_checkpoint
    from heartjax.evaluate import evaluate

    out, _ = report
    table = pd.read_csv(out / "summary.csv", dtype={"trial_id": str})
    best = table.iloc[0]
    trials = pd.read_csv(tune_run / "trials.csv", dtype={"trial_id": str}).set_index("trial_id")
    m = evaluate(load_checkpoint(trials.loc[best["trial_id"], "workdir"]),
                 ptb_tables / "heart_test.parq")
    assert best["test_macro_recall"] == pytest.approx(m["macro_recall"])
    assert best["test_recall_abnormal"] == pytest.approx(m["per_class"]["abnormal"]["recall"])


def test_markdown_table_blanks_values_equal_to_the_base_row(report):
    out, _ = report
    md = (out / "summary.md").read_text()
    table = pd.read_csv(out / "summary.csv", dtype={"trial_id": str})
    (header, rows), = _md_tables(md)  # one architecture: one table
    assert len(rows) == len(table)
    assert rows[0][0] == "base" and rows[0][1] == table["trial_id"].iloc[0]
    batch = table["param:train.batch_size"]
    if batch.nunique() > 1:  # a searched field that varies is a column, blank where as the base
        col = header.index("batch_size")
        assert rows[0][col] == str(batch.iloc[0])
        for row, value in zip(rows[1:], batch.iloc[1:], strict=True):
            assert row[col] == ("" if value == batch.iloc[0] else str(value))
    else:  # alike in every trial: named above the table, not a column
        assert "batch_size" not in header
        assert re.search(rf"Alike in every trial here: .*batch_size {batch.iloc[0]}", md)
    test_col = header.index("test macro recall")
    assert all(re.fullmatch(r"0\.\d{3}|1\.000", r[test_col]) for r in rows)
    assert "### Precision paid for recall" in md
    assert re.search(r"recall >= 0\.99 of abnormal .* precision 0\.\d{3}", md)


def test_report_names_no_machine_paths_of_the_run(tune_run, report):
    out, _ = report
    assert f"- Run: {tune_run.name}\n" in (out / "summary.md").read_text()
    saved = json.loads((tune_run / "summary.json").read_text())
    written = (out / "run_summary.json").read_text()
    assert str(tune_run) not in written and str(tune_run) in json.dumps(saved)
    assert json.loads(written).keys() == saved.keys()
    checkpoints = pd.read_csv(out / "summary.csv")["checkpoint"].dropna()
    assert len(checkpoints) and not any(c.startswith("/") for c in checkpoints)
    assert all((tune_run / c).is_dir() for c in checkpoints)


def _made_up_run():
    """A run of two architectures over made-up trials: resnet1d's own channels and kernel,
    cnn2d's own channels, a shared learning rate and a loss that only resnet1d varied."""
    import ml_collections

    from heartjax.report import Run
    from heartjax.report.runs import _params

    nan = np.nan
    table = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d"], "status": "finished", "rank": [1, 2, 3, 4],
        "base": [True, False, False, False],
        "param:model.name": ["resnet1d", "cnn2d", "resnet1d", "cnn2d"],
        "param:train.learning_rate": [1e-3, 2e-3, 1e-3, 3e-3],
        "param:train.loss": ["focal", "focal", "weighted_ce", "focal"],
        "param:model.resnet1d.channels": [32, nan, 64, nan],
        "param:model.resnet1d.kernel_size": [7, nan, 7, nan],
        "param:model.cnn2d.channels": [nan, 16, nan, 16],
        "val_macro_recall": [0.9, 0.8, 0.7, 0.6],
    })
    paths = ["model.name", "train.learning_rate", "train.loss", "model.resnet1d.channels",
             "model.resnet1d.kernel_size", "model.cnn2d.channels"]
    summary = {"search_space": [{"path": p, "kind": "choice", "args": [[]]} for p in paths]}
    config = ml_collections.ConfigDict({"model": {"name": "cnn1d"}, "data": {"dataset": "mitbih"}})
    run = Run(path=Path("run"), name="run", config=config, summary=summary, dataset_info={},
              trials=table, epochs=pd.DataFrame(), params=_params(summary, table),
              metric="val_macro_recall", mode="max", ranked=table)
    return run, table


def test_a_table_per_architecture_shows_the_fields_that_vary_in_it():
    from heartjax.report import display_columns, display_rows, model_groups

    run, table = _made_up_run()
    resnet, cnn2d = model_groups(run, table)
    assert (resnet.model, cnn2d.model) == ("resnet1d", "cnn2d")  # the best trial's first
    assert resnet.table["trial_id"].tolist() == ["a", "c"]
    # another model's fields and the fields alike in every trial are no columns
    assert [p.name for p in resnet.params] == ["loss", "channels"]
    assert resnet.fixed == {"learning_rate": 1e-3, "kernel_size": 7}
    assert [p.name for p in cnn2d.params] == ["learning_rate"]
    assert cnn2d.fixed == {"loss": "focal", "channels": 16}
    cols = display_columns(run, cnn2d.table, cnn2d.params)
    rows = display_rows(run, cnn2d.table, cols)
    # the architecture's best row is in full, with its rank in the whole run
    assert [r[:4] for r in rows] == [["2", "b", "finished", "0.002"], ["4", "d", "finished", "0.003"]]


def test_one_architecture_is_one_table_named_after_the_config_model():
    from heartjax.report import model_groups

    run, table = _made_up_run()
    table = table[table["param:model.name"] == "cnn2d"].drop(columns="param:model.name")
    (group,) = model_groups(run, table)
    assert group.model == "cnn1d" and len(group.table) == 2


def test_plots_and_pdf_are_written(report):
    out, _ = report
    for name in PLOTS:
        data = (out / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", data[16:24])
        assert width >= 500 and height >= 400 and len(data) > 15_000, (name, width, height)
    pdf = (out / "report.pdf").read_bytes()
    assert pdf[:5] == b"%PDF-" and len(pdf) > 50_000
    assert len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf)) >= 2


def test_missing_test_table_is_a_note_not_a_crash(tune_run, tmp_path):
    empty = tmp_path / "no_tables"
    empty.mkdir()
    result = run_module("heartjax.report", tune_run, "--out", tmp_path / "out", "--data-dir",
                        empty, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "heart_test.parq not found" in md
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert "test_macro_recall" not in table or table["test_macro_recall"].isna().all()
    assert len(_md_rows(md)) == len(table)
    assert (tmp_path / "out" / "report.pdf").stat().st_size > 10_000


def test_no_test_leaves_the_test_table_unread(tune_run, tmp_path):
    result = run_module("heartjax.report", tune_run, "--out", tmp_path / "out", "--no-test",
                        timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "evaluating" not in result.stderr  # no checkpoint met the test table
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "was not read (--no-test)" in md
    table = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert "test_macro_recall" not in table or table["test_macro_recall"].isna().all()
    assert table["val_macro_recall"].notna().all()


def test_bad_inputs_are_one_line_errors(tune_run, tmp_path):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert_one_line_error(run_module("heartjax.report", not_a_run, "--out", tmp_path / "o1"),
                          "not a heartjax tuning run")
    missing = tmp_path / "nope"
    assert_one_line_error(run_module("heartjax.report", missing, "--out", tmp_path / "o2"),
                          "no such folder")
    # a run whose trials all failed: nothing to report
    failed = tmp_path / "failed"
    failed.mkdir()
    for name in ("config.json", "summary.json", "dataset.json"):
        shutil.copy(tune_run / name, failed / name)
    trials = pd.read_csv(tune_run / "trials.csv", dtype={"trial_id": str})
    trials.assign(status="error").to_csv(failed / "trials.csv", index=False)
    assert_one_line_error(run_module("heartjax.report", failed, "--out", tmp_path / "o3"),
                          "no finished or stopped trial")
    (failed / "summary.json").write_text("{not json")
    assert_one_line_error(run_module("heartjax.report", failed, "--out", tmp_path / "o4"),
                          "summary.json")
    assert_one_line_error(run_module("heartjax.report", tune_run, "--out", tmp_path / "o5",
                                     "--target-recall", "1.5"), "target-recall")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_two_runs_get_the_best_so_far_table(tune_run, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(tune_run, a)
    shutil.copytree(tune_run, b)
    result = run_module("heartjax.report", a, b, "--out", tmp_path / "out", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "best_so_far.csv")
    best = _reported(tune_run)["val_macro_recall"].max()
    assert list(table["run"]) == ["a", "b"]
    # a run of about a minute: its best within 15 minutes is its best of all, seen at no rung
    # or epoch earlier than its first report
    assert table["best at 15 min"].tolist() == pytest.approx([best, best])
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "so far against wall time" in md and f"{best:.4f}" in md
    assert (tmp_path / "out" / "best_so_far.png").stat().st_size > 10_000
