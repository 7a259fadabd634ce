"""heartjax.recordings: WFDB, EDF, CSV and NumPy recordings, the lead choice, and annotate on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyedflib
import pytest
import wfdb

from heartjax.annotate import main as annotate_main
from heartjax.errors import UserError
from heartjax.recordings import LEADS, choose_lead, lead_key, open_recording, read_signal
from tests.conftest import run_module

MINUTES = 5  # of record 208: its beats, quickly
MITDB_GAIN = 200.0  # adu/mV of every mitdb record


def write_edf(path, signals: dict[str, np.ndarray], fs: float, dimension: str = "mV",
              scale: float = MITDB_GAIN) -> None:
    """An EDF+ file of `signals` (physical values in `dimension`), written as the 16-bit
    integers round(value x `scale`) over EDF's whole digital range, so that they read back
    exactly at that resolution (pyedflib's own physical-to-digital step truncates, which moves
    some samples by one step)."""
    low, high = -32768 / scale, 32767 / scale
    writer = pyedflib.EdfWriter(str(path), len(signals), file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([
        {"label": name, "dimension": dimension, "sample_frequency": fs, "physical_min": low,
         "physical_max": high, "digital_min": -32768, "digital_max": 32767, "transducer": "",
         "prefilter": ""} for name in signals])
    writer.writeSamples([np.round(s * scale).astype(np.int32) for s in signals.values()],
                        digital=True)
    writer.close()


def cli_error(capsys, *args, needles: tuple[str, ...] = ()) -> str:
    """annotate's CLI in this process: exit 2 and exactly one stderr line naming the problem."""
    with pytest.raises(SystemExit) as exit_:
        annotate_main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


def test_lead_names_match_across_recorders():
    assert lead_key("ECG II") == lead_key("ii") == lead_key("II") == lead_key(" ekg ii") == "II"
    assert lead_key("EKG 1") == lead_key("ECG1") == "ECG1"
    assert lead_key("EKG") == lead_key("ecg") == "ECG"
    assert lead_key("ECG MLII") == "MLII" and lead_key("ECG V5") == "V5"
    assert lead_key("1") == "1"  # a numbered column is no ECG1
    assert LEADS[:4] == ("MLII", "II", "ii", "ECG1")
    twelve = ("i", "ii", "iii", "avr", "avl", "avf", "v1", "v2", "v3", "v4", "v5", "v6")
    assert choose_lead("ludb", twelve, None)[0] == 1  # lead II before the chest leads
    assert choose_lead("mitdb", ("V5", "MLII"), None)[0] == 1  # record 114
    assert choose_lead("mitdb", ("V5", "V2"), None)[0] == 0  # record 104
    assert choose_lead("svdb", ("ECG1", "ECG2"), None)[0] == 0
    assert choose_lead("edf", ("EKG I", "ECG II", "Resp"), None)[0] == 1
    assert choose_lead("pmf", ("Pleth", "ECG"), None)[0] == 1
    index, why = choose_lead("single", ("lead_a",), None)
    assert index == 0 and why == "its only signal"
    assert choose_lead("x", ("MLII", "V1"), "v1") == (1, "--lead")  # case aside
    assert choose_lead("x", ("0", "1"), "1", by_index=True) == (1, "--lead")
    with pytest.raises(UserError, match=r"none of MLII.*it has Pleth, Resp; pass --lead"):
        choose_lead("x", ("Pleth", "Resp"), None)
    with pytest.raises(UserError, match=r"unnamed leads 0, 1; pass --lead"):
        choose_lead("x", ("0", "1"), None, by_index=True)  # numbers are no lead names
    with pytest.raises(UserError, match=r"no lead V7 \(it has MLII, V1\)"):
        choose_lead("x", ("MLII", "V1"), "V7")


def test_each_format_reads_its_lead_in_mv(tmp_path):
    fs, n = 250, 1000
    t = np.arange(n) / fs
    lead_ii = np.round(np.sin(2 * np.pi * t) * 200) / 200  # mV, at 200 adu/mV
    write_edf(tmp_path / "a.edf", {"EKG I": 500 * lead_ii, "ECG II": 1000 * lead_ii}, fs,
              dimension="uV", scale=1.0)
    pd.DataFrame({"Time (s)": t, "V1": -lead_ii, "II": lead_ii}).to_csv(tmp_path / "b.csv",
                                                                        index=False)
    np.save(tmp_path / "c.npy", np.stack([-lead_ii, lead_ii], axis=1))
    np.savez(tmp_path / "d.npz", V1=-lead_ii, ii=lead_ii)
    gappy = lead_ii.copy()
    gappy[10:20] = np.nan  # an empty CSV cell is a gap, interpolated
    pd.DataFrame({"MLII": gappy}).to_csv(tmp_path / "e.csv", index=False)
    cases = [("a.edf", None, None, "ECG II", 250), ("b.csv", None, 250, "II", 250),
             ("c.npy", "1", 500, "1", 500), ("d.npz", None, 250, "ii", 250),
             ("e.csv", None, 250, "MLII", 250)]
    for name, lead, fs_given, lead_read, fs_read in cases:
        rec = open_recording(tmp_path / name, lead, fs_given)
        assert (rec.lead, rec.fs, rec.name) == (lead_read, fs_read, name.split(".")[0])
        signal = read_signal(rec)
        if name == "e.csv":
            assert np.isfinite(signal).all() and np.allclose(signal[:10], lead_ii[:10])
        else:
            assert np.allclose(signal, lead_ii, atol=1e-9), name
    assert open_recording(tmp_path / "b.csv", "V1", 250).leads == ("V1", "II")  # time left out


def test_bad_recordings_are_one_line_and_touch_no_output(tmp_path, capsys):
    ok = np.sin(np.arange(2000) / 20)
    pd.DataFrame({"MLII": ok}).to_csv(tmp_path / "ok.csv", index=False)
    pd.DataFrame({"MLII": [0.1, 0.2, "spike", 0.3]}).to_csv(tmp_path / "text.csv", index=False)
    pd.DataFrame({"MLII": ok, "II": np.nan}).to_csv(tmp_path / "empty.csv", index=False)
    pd.DataFrame([ok[:5], ok[5:10]]).to_csv(tmp_path / "headless.csv", index=False)
    pd.DataFrame({"Pleth": ok, "Resp": ok}).to_csv(tmp_path / "noecg.csv", index=False)
    (tmp_path / "garbage.edf").write_bytes(b"0       not an EDF header" * 20)
    np.save(tmp_path / "wide.npy", np.zeros((12, 5000)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.hjx").write_bytes(b"an earlier result")
    base = ("--out", out, "--checkpoint", tmp_path / "no-model")
    cases = [
        ((tmp_path / "missing.edf",), ("missing.edf", "not found")),
        ((tmp_path / "missing.csv", "--fs", 360), ("missing.csv", "not found")),
        ((tmp_path / "missing",), ("missing.hea", "not found")),
        ((tmp_path / "garbage.edf",), ("garbage.edf", "unreadable EDF")),
        ((tmp_path / "text.csv", "--fs", 360), ("text.csv", "'spike'", "line 4", "not a number")),
        ((tmp_path / "empty.csv", "--fs", 360, "--lead", "II"), ("empty.csv", "II", "no valid")),
        ((tmp_path / "headless.csv", "--fs", 360), ("headless.csv", "first row")),
        ((tmp_path / "ok.csv",), ("ok.csv", "no sampling frequency", "--fs")),
        ((tmp_path / "ok.csv", "--fs", 0), ("--fs 0", "above 0")),
        ((tmp_path / "ok.csv", "--fs", -360), ("--fs -360", "above 0")),
        ((tmp_path / "ok.csv", "--fs", "fast"), ("--fs", "invalid float")),
        ((tmp_path / "ok.csv", "--fs", 360, "--lead", "V7"), ("no lead V7", "it has MLII")),
        ((tmp_path / "noecg.csv", "--fs", 360), ("Pleth, Resp", "--lead")),
        ((tmp_path / "wide.npy", "--fs", 360), ("(12, 5000)", "(samples, leads)")),
        # a good recording first: nothing is written before every recording is checked
        ((tmp_path / "ok.csv", tmp_path / "text.csv", "--fs", 360), ("text.csv",)),
    ]
    for args, needles in cases:
        cli_error(capsys, *args, *base, needles=needles)
    assert [p.name for p in out.iterdir()] == ["kept.hjx"]
    assert (out / "kept.hjx").read_bytes() == b"an earlier result"


def test_the_cli_reports_a_bad_recording_in_one_line(tmp_path):
    """The same through `python -m` (no traceback, exit 2)."""
    pd.DataFrame({"MLII": [0.1, 0.2]}).to_csv(tmp_path / "x.csv", index=False)
    result = run_module("heartjax.annotate", tmp_path / "x.csv", "--out", tmp_path / "out")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "--fs" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_wfdb_edf_and_csv_copies_of_208_give_the_same_beats(mitbih_model, mitdb_dir, tmp_path):
    """Record 208's first minutes (MLII) as WFDB, EDF and CSV: the same beats, the same classes."""
    rec = wfdb.rdrecord(str(mitdb_dir / "208"), channel_names=["MLII"], sampto=360 * 60 * MINUTES)
    signal = rec.p_signal[:, 0]  # adu / 200: multiples of 0.005 mV
    assert rec.adc_gain == [MITDB_GAIN]
    wfdb.wrsamp("208_wfdb", fs=360, units=["mV"], sig_name=["MLII"], p_signal=signal[:, None],
                fmt=["16"], adc_gain=[MITDB_GAIN], baseline=[0], write_dir=str(tmp_path))
    write_edf(tmp_path / "208_edf.edf", {"MLII": signal}, 360)
    pd.DataFrame({"time_s": np.arange(len(signal)) / 360, "MLII": signal}).to_csv(
        tmp_path / "208_csv.csv", index=False, float_format="%.3f")
    names = ("208_wfdb", "208_edf", "208_csv")
    for name in names[1:]:  # the copies hold mitdb's samples (EDF's scaling: within 1e-15 mV)
        copy = read_signal(open_recording(next(tmp_path.glob(f"{name}.*")), fs=360))
        assert np.array_equal(np.round(copy * MITDB_GAIN), np.round(signal * MITDB_GAIN)), name
        assert np.abs(copy - signal).max() < 1e-12, name
    out = tmp_path / "out"
    result = run_module("heartjax.annotate", tmp_path / "208_wfdb", tmp_path / "208_edf.edf",
                        tmp_path / "208_csv.csv", "--fs", 360, "--checkpoint", mitbih_model,
                        "--out", out)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in names:
        assert f"{name}: lead MLII at 360 Hz (the first it has of MLII, II, ii, ECG1" in result.stderr
    tables = [pd.read_csv(out / f"{name}.csv") for name in names]
    assert len(tables[0]) > 400  # about 100 beats a minute
    for name, table in zip(names[1:], tables[1:]):
        assert np.array_equal(table["sample"], tables[0]["sample"]), name
        assert (table["class"] == tables[0]["class"]).all(), name
        assert np.allclose(table.filter(like="p_"), tables[0].filter(like="p_"), atol=1e-5), name
    edf = wfdb.rdann(str(out / "208_edf"), "hjx")
    assert edf.fs == 360 and np.array_equal(edf.sample, tables[0]["sample"])
