"""The benchmark CLI: its JSON holds every measurement the speed issue asks for (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import assert_one_line_error, run_module


def test_quick_bench_reports_every_measurement():
    result = run_module("heartjax.bench", "--quick", "--json", "--models", "cnn2d",
                        "--population", "2", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["quick"] and out["matmul_peak_gflops"] > 0
    cnn2d = out["models"]["cnn2d"]
    # the original cnn2d's cost, from XLA's analysis of the compiled step (models/cnn2d.py: ~8.2 M)
    assert cnn2d["train_flops_per_beat"] == pytest.approx(8.2e6, rel=0.1)
    (r,) = cnn2d["train"]
    assert (r["batch"], r["size"]) == (32, "ptb")
    assert r["beats_per_s"] > 0 and r["compile_s"] > 0 and 0 < r["peak_fraction"] < 1
    assert cnn2d["eval_beats_per_s"] > 0
    pop = out["population"]
    assert pop["members"] == 2 and pop["speedup"] > 0
    assert pop["population_model_beats_per_s"] > 0


@pytest.mark.parametrize("args, needle", [(["--models", "lstm"], "lstm"), (["--batches", "0"], "batch")])
def test_bad_flags_are_one_line(args, needle):
    assert_one_line_error(run_module("heartjax.bench", *args, timeout=120), needle)
