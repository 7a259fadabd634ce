"""Open an ECG recording by its suffix and read one lead of it in mV.

- WFDB (`RECORD.hea`, or the record's path without suffix): rate, lead names and physical units
  from the header.
- EDF/EDF+ (`.edf`, through pyedflib): rate, labels and physical dimension per signal.
- CSV (`.csv`): one column per lead under a header row of lead names; a time or sample-index
  column (`time`, `time_s`, `t`, `seconds`, `sample`, `index`, ...) is left out.
- NumPy (`.npy`: a 1-D array or one of (samples, leads), its leads named by index; `.npz`: one
  1-D array per lead, named by its key).

CSV and NumPy files carry no rate (the caller passes one: annotate's `--fs`) and no units: they
are taken as mV. WFDB and EDF signals in uV or V are converted to mV.

The lead, when none is named: the first of LEADS the recording has, names compared by
`lead_key` (case, spaces and an ECG/EKG prefix aside), or its only signal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from heartjax.data.physionet import RecordInfo, check_data_files, error_reason, read_lead
from heartjax.errors import UserError

# Lead II by its names across databases: MIT-BIH's MLII, II / ii (12-lead records, LUDB, PTB),
# svdb's ECG1 (about modified lead II); then MIT-BIH's chest leads (records 102 and 104 have no
# MLII), then a single-lead recorder's ECG.
LEADS = ("MLII", "II", "ii", "ECG1", "V5", "V2", "V1", "V4", "ECG")
FORMATS = {".edf": "edf", ".csv": "csv", ".npy": "npy", ".npz": "npz"}  # anything else: WFDB
WFDB_SUFFIXES = (".hea", ".dat", ".atr")
NO_RATE = ("csv", "npy", "npz")  # files that carry no sampling frequency
TO_MV = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3, "nv": 1e-6}
# CSV columns that hold time or a sample index, not a lead
TIME_COLUMN = re.compile(r"(t|s|ms|sec|secs|seconds?|time.*|timestamp|elapsed.*|samples?|index"
                         r"|unnamed: 0)(\s*[(\[].*[)\]])?", re.IGNORECASE)
NAME = re.compile(r"[-\w]+")  # what a WFDB annotation file's record name may hold


@dataclass(frozen=True)
class Recording:
    """A recording that opened: where it is, its format, the chosen lead and its rate."""

    name: str  # the outputs' name: the record's name or the file's stem
    path: Path  # the file; a WFDB record: its path without suffix
    format: str  # wfdb, edf, csv, npy or npz
    lead: str  # as the recording names it
    fs: float
    leads: tuple[str, ...]  # every lead it has
    choice: str  # why this lead: "--lead", "the first it has of ..." or "its only signal"
    to_mv: float = 1.0  # the lead's physical unit in mV
    comments: tuple[str, ...] = ()

    @property
    def record(self) -> Path:
        """The path without suffix, where a WFDB reference annotation (`.atr`) would lie."""
        return self.path if self.format == "wfdb" else self.path.with_suffix("")


def lead_key(name: str) -> str:
    """A lead name compared across recorders: no spaces, upper case, EKG read as ECG, and an
    ECG prefix before a lead's name dropped ("ECG II", "ii" -> "II"; "EKG 1" -> "ECG1")."""
    key = re.sub(r"\s+", "", name).upper()
    key = re.sub(r"^EKG", "ECG", key)
    return re.sub(r"^ECG(?=[A-Z])", "", key)


def choose_lead(name: str, leads: tuple[str, ...], wanted: str | None,
                by_index: bool = False) -> tuple[int, str]:
    """The index of the lead to read and why: `wanted` (exact name, else by `lead_key`), else
    the first of LEADS the recording has, else its only lead. `by_index`: leads are unnamed
    (numbered), so only `wanted` or a single lead picks one."""
    have = ", ".join(leads) or "no signals"
    if wanted is not None:
        if wanted in leads:
            return leads.index(wanted), "--lead"
        keys = [lead_key(lead) for lead in leads]
        if not by_index and lead_key(wanted) in keys:
            return keys.index(lead_key(wanted)), "--lead"
        what = "lead index" if by_index else "lead"
        raise UserError(f"recording {name}: no {what} {wanted} (it has {have}); pass one of "
                        "its leads")
    if not by_index:
        keys = [lead_key(lead) for lead in leads]
        for preferred in LEADS:
            if lead_key(preferred) in keys:
                return keys.index(lead_key(preferred)), f"the first it has of {', '.join(LEADS)}"
    if len(leads) == 1:
        return 0, "its only signal"
    listed = f"none of {', '.join(LEADS)}; it has {have}"
    raise UserError(f"recording {name}: {'unnamed leads ' + have if by_index else listed}; "
                    "pass --lead NAME" + (" (a column index)" if by_index else ""))


def check_fs(fs: float | None) -> float | None:
    """`fs` if it is None or a positive number of Hz, else a UserError."""
    if fs is not None and not (np.isfinite(fs) and fs > 0):
        raise UserError(f"--fs {fs:g}: give the sampling frequency in Hz, a number above 0")
    return fs


def open_recording(path: str | Path, lead: str | None = None,
                   fs: float | None = None) -> Recording:
    """Check a recording (file, format, lead, rate) before any work; `lead` None: LEADS.

    `fs` is the rate of a CSV or NumPy file, which carry none (WFDB and EDF keep their own)."""
    check_fs(fs)
    path = Path(path)
    kind = FORMATS.get(path.suffix.lower(), "wfdb")
    if kind == "wfdb":
        return _open_wfdb(path, lead)
    name = path.stem
    if not path.is_file():
        raise UserError(f"recording {path.name}: file not found in {path.parent.absolute()}")
    if not NAME.fullmatch(name):
        raise UserError(f"recording {path.name}: the outputs are named after the file, and a "
                        "WFDB annotation name holds only letters, digits, - and _; rename the file")
    if kind == "edf":
        return _open_edf(path, lead)
    if fs is None:
        raise UserError(f"recording {path.name}: a {kind.upper()} file carries no sampling "
                        "frequency; pass --fs HZ")
    if kind == "csv":
        leads = _csv_leads(path)
        index, choice = choose_lead(path.name, leads, lead)
    else:
        leads, by_index = _numpy_leads(path)
        index, choice = choose_lead(path.name, leads, lead, by_index)
    rec = Recording(name, path, kind, leads[index], float(fs), leads, choice)
    read_signal(rec)  # a bad value fails now, before any recording is worked on
    return rec


def read_signal(rec: Recording) -> np.ndarray:
    """The recording's lead in mV (float64), gaps (NaN, invalid samples) interpolated."""
    if rec.format == "wfdb":
        info = RecordInfo(rec.name, rec.path, rec.lead, rec.fs, rec.comments)
        return read_lead(info, hint="") * rec.to_mv
    if rec.format == "edf":
        signal = _read_edf(rec)
    elif rec.format == "csv":
        signal = _read_csv(rec)
    else:
        signal = _read_numpy(rec)
    return fill_gaps(np.asarray(signal, np.float64) * rec.to_mv, rec)


def fill_gaps(signal: np.ndarray, rec: Recording) -> np.ndarray:
    """`signal` with its non-finite samples interpolated; a UserError when all are."""
    bad = ~np.isfinite(signal)
    if not len(signal) or bad.all():
        raise UserError(f"recording {rec.path.name}: lead {rec.lead} holds no valid samples")
    if bad.any():  # the resampling filter would smear a NaN over its whole neighbourhood
        idx = np.arange(len(signal))
        signal[bad] = np.interp(idx[bad], idx[~bad], signal[~bad])
    return signal


def unit_to_mv(unit: str) -> float:
    """mV per `unit` (mV, uV, V); an unknown or empty unit is taken as mV."""
    return TO_MV.get(unit.strip().lower().replace(" ", ""), 1.0)


def _open_wfdb(path: Path, lead: str | None) -> Recording:
    import wfdb

    if path.suffix in WFDB_SUFFIXES:
        path = path.with_suffix("")
    name = path.name
    if not path.with_name(name + ".hea").is_file():
        known = ", ".join(["WFDB (.hea)", *(f"{k.upper()} ({s})" for s, k in FORMATS.items())])
        raise UserError(f"record {name}: header {name}.hea not found in {path.parent.absolute()}; "
                        f"pass a WFDB record's path without suffix, e.g. mitdb/100, or a file "
                        f"of a known format: {known}")
    try:
        header = wfdb.rdheader(str(path))
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"record {name}: unreadable header {name}.hea ({error_reason(e)})") from None
    leads = tuple(header.sig_name or ())
    index, choice = choose_lead(name, leads, lead)
    check_data_files(path, name, header, hint="")
    units = (header.units or [""] * len(leads))[index] or "mV"
    return Recording(name, path, "wfdb", leads[index], float(header.fs), leads, choice,
                     unit_to_mv(units), tuple(header.comments or ()))


def _open_edf(path: Path, lead: str | None) -> Recording:
    import pyedflib

    try:
        with pyedflib.EdfReader(str(path)) as reader:
            leads = tuple(label.strip() for label in reader.getSignalLabels())
            index, choice = choose_lead(path.name, leads, lead)
            fs = float(reader.getSampleFrequency(index))
            unit = reader.getPhysicalDimension(index)
            samples = int(reader.getNSamples()[index])
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"recording {path.name}: unreadable EDF file ({error_reason(e)})") from None
    if samples < 1 or fs <= 0:
        raise UserError(f"recording {path.name}: lead {leads[index]} holds no samples")
    return Recording(path.stem, path, "edf", leads[index], fs, leads, choice, unit_to_mv(unit))


def _read_edf(rec: Recording) -> np.ndarray:
    import pyedflib

    try:
        with pyedflib.EdfReader(str(rec.path)) as reader:
            return reader.readSignal(rec.leads.index(rec.lead))  # physical values
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"recording {rec.path.name}: cannot read lead {rec.lead} "
                        f"({error_reason(e)})") from None


def _csv_leads(path: Path) -> tuple[str, ...]:
    import pandas as pd

    try:
        columns = [str(c).strip() for c in pd.read_csv(path, nrows=0).columns]
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"recording {path.name}: unreadable CSV file ({error_reason(e)})") from None
    if columns and all(_is_number(c) for c in columns):
        raise UserError(f"recording {path.name}: its first row holds numbers; the first row must "
                        "name the leads (e.g. MLII,V1)")
    return tuple(c for c in columns if not TIME_COLUMN.fullmatch(c))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(rec: Recording) -> np.ndarray:
    import pandas as pd

    try:
        frame = pd.read_csv(rec.path, skipinitialspace=True)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"recording {rec.path.name}: unreadable CSV file ({error_reason(e)})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    column = frame[rec.lead]
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() & column.notna() & (column.astype(str).str.strip() != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(f"recording {rec.path.name}: column {rec.lead} holds "
                        f"{str(column.iloc[row])[:20]!r} on line {row + 2}, not a number; "
                        "fix or remove it (an empty cell is a gap)")
    return values.to_numpy(np.float64)


def _load_numpy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"recording {path.name}: unreadable NumPy file ({error_reason(e)})") from None


def _numpy_leads(path: Path) -> tuple[tuple[str, ...], bool]:
    """The lead names of a .npy (indices: by_index True) or .npz (its keys) file."""
    data = _load_numpy(path)
    if path.suffix.lower() == ".npz":
        with data:
            return tuple(data.files), False
    if data.ndim not in (1, 2) or (data.ndim == 2 and data.shape[1] > data.shape[0]):
        raise UserError(f"recording {path.name}: a {data.shape} array; give a 1-D array or one "
                        "of shape (samples, leads)")
    return tuple(str(i) for i in range(1 if data.ndim == 1 else data.shape[1])), True


def _read_numpy(rec: Recording) -> np.ndarray:
    data = _load_numpy(rec.path)
    if rec.format == "npz":
        with data:
            signal = data[rec.lead]
        if signal.ndim != 1:
            raise UserError(f"recording {rec.path.name}: array {rec.lead} has shape "
                            f"{signal.shape}; each lead of a .npz file is a 1-D array")
    else:
        signal = data if data.ndim == 1 else data[:, int(rec.lead)]
    if not np.issubdtype(signal.dtype, np.number) or np.iscomplexobj(signal):
        raise UserError(f"recording {rec.path.name}: lead {rec.lead} holds {signal.dtype} "
                        "values, not real numbers")
    return np.array(signal, np.float64)
