"""The benchmark CLIs: their JSON holds every measurement (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from heartjax.bench import describe
from heartjax.runtime import device_info
from tests.conftest import assert_one_line_error, run_module


def test_quick_bench_reports_every_measurement():
    result = run_module("heartjax.bench", "--quick", "--json", "--models", "cnn2d",
                        "--population", "2", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["quick"] and out["matmul_peak_gflops"] > 0
    # what it ran on, in the JSON and on the header line (--json logs to stderr)
    assert out["device"] == device_info()
    assert set(out["device"]) == {"backend", "device_kind", "device_count", "jax", "jaxlib"}
    assert f"{describe(device_info())}; matmul peak" in result.stderr
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


def test_quick_gpu_bench_measures_every_section(tmp_path):
    """`heartjax.bench_gpu --quick` on this CPU: every section has positive numbers, the device
    is named, and --out holds the same JSON."""
    out_file = tmp_path / "gpu_bench.json"
    result = run_module("heartjax.bench_gpu", "--quick", "--json", "--out", out_file, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert json.loads(out_file.read_text()) == out
    assert out["quick"] and out["device"] == device_info()
    assert describe(device_info()) in result.stderr
    assert [r["processes"] for r in out["processes"]] == [1, 2]
    for r in out["processes"]:
        assert r["rungs"] >= r["processes"] and r["configs_per_hour"] > 0 and r["warmup_s"] > 0
        assert r["rung_beats"] == 4_096 and r["pool"] == 1_000
    pop = out["population"]
    assert pop["one_model_beats_per_s"] > 0 and [m["members"] for m in pop["members"]] == [2, 4]
    assert all(m["model_beats_per_s"] > 0 and m["speedup"] > 0 for m in pop["members"])
    assert {r["model"] for r in out["train"]} == {"cnn2d", "transformer", "resnet1d"}
    assert all(r["beats_per_s"] > 0 and r["compile_s"] > 0 for r in out["train"])
    assert [r["model"] for r in out["conv"]] == ["cnn2d", "resnet1d"]
    assert all(r["patch_beats_per_s"] > 0 and r["xla_beats_per_s"] > 0 for r in out["conv"])
    # the rung target is shown; the population's needs 32 members, which --quick leaves out
    assert set(out["targets"]) == {"rung0_configs_per_hour"}
    assert out["targets"]["rung0_configs_per_hour"]["measured"] > 0


@pytest.mark.parametrize("args, needle", [(["--models", "lstm"], "lstm"), (["--batches", "0"], "batch")])
def test_bad_flags_are_one_line(args, needle):
    assert_one_line_error(run_module("heartjax.bench", *args, timeout=120), needle)


@pytest.mark.parametrize("args, needle", [(["--batches", "32"], "unrecognized"),
                                          (["--sections", "train,gpu"], "gpu")])
def test_gpu_bench_bad_flags_are_one_line(args, needle):
    assert_one_line_error(run_module("heartjax.bench_gpu", *args, timeout=120), needle)
