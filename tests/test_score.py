"""heartjax.score: EC57 beat-by-beat statistics on annotation pairs with known counts, and its
QRS figures against wfdb's own comparison on a real record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import wfdb

from heartjax import score as sc
from tests.conftest import assert_one_line_error, run_module

FS = 360
# reference class, test label (None: no test beat), test offset in samples
CASES = [
    ("N", "N", 10),   # matched N
    ("N", "V", 0),    # Nv: a VEB false positive
    ("V", "V", -20),  # Vv
    ("S", "N", 0),    # Sn: a missed SVEB
    ("F", "V", 0),    # Fv: no VEB false positive (EC57)
    ("N", None, 0),   # missed beat
    ("Q", "Q", 0),    # Qq
    ("V", "V", 60),   # 60 samples > 150 ms (54): a missed V and an unmatched test V
    ("N", "S", 54),   # Ns, exactly at the window's edge
    ("S", "S", 0),    # Ss
]


def _write(folder: Path, name: str, ext: str, samples, symbols) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrann(name, ext, np.asarray(samples, np.int64), np.asarray(symbols), fs=FS,
               write_dir=str(folder))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """RAW/r1.atr and OUT/r1.hjx built from CASES, plus one extra test N between beats."""
    raw, out = tmp_path / "raw", tmp_path / "out"
    ref = [(FS * (k + 1), c) for k, (c, _, _) in enumerate(CASES)]
    test = [(FS * (k + 1) + off, t) for k, (_, t, off) in enumerate(CASES) if t is not None]
    test.append((FS * 10 + FS // 2, "N"))  # no reference beat near it
    _write(raw, "r1", "atr", *zip(*ref))
    # a rhythm annotation is no beat: the scorer must skip it
    _write(out, "r1", "hjx", *zip(*sorted(test + [(FS * 3 + 100, "+")])))
    (raw / "RECORDS").write_text("r1\n")
    return raw, out


def test_counts_and_statistics_of_a_known_pair(pair):
    raw, out = pair
    m = sc.count_matrix(sc.read_beats(raw / "r1", "atr"), sc.read_beats(out / "r1", "hjx"), 0.0)
    N, S, V, F, Q, X = range(6)  # X: no beat on the other side
    assert m[N, N] == 1 and m[N, V] == 1 and m[V, V] == 1 and m[S, N] == 1 and m[F, V] == 1
    assert m[Q, Q] == 1 and m[N, S] == 1 and m[S, S] == 1
    assert m[N, X] == 1 and m[V, X] == 1  # missed
    assert m[X, V] == 1 and m[X, N] == 1  # test beats without a reference beat
    assert m.sum() == 12
    s = sc.statistics(m)
    assert s["qrs"] == {"se": 8 / 10, "p": 8 / 10}
    assert s["veb"]["se"] == 1 / 2  # Vv of the two reference V
    assert s["veb"]["p"] == pytest.approx(1 / 3)  # Vv, Nv, Ov (Fv not counted)
    assert s["veb"]["fpr"] == pytest.approx(1 / 6)  # Nv of the 6 matched N, S, Q beats
    assert s["sveb"] == {"se": 1 / 2, "p": 1 / 2}


def test_learning_period_is_left_out(pair):
    raw, out = pair
    m = sc.count_matrix(sc.read_beats(raw / "r1", "atr"), sc.read_beats(out / "r1", "hjx"), 5.0)
    assert m[:5].sum() == 6  # reference beats at 5..10 s
    assert sc.statistics(m)["qrs"]["se"] == 4 / 6  # F, Q, N(edge), S matched; missed N and V


def test_cli_json_and_text(pair):
    raw, out = pair
    result = run_module("heartjax.score", "--records", raw, "--test-dir", out, "--from", "0", "--json")
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert set(got) >= {"records", "gross", "average"}
    assert got["gross"]["qrs"] == {"se": 0.8, "p": 0.8}
    assert got["gross"] == got["records"]["r1"] == got["average"]  # one record
    text = run_module("heartjax.score", "--records", raw, "--test-dir", out, "r1", "--from", "0")
    assert text.returncode == 0 and "gross" in text.stdout and "80.00" in text.stdout


def test_average_skips_undefined_statistics():
    none = sc.statistics(np.zeros((6, 6), np.int64))
    one = {"qrs": {"se": 1.0, "p": 0.5}, "veb": {"se": 0.5, "p": None, "fpr": 0.0},
           "sveb": {"se": None, "p": None}}
    avg = sc.average([none, one])
    assert avg["qrs"] == {"se": 1.0, "p": 0.5} and avg["veb"]["p"] is None


def test_bad_annotation_files(pair, tmp_path):
    raw, out = pair
    (out / "r1.hjx").write_bytes(b"\x07\xff\x00garbage" * 3)
    assert_one_line_error(run_module("heartjax.score", "--records", raw, "--test-dir", out),
                          "r1.hjx", "unreadable")
    (out / "r1.hjx").unlink()
    assert_one_line_error(run_module("heartjax.score", "--records", raw, "--test-dir", out),
                          "r1.hjx", "not found")
    assert_one_line_error(run_module("heartjax.score", "--records", raw, "--test-dir",
                                     tmp_path / "nope"), "no such folder")


def test_qrs_figures_equal_wfdb_compare_annotations(mitdb_dir, tmp_path):
    from wfdb.processing import compare_annotations, gqrs_detect

    record = wfdb.rdrecord(str(mitdb_dir / "208"), channel_names=["MLII"], sampto=FS * 600)
    detected = np.asarray(gqrs_detect(sig=record.p_signal[:, 0], fs=FS))
    _write(tmp_path, "208", "qrs", detected, ["N"] * len(detected))
    ref = sc.read_beats(mitdb_dir / "208", "atr")
    keep = ref.sample < FS * 600
    ref = sc.Beats(ref.sample[keep], ref.label[keep], ref.fs)
    test = sc.read_beats(tmp_path / "208", "qrs")
    m = sc.count_matrix(ref, test, 0.0)
    theirs = compare_annotations(ref.sample, test.sample, round(0.15 * FS))
    assert (m[:5, :5].sum(), m[:5, 5].sum(), m[5, :5].sum()) == (theirs.tp, theirs.fn, theirs.fp)
    assert theirs.fn + theirs.fp > 0  # the record is hard enough for the comparison to mean something
    assert sc.statistics(m)["qrs"]["se"] == pytest.approx(theirs.sensitivity)


def test_flutter_episodes_are_left_out(tmp_path):
    _write(tmp_path, "r2", "atr", [360, 700, 720, 1000, 1440, 1800],
           ["N", "[", "!", "]", "N", "N"])
    _write(tmp_path, "r2", "hjx", [360, 710, 900, 1440, 1800], ["N", "V", "V", "N", "N"])
    ref = sc.read_beats(tmp_path / "r2", "atr")
    assert ref.flutter.tolist() == [[700, 1000]]
    m = sc.count_matrix(ref, sc.read_beats(tmp_path / "r2", "hjx"), 0.0)
    assert m.sum() == 3 and m[0, 0] == 3  # the two test V inside the episode are not counted
