"""PhysioNet WFDB records (MIT-BIH, PTB) → beat tables, with the published beat extraction.

Kachuee, Fazeli, Sarrafzadeh 2018 (arXiv:1805.00794), section III.A: one lead resampled to
125 Hz, 10 s windows normalised to [0, 1], R peaks, T = median R-R of the window, each beat =
the 1.2·T samples from its R peak, zero padded to 187. See docs/data-pipeline.md.

MIT-BIH beats are cut from the raw resampled lead, as in the published set. PTB lead ii often
has baseline wander and a mainly negative QRS, which defeat the "maximum above 0.9" detector
(it then picks T waves); so by default PTB signals are first conditioned: baseline removed with
a 0.5 Hz high-pass and the signal inverted when its negative deflections dominate.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd
import wfdb
from scipy.signal import butter, resample_poly, sosfiltfilt

from heartjax.data.rhythm import rr_features
from heartjax.data.splits import (
    DS1,
    DS2,
    check_fraction,
    group_split,
    record_split,
    stratified_split,
)
from heartjax.data.tables import (
    CLASS_NAMES,
    FS,
    SIGNAL_LEN,
    TABLE_FILES,
    BeatTable,
    concat_tables,
    write_table,
)
from heartjax.errors import UserError

# AAMI EC57 classes from MIT-BIH beat symbols; every other symbol is not a beat for this task.
AAMI_MAP: Mapping[str, int] = MappingProxyType({
    "N": 0, "L": 0, "R": 0, "e": 0, "j": 0,
    "A": 1, "a": 1, "J": 1, "S": 1,
    "V": 2, "E": 2,
    "F": 3,
    "/": 4, "f": 4, "Q": 4,
})
MITBIH_LEADS = ("MLII", "V5", "V2", "V1", "V4")
PTB_LEADS = ("ii",)
# The Kaggle set (Kachuee 2018) and the AAMI-annotated totals of the 48 records.
PUBLISHED_COUNTS: Mapping[str, int] = MappingProxyType(
    {"N": 90589, "S": 2779, "V": 7236, "F": 803, "Q": 8039})
ANNOTATED_COUNTS: Mapping[str, int] = MappingProxyType(
    {"N": 90631, "S": 2781, "V": 7236, "F": 803, "Q": 8043})
MITBIH_RECORDS = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "111", "112", "113",
    "114", "115", "116", "117", "118", "119", "121", "122", "123", "124", "200", "201", "202",
    "203", "205", "207", "208", "209", "210", "212", "213", "214", "215", "217", "219", "220",
    "221", "222", "223", "228", "230", "231", "232", "233", "234")
DATABASES = {"mitbih": "mitdb", "ptb": "ptbdb", "svdb": "svdb"}
# The half of svdb the new-patient model learns from; the other 39 records are kept for a test
# no one tunes to (../shared/data holds only these).
SVDB_DEV_RECORDS = (
    "803", "804", "807", "809", "811", "812", "820", "821", "825", "826", "827", "829", "840",
    "841", "843", "844", "848", "850", "852", "853", "854", "855", "856", "857", "859", "862",
    "863", "864", "865", "866", "867", "868", "870", "874", "875", "881", "883", "884", "888")
MITBIH_FILES = {"train": TABLE_FILES["mitbih"][0], "test": TABLE_FILES["mitbih"][1],
                "all": "heart_big_all.parq"}
PTB_FILES = {"train": TABLE_FILES["ptb"][0], "test": TABLE_FILES["ptb"][1]}
PEAK_MODES = ("annotations", "detected")

WINDOW_S = 10.0
BEAT_PERIODS = 1.2  # beat length in nominal heartbeat periods T
PEAK_THRESHOLD = 0.9  # normalised amplitude an R-peak candidate must exceed
MATCH_TOLERANCE_S = 0.150  # detected peak ↔ reference annotation
# Two maxima closer than this belong to one QRS (notched/noisy peaks); physiological refractory.
REFRACTORY_S = 0.2
BASELINE_CUTOFF_HZ = 0.5
# `--filter bandpass`: the band ECG beat classifiers commonly keep before cutting beats (baseline
# wander below it, muscle noise and mains above); MIT-BIH's published beats are cut unfiltered
BANDPASS_HZ = (0.5, 40.0)
FILTERS = ("none", "bandpass")
POLARITY_PERCENTILE = 0.5  # compare the 0.5th and 99.5th percentiles: robust to a few spikes
PTB_REASON = "reason for admission:"
SKIP_HINT = " (or use --skip-bad)"  # the end of a bad-record message of the build
PTB_LABELS = {"healthy control": 0, "myocardial infarction": 1}

Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    """Progress and warnings go to stderr so stdout keeps only the results."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- signal processing

def resample_to(signal: np.ndarray, fs: float, target: int = FS) -> np.ndarray:
    """Resample `signal` from `fs` to `target` Hz with a polyphase filter."""
    ratio = Fraction(target) / Fraction(fs).limit_denominator(1000)
    if ratio == 1:
        return np.asarray(signal, dtype=np.float64)
    return resample_poly(np.asarray(signal, dtype=np.float64), ratio.numerator, ratio.denominator)


def to_rate(samples: np.ndarray, fs: float, target: float, length: int | None = None) -> np.ndarray:
    """Sample indices at `fs` → the nearest indices at `target` Hz (clipped to `length`)."""
    out = np.round(np.asarray(samples, dtype=np.float64) * target / fs).astype(np.int64)
    return out if length is None else np.clip(out, 0, length - 1)


def extract_beats(signal: np.ndarray, peaks: np.ndarray, fs: int = FS,
                  fallback_period: float | None = None) -> np.ndarray:
    """Cut one 187-sample beat per R peak with the published 10 s window method."""
    peaks = np.asarray(peaks, dtype=np.int64)
    beats = np.zeros((len(peaks), SIGNAL_LEN), dtype=np.float32)
    if not len(peaks):
        return beats
    n = len(signal)
    window = round(WINDOW_S * fs)
    if fallback_period is None:
        # A window with a single peak has no R-R: use the record's typical period, else 1 s.
        fallback_period = float(np.median(np.diff(np.sort(peaks)))) if len(peaks) >= 2 else fs
    window_of = peaks // window
    for w in np.unique(window_of):
        rows = np.flatnonzero(window_of == w)
        r = peaks[rows]
        period = float(np.median(np.diff(np.sort(r)))) if len(r) >= 2 else fallback_period
        length = max(1, min(round(BEAT_PERIODS * period), SIGNAL_LEN))
        # Normalise over the window plus the tails of its last beats, so that every sample
        # of every beat lies in [0, 1] without clipping what follows the window.
        start = int(w) * window
        stop = min(max(start + window, int(r.max()) + length), n)
        segment = signal[start:stop]
        low, high = float(segment.min()), float(segment.max())
        scale = high - low if high > low else 1.0
        for row, peak in zip(rows, r):
            beat = signal[peak:min(peak + length, n)]  # past the record's end: zero padded
            beats[row, :len(beat)] = (beat - low) / scale
    return beats


def condition(signal: np.ndarray, fs: int = FS) -> tuple[np.ndarray, bool]:
    """Remove baseline wander and turn a mainly negative QRS upright; returns (signal, inverted)."""
    signal = np.asarray(signal, dtype=np.float64)
    if len(signal) < fs:  # too short to filter (and to hold a heartbeat period)
        return signal, False
    sos = butter(2, BASELINE_CUTOFF_HZ, "highpass", fs=fs, output="sos")
    flat = sosfiltfilt(sos, signal)
    low, high = np.percentile(flat, [POLARITY_PERCENTILE, 100 - POLARITY_PERCENTILE])
    inverted = bool(-low > high)
    return (-flat if inverted else flat), inverted


def band_pass(signal: np.ndarray, fs: int = FS, band: tuple[float, float] = BANDPASS_HZ
              ) -> np.ndarray:
    """`signal` band-passed to `band` Hz (2nd-order Butterworth, zero phase); a signal shorter
    than a second is returned as it is (too short to filter)."""
    signal = np.asarray(signal, dtype=np.float64)
    if len(signal) < fs:
        return signal
    return sosfiltfilt(butter(2, band, "bandpass", fs=fs, output="sos"), signal)


def filtered(signal: np.ndarray, kind: str, fs: int = FS) -> np.ndarray:
    """The lead as a table is cut from: `kind` "none" (as published) or "bandpass"."""
    if kind not in FILTERS:
        raise UserError(f"unknown --filter {kind!r}: use {' or '.join(FILTERS)}")
    return band_pass(signal, fs) if kind == "bandpass" else np.asarray(signal, np.float64)


def detect_peaks(signal: np.ndarray, fs: int = FS) -> np.ndarray:
    """R peaks: maxima (derivative zero crossings) above 0.9 of each normalised 10 s window."""
    window = round(WINDOW_S * fs)
    found, heights = [], []
    for start in range(0, len(signal), window):
        segment = np.asarray(signal[start:start + window], dtype=np.float64)
        if len(segment) < 3 or segment.max() <= segment.min():
            continue
        norm = (segment - segment.min()) / (segment.max() - segment.min())
        d = np.diff(norm)
        maxima = np.flatnonzero((d[:-1] > 0) & (d[1:] <= 0)) + 1
        maxima = maxima[norm[maxima] > PEAK_THRESHOLD]
        found.append(maxima + start)
        heights.append(norm[maxima])
    if not found:
        return np.zeros(0, dtype=np.int64)
    peaks, height = np.concatenate(found), np.concatenate(heights)
    return _refractory(peaks, height, round(REFRACTORY_S * fs))


def _refractory(peaks: np.ndarray, height: np.ndarray, distance: int) -> np.ndarray:
    """Keep the highest of peaks closer than `distance` samples."""
    kept: list[int] = []
    kept_height: list[float] = []
    for p, h in zip(peaks, height):
        if kept and p - kept[-1] < distance:
            if h > kept_height[-1]:
                kept[-1], kept_height[-1] = int(p), float(h)
            continue
        kept.append(int(p))
        kept_height.append(float(h))
    return np.asarray(kept, dtype=np.int64)


def match_peaks(detected: np.ndarray, reference: np.ndarray,
                tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (detected index, reference index), each peak matched to its nearest reference."""
    detected = np.asarray(detected, dtype=np.int64)
    reference = np.asarray(reference, dtype=np.int64)
    if not len(detected) or not len(reference):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    right = np.clip(np.searchsorted(reference, detected), 0, len(reference) - 1)
    left = np.clip(right - 1, 0, len(reference) - 1)
    nearest = np.where(np.abs(reference[left] - detected) <= np.abs(reference[right] - detected),
                       left, right)
    dist = np.abs(reference[nearest] - detected)
    ok = np.flatnonzero(dist <= tolerance)
    # One reference beat yields at most one table row: the closest detected peak wins.
    order = ok[np.lexsort((dist[ok], nearest[ok]))]
    _, first = np.unique(nearest[order], return_index=True)
    chosen = np.sort(order[first])
    return chosen, nearest[chosen]


# ---------------------------------------------------------------- records

@dataclass(frozen=True)
class RecordInfo:
    """A WFDB record that passed the pre-flight checks."""

    name: str  # as written in the table's `record` column
    path: Path  # without suffix
    lead: str
    fs: float
    comments: tuple[str, ...]


def require_dir(raw_dir: Path, dataset: str) -> Path:
    """`raw_dir` if it is a folder, else a UserError saying how to get the records."""
    if not raw_dir.is_dir():
        raise UserError(f"{raw_dir}: raw record folder not found; download the records with "
                        f"`python -m heartjax.data download {dataset} --out DIR` and pass "
                        "--raw DIR")
    return raw_dir


def list_records(raw_dir: Path) -> list[str]:
    """Record names from RECORDS, else from the .hea files of `raw_dir`."""
    require_dir(raw_dir, "mitbih")
    listing = raw_dir / "RECORDS"
    if listing.is_file():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if names:
            return names
    names = sorted(p.stem for p in raw_dir.glob("*.hea"))
    if not names:
        raise UserError(f"{raw_dir}: no RECORDS file and no .hea headers; point --raw at a folder "
                        "of WFDB records (e.g. ../shared/data/physionet/mitdb)")
    return names


def inspect_record(path: Path, name: str, leads: tuple[str, ...], annotations: bool) -> RecordInfo:
    """Check a record's files, header, lead and data size before any heavy work."""
    need = [path.with_name(path.name + ".hea")]
    if annotations:
        need.append(path.with_name(path.name + ".atr"))
    for f in need:
        if not f.is_file():
            raise UserError(f"record {name}: {f.name} is missing in {f.parent}; "
                            "re-download the record or drop it from RECORDS (or use --skip-bad)")
    try:
        header = wfdb.rdheader(str(path))
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"record {name}: unreadable header {path.name}.hea ({error_reason(e)}); "
                        "re-download the record (or use --skip-bad)") from None
    names = list(header.sig_name or [])
    lead = next((lead for lead in leads if lead in names), None)
    if lead is None:
        raise UserError(f"record {name}: none of the leads {','.join(leads)} is present "
                        f"(it has {','.join(names) or 'no signals'}); add one of its leads "
                        "to --leads (or use --skip-bad)")
    check_data_files(path, name, header)
    return RecordInfo(name, path, lead, float(header.fs), tuple(header.comments or ()))


def check_data_files(path: Path, name: str, header: wfdb.Record, hint: str = SKIP_HINT) -> None:
    """Every signal file exists and is long enough for the header's sample count."""
    # wfdb's own table of bytes per sample (format 212 packs two samples in 3 bytes, ...).
    sizes: dict[str, float] = {}
    offsets: dict[str, int] = {}
    spf = header.samps_per_frame or [1] * header.n_sig
    for i, file_name in enumerate(header.file_name):
        bps = wfdb.io._signal.BYTES_PER_SAMPLE.get(str(header.fmt[i]), 0)
        sizes[file_name] = sizes.get(file_name, 0.0) + bps * spf[i]
        offsets[file_name] = int((header.byte_offset or [0] * header.n_sig)[i] or 0)
    for file_name, frame_bytes in sizes.items():
        f = path.parent / file_name
        if not f.is_file():
            raise UserError(f"record {name}: signal file {file_name} is missing in {f.parent}; "
                            f"re-download the record{hint}")
        if not os.access(f, os.R_OK):
            raise UserError(f"record {name}: {file_name} is not readable (permissions); "
                            f"fix its permissions{hint}")
        if header.sig_len and frame_bytes:  # compressed formats (FLAC) have no fixed size
            expected = offsets[file_name] + int(header.sig_len * frame_bytes)
            actual = f.stat().st_size
            if actual < expected:
                raise UserError(f"record {name}: {file_name} is truncated ({actual} of {expected} "
                                f"bytes); re-download the record{hint}")


def error_reason(e: BaseException) -> str:
    """An exception as one short phrase: its type and the first line of its text."""
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def read_lead(info: RecordInfo, hint: str = SKIP_HINT) -> np.ndarray:
    """The chosen lead in physical units, gaps (invalid samples) interpolated."""
    try:
        record = wfdb.rdrecord(str(info.path), channel_names=[info.lead])
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"record {info.name}: cannot read the signal ({error_reason(e)}); "
                        f"re-download the record{hint}") from None
    signal = np.asarray(record.p_signal[:, 0], dtype=np.float64)
    bad = ~np.isfinite(signal)
    if bad.all():
        raise UserError(f"record {info.name}: lead {info.lead} holds no valid samples{hint}")
    if bad.any():  # the resampling filter would smear a NaN over its whole neighbourhood
        idx = np.arange(len(signal))
        signal[bad] = np.interp(idx[bad], idx[~bad], signal[~bad])
    return signal


def read_beat_annotations(info: RecordInfo) -> tuple[np.ndarray, np.ndarray]:
    """Native-rate samples and AAMI labels of the record's beat annotations."""
    try:
        ann = wfdb.rdann(str(info.path), "atr")
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"record {info.name}: cannot read annotations {info.path.name}.atr "
                        f"({error_reason(e)}); re-download the record (or use --skip-bad)") from None
    keep = np.array([s in AAMI_MAP for s in ann.symbol], dtype=bool)
    samples = np.asarray(ann.sample, dtype=np.int64)[keep]
    labels = np.array([AAMI_MAP[s] for s in np.asarray(ann.symbol)[keep]], dtype=np.int32)
    order = np.argsort(samples, kind="stable")
    if len(samples) < 2:
        raise UserError(f"record {info.name}: fewer than 2 AAMI beat annotations; "
                        "R-R intervals are undefined (drop the record or use --skip-bad)")
    return samples[order], labels[order]


def mitbih_record_table(info: RecordInfo, peaks: str = "annotations",
                        filter: str = "none", database: str = "mitdb") -> BeatTable:
    """All AAMI beats of one beat-annotated record (MIT-BIH or any database annotated as it
    is), with database/record/sample/lead/R-R columns; `filter`: the lead at 125 Hz as it is
    ("none") or band-passed first ("bandpass")."""
    signal = filtered(resample_to(read_lead(info), info.fs), filter)
    samples, labels = read_beat_annotations(info)
    rr = rr_features(samples, info.fs)
    r125 = to_rate(samples, info.fs, FS, len(signal))
    if peaks == "annotations":
        beats = extract_beats(signal, r125)
        rows, native = np.arange(len(samples)), samples
    else:
        detected = detect_peaks(signal)
        all_beats = extract_beats(signal, detected)
        which, rows = match_peaks(detected, r125, round(MATCH_TOLERANCE_S * FS))
        beats = all_beats[which]
        native = to_rate(detected[which], FS, info.fs)
    meta = pd.DataFrame({
        "record": info.name,
        "database": database,
        "sample": native.astype(np.int64),
        "lead": info.lead,
        "rr_prev": rr[rows, 0], "rr_next": rr[rows, 1], "rr_local": rr[rows, 2],
        "rr_record": rr[rows, 3],
    })
    return BeatTable(beats, labels[rows], "mitbih", "", meta)


def ptb_label(comments: Iterable[str], include_other: bool = False) -> int | None:
    """0 healthy control, 1 myocardial infarction (other diagnoses 1 if included, else None)."""
    for line in comments:
        text = line.strip().lower()
        if text.startswith(PTB_REASON):
            reason = text[len(PTB_REASON):].strip()
            if reason in PTB_LABELS:
                return PTB_LABELS[reason]
            return 1 if include_other else None
    return None


def ptb_record_table(info: RecordInfo, label: int, conditioned: bool = True) -> BeatTable:
    """Beats of one PTB record at detected R peaks, all with the record's label."""
    signal = resample_to(read_lead(info), info.fs)
    inverted = False
    if conditioned:
        signal, inverted = condition(signal)
    peaks = detect_peaks(signal)
    beats = extract_beats(signal, peaks)
    meta = pd.DataFrame({"record": info.name,
                         "sample": to_rate(peaks, FS, info.fs).astype(np.int64),
                         "lead": info.lead,
                         "inverted": inverted})
    return BeatTable(beats, np.full(len(peaks), label, np.int32), "ptb", "", meta)


# ---------------------------------------------------------------- builds

def _check_leads(leads: Iterable[str]) -> tuple[str, ...]:
    leads = tuple(lead.strip() for lead in leads if lead.strip())
    if not leads:
        raise UserError("--leads is empty: give lead names in order of preference, e.g. MLII,V5")
    return leads


def _preflight(records: list[tuple[str, Path]], leads: tuple[str, ...], annotations: bool,
               skip_bad: bool, log: Log) -> list[RecordInfo]:
    """Inspect every record first, so a bad one fails the build before minutes of work."""
    good = []
    for name, path in records:
        try:
            good.append(inspect_record(path, name, leads, annotations))
        except UserError as e:
            if not skip_bad:
                raise
            log(f"warning: skipping {e}")
    if not good:
        raise UserError("no usable records left to build; check --raw (and --records/--leads)")
    return good


def _run_records(infos: list[RecordInfo], build: Callable[[RecordInfo], BeatTable | None],
                 skip_bad: bool, log: Log) -> list[BeatTable]:
    """Build each record, logging one progress line per record."""
    tables = []
    for i, info in enumerate(infos, 1):
        t0 = time.perf_counter()
        try:
            table = build(info)
        except UserError as e:
            if not skip_bad:
                raise
            log(f"warning: skipping {e}")
            continue
        if table is None:
            continue
        tables.append(table)
        inverted = "inverted" in table.meta and bool(table.meta["inverted"].any())
        log(f"[{i:>{len(str(len(infos)))}}/{len(infos)}] {info.name}: lead {info.lead}"
            f"{' (inverted)' if inverted else ''}, "
            f"{len(table)} beats ({time.perf_counter() - t0:.1f} s)")
    return tables


def _check_interpatient(records: set[str]) -> None:
    """Both halves of the de Chazal split must get at least one record."""
    for part, group in (("train (DS1)", DS1), ("test (DS2)", DS2)):
        if not records & set(group):
            raise UserError(f"interpatient split: none of the records is in the {part} set "
                            f"({' '.join(group[:4])} ...); build all 48 records or use "
                            "--split kaggle")


def build_mitbih(raw_dir: str | Path, out_dir: str | Path, split: str = "kaggle", seed: int = 0,
                 test_fraction: float = 0.2, peaks: str = "annotations",
                 leads: Iterable[str] = MITBIH_LEADS, records: Iterable[str] | None = None,
                 skip_bad: bool = False, log: Log = log_stderr, filter: str = "none",
                 database: str = "mitdb") -> dict[str, Path]:
    """Build beat tables from the WFDB records of MIT-BIH (`database` "mitdb") or of any
    database annotated as it is (`database` names it in the table); returns the written file
    per part."""
    if split not in ("kaggle", "interpatient", "none"):
        raise UserError(f"unknown split {split!r}: use kaggle, interpatient or none")
    if split == "interpatient" and database != "mitdb":
        raise UserError(f"the interpatient split names MIT-BIH records (DS1/DS2); {database} "
                        "takes --split none (one table; validation folds deal its records)")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", database):
        raise UserError(f"--database {database!r}: give a short name of letters, digits, "
                        "'.', '_' or '-', e.g. svdb")
    if filter not in FILTERS:
        raise UserError(f"unknown --filter {filter!r}: use {' or '.join(FILTERS)}")
    if peaks not in PEAK_MODES:
        raise UserError(f"unknown --peaks {peaks!r}: use annotations or detected")
    test_fraction = check_fraction(test_fraction, "--test-fraction")
    leads = _check_leads(leads)
    raw_dir = Path(raw_dir)
    require_dir(raw_dir, "mitbih")
    names = list(records) if records is not None else list_records(raw_dir)
    infos = _preflight([(n, raw_dir / n) for n in names], leads, True, skip_bad, log)
    if split == "interpatient":
        _check_interpatient({i.name for i in infos})  # before minutes of work, not after
    t0 = time.perf_counter()
    tables = _run_records(infos, lambda info: mitbih_record_table(info, peaks, filter, database),
                          skip_bad, log)
    table = concat_tables(tables, "mitbih")
    if not len(table):
        raise UserError("no beats were extracted; check the records and --peaks")

    built = set(table.meta["record"])
    used = pd.Series([i.lead for i in infos if i.name in built])
    others = [f"{i.name}={i.lead}" for i in infos if i.name in built and i.lead != leads[0]]
    log(f"leads: {used.value_counts().to_dict()}"
        + (f"; not {leads[0]}: {', '.join(others)}" if others else "")
        + f"; extracted in {time.perf_counter() - t0:.1f} s")

    parts = record_split(table.meta["record"].to_numpy(), table.y, split, test_fraction, seed)
    if split == "interpatient":
        _check_interpatient(built)
        left_out = sorted(built - set(DS1) - set(DS2))
        if left_out:
            log(f"interpatient split leaves out records {' '.join(left_out)} "
                "(paced, or not in DS1/DS2)")
    files = _write_parts(table, parts, Path(out_dir), MITBIH_FILES)
    print(class_count_table(table, parts,
                            complete=database == "mitdb" and set(MITBIH_RECORDS) <= built))
    for part, path in files.items():
        print(f"wrote {path} ({len(parts[part])} beats)")
    return files


def _write_parts(table: BeatTable, parts: dict[str, np.ndarray], out_dir: Path,
                 names: dict[str, str]) -> dict[str, Path]:
    """Write each part of `table` to `out_dir`/`names[part]`."""
    files = {}
    for part, idx in parts.items():
        files[part] = out_dir / names[part]
        write_table(table.subset(idx), files[part])
    return files


def class_count_table(table: BeatTable, parts: dict[str, np.ndarray], complete: bool) -> str:
    """Per-class counts of each part and of all beats built, vs. the published set if complete."""
    names = table.class_names
    head = ["class", *parts, "built"] + (["published", "diff %"] if complete else [])
    rows = []
    for k, name in enumerate(names):
        row = [name] + [int((table.y[idx] == k).sum()) for idx in parts.values()]
        built = int((table.y == k).sum())
        row.append(built)
        if complete:
            pub = PUBLISHED_COUNTS[name]
            row += [pub, f"{100.0 * (built - pub) / pub:+.2f}"]
        rows.append(row)
    total = ["total"] + [len(idx) for idx in parts.values()] + [len(table)]
    if complete:
        pub = sum(PUBLISHED_COUNTS.values())
        total += [pub, f"{100.0 * (len(table) - pub) / pub:+.2f}"]
    rows.append(total)
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head))]
    lines = ["  ".join(str(v).rjust(w) if c else str(v).ljust(w)
                       for c, (v, w) in enumerate(zip(r, widths))) for r in [head, *rows]]
    return "\n".join(lines)


def build_ptb(raw_dir: str | Path, out_dir: str | Path, seed: int = 0, test_fraction: float = 0.2,
              include_other: bool = False, leads: Iterable[str] = PTB_LEADS,
              conditioned: bool = True, skip_bad: bool = False,
              log: Log = log_stderr) -> dict[str, Path]:
    """Build PTB beat tables (detected R peaks, label from the header's diagnosis)."""
    test_fraction = check_fraction(test_fraction, "--test-fraction")
    leads = _check_leads(leads)
    raw_dir = require_dir(Path(raw_dir), "ptb")
    headers = sorted(raw_dir.rglob("*.hea"))
    if not headers:
        raise UserError(f"{raw_dir}: no .hea headers found (searched sub-folders too); point "
                        "--raw at the PTB database folder (e.g. ../shared/data/physionet/ptbdb)")
    # The patient is the record's folder (ptbdb/patient001/s0010_re), also when --raw is it.
    records = [(f"{h.parent.name}/{h.stem}", h.with_suffix("")) for h in headers]
    infos = _preflight(records, leads, False, skip_bad, log)

    def build(info: RecordInfo) -> BeatTable | None:
        label = ptb_label(info.comments, include_other)
        if label is None:
            log(f"excluded {info.name}: diagnosis is neither healthy control nor myocardial "
                "infarction (pass --include-other to label it abnormal)")
            return None
        return ptb_record_table(info, label, conditioned)

    table = concat_tables(_run_records(infos, build, skip_bad, log), "ptb")
    if not len(table):
        raise UserError(f"{raw_dir}: no labelled beats were extracted (no healthy-control or "
                        "myocardial-infarction record); pass --include-other or add records")
    patients = table.meta["record"].str.split("/").str[0].to_numpy()
    if len(np.unique(patients)) >= 2:
        train, test = group_split(patients, table.y, test_fraction, seed)
        held = len(np.unique(patients[test]))
        how = f"by patient ({held} of {len(np.unique(patients))} patients held out)"
    else:
        train, test = stratified_split(table.y, test_fraction, seed)
        how = "by beat, stratified (only 1 patient, so train and test share that patient)"
    parts = {"train": train, "test": test}
    print(f"split: {how}")
    if not len(test) or not len(train):
        raise UserError("the PTB split left the train or test part empty; add records or "
                        "change --test-fraction")
    files = _write_parts(table, parts, Path(out_dir), PTB_FILES)
    print(class_count_table(table, parts, complete=False))
    for part, path in files.items():
        print(f"wrote {path} ({len(parts[part])} beats)")
    return files


# ---------------------------------------------------------------- download

Fetch = Callable[[str, str], None]


def physionet_fetch(database: str, out_dir: str) -> None:
    """Download a whole PhysioNet database with wfdb."""
    wfdb.dl_database(database, out_dir)


def download(dataset: str, out_dir: str | Path, fetch: Fetch = physionet_fetch) -> Path:
    """Download the raw records of `dataset` into `out_dir` (`fetch` injectable for tests)."""
    if dataset not in DATABASES:
        raise UserError(f"unknown dataset {dataset!r}: use one of {', '.join(DATABASES)}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out}: cannot create the download folder ({e.strerror or e})") from None
    database = DATABASES[dataset]
    try:
        fetch(database, str(out))
    except OSError as e:  # requests' connection/HTTP errors are OSErrors too
        raise UserError(f"downloading {database} from PhysioNet failed ({error_reason(e)}); check the "
                        f"network, or copy the records into {out} by hand") from None
    if not any(out.rglob("*.hea")):
        raise UserError(f"downloading {database} put no .hea records into {out}; "
                        "check the network and try again")
    return out


__all__ = [
    "AAMI_MAP", "ANNOTATED_COUNTS", "CLASS_NAMES", "MITBIH_LEADS", "MITBIH_RECORDS",
    "PTB_LEADS", "PUBLISHED_COUNTS", "build_mitbih", "build_ptb", "class_count_table",
    "detect_peaks", "download", "extract_beats", "match_peaks", "ptb_label", "resample_to",
    "rr_features", "to_rate",
]
