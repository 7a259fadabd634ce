"""heartjax.annotate: raw WFDB records → detected, classified beats in a WFDB annotation file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from scipy.signal import resample_poly

import heartjax
from heartjax import score as sc
from heartjax.annotate import annotate_record
from heartjax.data.physionet import AAMI_MAP, to_rate
from tests.conftest import assert_one_line_error, run_module

MINUTES = 6  # enough beats (and past the 5-minute learning period) yet quick


def _write_record(folder: Path, name: str, signal: np.ndarray, fs: float, lead: str = "MLII") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=fs, units=["mV"], sig_name=[lead], p_signal=signal[:, None],
                fmt=["16"], adc_gain=[400.0], baseline=[0], write_dir=str(folder))
    return folder / name


@pytest.fixture(scope="module")
def record_100(mitdb_dir, tmp_path_factory) -> Path:
    """The first minutes of record 100 (MLII, 360 Hz) with its reference annotations."""
    folder = tmp_path_factory.mktemp("rec360")
    rec = wfdb.rdrecord(str(mitdb_dir / "100"), channel_names=["MLII"], sampto=360 * 60 * MINUTES)
    path = _write_record(folder, "100", rec.p_signal[:, 0], 360)
    ref = wfdb.rdann(str(mitdb_dir / "100"), "atr", sampto=360 * 60 * MINUTES)
    beats = [i for i, s in enumerate(ref.symbol) if s in AAMI_MAP]  # the same minutes' beats
    wfdb.wrann("100", "atr", ref.sample[beats], np.asarray(ref.symbol)[beats], fs=360,
               write_dir=str(folder))
    return path


def test_cli_writes_annotations_wfdb_reads_back(mitbih_model, record_100, tmp_path):
    out = tmp_path / "out"
    result = run_module("heartjax.annotate", record_100, "--checkpoint", mitbih_model,
                        "--out", out, "--plot", "320:330")
    assert result.returncode == 0, result.stderr[-3000:]
    ann = wfdb.rdann(str(out / "100"), "hjx")
    assert set(ann.symbol) <= set("NSVFQ") and ann.fs == 360
    table = pd.read_csv(out / "100.csv")
    assert list(table.columns) == ["sample", "time_s", "class", "p_N", "p_S", "p_V", "p_F", "p_Q"]
    assert (table["sample"].to_numpy() == ann.sample).all()
    assert np.allclose(table.filter(like="p_").sum(axis=1), 1.0, atol=1e-3)
    assert (out / "100.png").stat().st_size > 10_000
    # the detected beats are the reference beats (from the raw signal alone)
    m = sc.count_matrix(sc.read_beats(record_100, "atr"), sc.read_beats(out / "100", "hjx"), 0.0)
    stats = sc.statistics(m)
    assert stats["qrs"]["se"] > 0.995 and stats["qrs"]["p"] > 0.995
    assert "beats (N" in result.stderr


@pytest.mark.parametrize("fs", [250, 500])
def test_other_sampling_rates_give_the_same_beats_and_classes(mitbih_model, record_100, tmp_path, fs):
    model = heartjax.load_checkpoint(mitbih_model)
    base = annotate_record(model, record_100)
    signal = wfdb.rdrecord(str(record_100)).p_signal[:, 0]
    up, down = {250: (25, 36), 500: (25, 18)}[fs]
    other = annotate_record(model, _write_record(tmp_path, "100", resample_poly(signal, up, down), fs))
    a = to_rate(base.sample, 360, 125)
    b = to_rate(other.sample, fs, 125)
    ri, ti = sc.match(a, b, 1)  # within one sample at 125 Hz
    assert len(ri) >= 0.99 * max(len(a), len(b))
    same = (base.labels[ri] == other.labels[ti]).mean()
    assert same >= 0.99, same


def test_bad_records_are_one_line_and_write_nothing(mitbih_model, record_100, tmp_path):
    out = tmp_path / "out"
    args = ("--checkpoint", mitbih_model, "--out", out)
    assert_one_line_error(run_module("heartjax.annotate", tmp_path / "nope", *args), "nope.hea")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(record_100.with_suffix(".hea"), lonely / "100.hea")
    assert_one_line_error(run_module("heartjax.annotate", lonely / "100", *args), "100.dat", "missing")
    assert_one_line_error(run_module("heartjax.annotate", record_100, *args, "--lead", "V7"),
                          "no lead V7", "MLII")
    short = _write_record(tmp_path / "short", "tiny", np.zeros(180), 360)
    assert_one_line_error(run_module("heartjax.annotate", short, *args), "tiny", "two beats")
    assert_one_line_error(run_module("heartjax.annotate", record_100, *args, "--plot", "10"),
                          "START:END")
    assert not out.exists()


def test_a_ptb_model_is_refused(ptb_run, record_100, tmp_path):
    assert_one_line_error(run_module("heartjax.annotate", record_100, "--checkpoint", ptb_run,
                                     "--out", tmp_path / "out"), "MIT-BIH")


def test_an_ensemble_annotates_like_its_members(mitbih_model, record_100):
    one = annotate_record(heartjax.load_checkpoint(mitbih_model), record_100)
    two = annotate_record(heartjax.load_ensemble([mitbih_model, mitbih_model]), record_100)
    assert (one.sample == two.sample).all()
    assert np.allclose(one.proba, two.proba, atol=1e-6)


def test_unknown_detector_or_peak_rule_is_a_user_error():
    from heartjax.annotate import detect_qrs
    from heartjax.errors import UserError

    with pytest.raises(UserError, match="R-peak rule"):
        detect_qrs(np.zeros(720), 360, peak="highest")
    with pytest.raises(UserError, match="QRS detector"):
        detect_qrs(np.zeros(720), 360, detector="pan-tompkins")


def test_drop_unconfirmed_removes_only_small_unconfirmed_detections():
    from heartjax.annotate import drop_unconfirmed, nearest_distance

    peaks = np.arange(0, 20 * 300, 300)  # a detection every 300 samples
    size = np.ones(len(peaks))
    size[[5, 9, 14]] = [0.2, 0.2, 0.9]  # two small ones, one nearly full-sized
    confirm = np.delete(peaks, [5, 14]) + 10  # 9 is confirmed by another detector
    kept = drop_unconfirmed(peaks, size, [confirm], window=36)
    assert list(np.setdiff1d(peaks, kept)) == [peaks[5]]  # 9 confirmed, 14 large enough
    assert list(nearest_distance(np.array([0, 95, 400]), np.array([100, 300]))) == [100, 5, 100]
    assert np.isinf(nearest_distance(np.array([3]), np.array([], np.int64))).all()


def test_the_confirmation_keeps_every_reference_beat_of_record_100(record_100):
    """Record 100's first minutes (clean): the check must drop none of the beats gqrs finds."""
    from heartjax.annotate import detect_qrs
    from heartjax.recordings import open_recording, read_signal
    from heartjax.score import Beats, count_matrix, read_beats, statistics

    info = open_recording(record_100)
    signal = read_signal(info)
    ref = read_beats(record_100, "atr")
    qrs = {}
    for confirm in (False, True):
        peaks = detect_qrs(signal, info.fs, confirm=confirm)
        qrs[confirm] = statistics(count_matrix(ref, Beats(peaks, np.zeros(len(peaks), np.int64),
                                                          info.fs), start_s=0))["qrs"]
    assert qrs[True]["se"] == qrs[False]["se"] >= 0.995, qrs
    assert qrs[True]["p"] >= qrs[False]["p"] >= 0.999, qrs
