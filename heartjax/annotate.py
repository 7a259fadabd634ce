"""`python -m heartjax.annotate RECORDING [RECORDING ...] --out DIR`: label every beat of a raw ECG
recording.

From the raw signal alone, at any sampling frequency and gain:
1. the recording, by its suffix (`heartjax.recordings`): WFDB (`RECORD.hea` or the record's path
   without suffix), EDF/EDF+ (`.edf`), CSV (`.csv`: a header row of lead names, one column a lead)
   or NumPy (`.npy`: 1-D or (samples, leads); `.npz`: one array a lead). CSV and NumPy carry no
   rate (`--fs HZ`) and are taken as mV; WFDB and EDF signals are read in mV;
2. the lead, the first of lead II's names (MLII, II, ii, ECG1), then MIT-BIH's chest leads V5,
   V2, V1, V4, then ECG (`recordings.LEADS`, names compared without case, spaces or an ECG/EKG
   prefix), or the only signal; `--lead` names one;
3. QRS complexes by wfdb's `gqrs` (PhysioNet's detector; `--detector` picks wfdb's `xqrs` or
   one of neurokit2's), each moved to its R peak (within 50 ms, the largest deviation from the
   200 ms local mean: gqrs marks about 35 ms before the peak, where the reference annotations
   and the beat windows start); a detection that neither of two neurokit2 detectors confirms
   and that is under half its neighbours' size is dropped (a T wave or noise:
   `drop_unconfirmed`);
4. each beat cut exactly as the table build cuts it (`physionet.extract_beats` on the lead
   resampled to 125 Hz), the R-R intervals and template features from the detected beats;
5. the checkpoint's model (or the ensemble of several).

Writes `DIR/NAME.hjx` (NAME: the record's name or the file's stem), a WFDB annotation file with
the AAMI symbols N S V F Q at the R peaks written by `wfdb.wrann`, read back by
`wfdb.rdann(path, "hjx")`), and `DIR/NAME.csv` (sample, time, class and each class's
probability). `heartjax.score` compares the .hjx with the .atr.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heartjax.checkpoint import Ensemble, Predictor
from heartjax.data.physionet import extract_beats, resample_to, to_rate
from heartjax.data.rhythm import rr_features
from heartjax.data.tables import CLASS_NAMES, FS
from heartjax.errors import Parser, UserError, cli_entry
from heartjax.pretrained import load
from heartjax.recordings import LEADS, Recording, check_fs, open_recording, read_signal

# the new-patient model that ships with heartjax (heartjax.pretrained): no training needed
DEFAULT_CHECKPOINT = "interpatient"
EXTENSION = "hjx"
PEAK_SEARCH_S = 0.05  # a detection → the R peak this close to it
BASELINE_S = 0.2  # the local mean the R peak deviates from
PEAK_RULES = ("deviation", "max")
# gqrs sees a lead whose QRS band's typical 2 s peak-to-peak amplitude is under MIN_QRS_MV
# scaled up to it (measured: LUDB QRS Se 96.3% -> 99.8%; 2 of the 22 DS1 records and 10 of
# svdb's 39 are that small: 1 beat fewer and 2 more found, 9 and 4 more extra detections)
QRS_BAND_HZ = (5.0, 25.0)
MIN_QRS_MV = 1.0
# the check of each detection against other published detectors (experiments/qrs_detectors.py
# chose it on the DS1 records: extra detections 127 -> 43, missed beats 66 -> 87, of 42,463)
CONFIRMERS = ("neurokit", "kalidas2017")  # neurokit2's own detector and Kalidas & Tamil 2017
CONFIRM_S = 0.1  # another detector's beat this close confirms a detection
SMALL = 0.5  # an unconfirmed detection under this share of its neighbours' median size goes
NEIGHBOURS = 8  # on each side, for that median


@dataclass(frozen=True)
class Annotation:
    """The beats of one record: R peaks at the record's own rate and the model's probabilities."""

    record: str
    fs: float
    lead: str
    sample: np.ndarray  # (n,) int64
    proba: np.ndarray  # (n, classes)
    class_names: tuple[str, ...]

    @property
    def labels(self) -> np.ndarray:
        return self.proba.argmax(axis=1)

    @property
    def symbols(self) -> list[str]:
        return [self.class_names[i] for i in self.labels]

    def table(self) -> pd.DataFrame:
        """One row per beat: sample, time_s, class, then p_<class> for each class."""
        frame = pd.DataFrame({"sample": self.sample, "time_s": np.round(self.sample / self.fs, 4),
                              "class": self.symbols})
        for i, name in enumerate(self.class_names):
            frame[f"p_{name}"] = np.round(self.proba[:, i], 5)
        return frame


def qrs_amplitude(signal: np.ndarray, fs: float) -> float:
    """The lead's typical QRS size (mV): the median peak-to-peak amplitude of its 2 s windows
    in the QRS band (5-25 Hz)."""
    from scipy.signal import butter, sosfiltfilt

    if len(signal) < 2 * fs:  # too short to filter
        return float(np.ptp(signal)) if len(signal) else 0.0
    band = sosfiltfilt(butter(2, QRS_BAND_HZ, "bandpass", fs=fs, output="sos"), signal)
    width = round(2 * fs)
    return float(np.median([np.ptp(band[i:i + width])
                            for i in range(0, len(band) - width + 1, width)]))


def _gqrs(signal: np.ndarray, fs: float) -> np.ndarray:
    from wfdb.processing import gqrs_detect

    # gqrs starts from a typical QRS of 0.75 mV and adapts over tens of seconds: a lead whose
    # QRS complexes are small (LUDB's low-voltage lead ii) is seen larger, or a 10 s record
    # ends before gqrs finds its beats
    amplitude = qrs_amplitude(signal, fs)
    if 0 < amplitude < MIN_QRS_MV:
        signal = signal * (MIN_QRS_MV / amplitude)
    return np.asarray(gqrs_detect(sig=signal, fs=fs), dtype=np.int64)


def _xqrs(signal: np.ndarray, fs: float) -> np.ndarray:
    from wfdb.processing import xqrs_detect

    return np.asarray(xqrs_detect(sig=signal, fs=fs, verbose=False), dtype=np.int64)


def neurokit_peaks(signal: np.ndarray, fs: float, methods: Sequence[str]) -> list[np.ndarray] | None:
    """The R peaks of each of neurokit2's `methods`, on neurokit2's own cleaned signal; None
    when neurokit2 cannot run on this signal (too short or flat)."""
    import warnings

    import neurokit2 as nk

    rate = max(1, round(fs))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # neurokit2 warns about short or flat signals
            clean = nk.ecg_clean(signal, sampling_rate=rate)
            return [np.asarray(nk.ecg_peaks(clean, sampling_rate=rate, method=m)[1]["ECG_R_Peaks"],
                               np.int64) for m in methods]
    except Exception:  # noqa: BLE001 - a detector that fails on a record finds nothing
        return None


def _neurokit(method: str) -> Callable[[np.ndarray, float], np.ndarray]:
    def detect(signal: np.ndarray, fs: float) -> np.ndarray:
        found = neurokit_peaks(signal, fs, (method,))
        return found[0] if found else np.zeros(0, np.int64)

    return detect


# wfdb's two QRS detectors and four of neurokit2's; experiments/qrs_detectors.py measures them
# on the DS1 records (gqrs is the best of them)
DETECTORS = {"gqrs": _gqrs, "xqrs": _xqrs,
             **{m: _neurokit(m) for m in ("neurokit", "kalidas2017", "hamilton2002", "engzeemod2012")}}


def nearest_distance(peaks: np.ndarray, other: np.ndarray) -> np.ndarray:
    """For each of `peaks`, the distance (samples) to the nearest of the sorted `other`."""
    if not len(other):
        return np.full(len(peaks), np.inf)
    j = np.searchsorted(other, peaks)
    left, right = other[np.maximum(j - 1, 0)], other[np.minimum(j, len(other) - 1)]
    return np.minimum(np.abs(peaks - left), np.abs(peaks - right))


def drop_unconfirmed(peaks: np.ndarray, size: np.ndarray, others: Sequence[np.ndarray],
                     window: int) -> np.ndarray:
    """`peaks` less those that no peak of `others` lies within `window` samples of and whose
    `size` is under SMALL x the median size of their NEIGHBOURS on each side."""
    if len(peaks) < 2:
        return peaks
    confirmed = np.zeros(len(peaks), bool)
    for other in others:
        confirmed |= nearest_distance(peaks, np.sort(other)) <= window
    k = NEIGHBOURS
    median = np.array([np.median(np.r_[size[max(0, i - k):i], size[i + 1:i + 1 + k]])
                       for i in range(len(peaks))])
    return peaks[confirmed | (size >= SMALL * median)]


def detect_qrs(signal: np.ndarray, fs: float, detector: str = "gqrs",
               peak: str = "deviation", confirm: bool = True) -> np.ndarray:
    """R peaks (sample indices at `fs`): the detector's QRS complexes moved to their R peaks.

    `peak` "deviation" (the default) takes the largest deviation from the local mean, "max"
    the largest sample; `confirm` drops the small detections no other detector finds
    (`drop_unconfirmed`). experiments/qrs_detectors.py measures each against the reference."""
    if detector not in DETECTORS:
        raise UserError(f"unknown QRS detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if peak not in PEAK_RULES:
        raise UserError(f"unknown R-peak rule {peak!r}; choose one of {', '.join(PEAK_RULES)}")
    from scipy.ndimage import uniform_filter1d

    signal = np.asarray(signal, np.float64)
    found = np.sort(DETECTORS[detector](signal, fs))
    # the R peak: the largest deviation from the local mean, up or down (a V beat's main
    # deflection is often negative)
    deviation = np.abs(signal - uniform_filter1d(signal, max(1, round(BASELINE_S * fs))))
    target = deviation if peak == "deviation" else signal
    half = max(1, round(PEAK_SEARCH_S * fs))
    peaks = np.array([max(0, q - half) + int(np.argmax(target[max(0, q - half):q + half + 1]))
                      for q in found], dtype=np.int64)
    peaks = np.unique(peaks)  # two detections of one complex reach one peak
    others = neurokit_peaks(signal, fs, CONFIRMERS) if confirm and len(peaks) else None
    if others is None:  # nothing to check against: every detection stays
        return peaks
    return drop_unconfirmed(peaks, deviation[peaks], others, round(CONFIRM_S * fs))


def _check_model(model: Predictor | Ensemble) -> None:
    if tuple(model.class_names) != CLASS_NAMES["mitbih"]:
        raise UserError(f"{model.path}: a {'/'.join(model.class_names)} model; annotating records "
                        f"needs a MIT-BIH beat model ({', '.join(CLASS_NAMES['mitbih'])}), e.g. "
                        f"the packaged {DEFAULT_CHECKPOINT!r} (the default of --checkpoint)")


def annotate_info(model: Predictor | Ensemble, info: Recording, detector: str = "gqrs",
                  confirm: bool = True) -> Annotation:
    """Detect, cut and classify the beats of a checked recording."""
    raw = read_signal(info)
    peaks = detect_qrs(raw, info.fs, detector, confirm=confirm)
    seconds = len(raw) / info.fs
    if len(peaks) < 2:
        raise UserError(f"record {info.name}: {len(peaks)} beat(s) found in {seconds:.1f} s of lead "
                        f"{info.lead}; a record needs at least two beats (R-R intervals)")
    signal = resample_to(raw, info.fs)
    beats = extract_beats(signal, to_rate(peaks, info.fs, FS, len(signal)))
    rr = rr_features(peaks, info.fs)
    proba = model.predict_proba(beats, rr if model.needs_rr else None)
    return Annotation(info.name, info.fs, info.lead, peaks, np.asarray(proba), tuple(model.class_names))


def annotate_record(model: Predictor | Ensemble, record: str | Path, lead: str | None = None,
                    detector: str = "gqrs", confirm: bool = True,
                    fs: float | None = None) -> Annotation:
    """Every beat of the recording at `record` (a WFDB record's path without suffix, or an
    .edf, .csv, .npy or .npz file; `fs`: the rate of a CSV or NumPy file), labelled by `model`."""
    _check_model(model)
    return annotate_info(model, open_recording(record, lead, fs), detector, confirm)


def write_annotation(ann: Annotation, out_dir: str | Path) -> tuple[Path, Path]:
    """DIR/RECORD.hjx and DIR/RECORD.csv, each written whole or not at all."""
    import wfdb

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".annotate-") as tmp:
        wfdb.wrann(ann.record, EXTENSION, ann.sample, np.array(ann.symbols), fs=ann.fs,
                   write_dir=tmp)
        ann.table().to_csv(Path(tmp) / f"{ann.record}.csv", index=False)
        paths = []
        for suffix in (EXTENSION, "csv"):
            target = out / f"{ann.record}.{suffix}"
            (Path(tmp) / f"{ann.record}.{suffix}").replace(target)
            paths.append(target)
    return paths[0], paths[1]


def parse_window(text: str) -> tuple[float, float]:
    """`START:END` in seconds → (start, end)."""
    try:
        start, end = (float(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--plot {text!r}: give START:END in seconds, e.g. 600:610") from None
    if not 0 <= start < end:
        raise UserError(f"--plot {text!r}: need 0 <= START < END (seconds)")
    return start, end


def plot_strip(ann: Annotation, info: Recording, window: tuple[float, float],
               path: str | Path) -> Path:
    """The lead over `window` (seconds) with the reference labels (when an .atr exists) above
    the signal and the predicted ones below it; a disagreement is drawn in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import wfdb

    from heartjax.data.physionet import AAMI_MAP

    start, end = (round(t * info.fs) for t in window)
    signal = read_signal(info)
    end = min(end, len(signal))
    if start >= end:
        raise UserError(f"--plot: the record is {len(signal) / info.fs:.0f} s long; "
                        "choose a window inside it")
    t = np.arange(start, end) / info.fs
    fig, ax = plt.subplots(figsize=(max(8.0, (end - start) / info.fs * 1.2), 3.4))
    ax.plot(t, signal[start:end], lw=0.8, color="black")
    top, bottom = float(signal[start:end].max()), float(signal[start:end].min())
    pad = 0.15 * (top - bottom or 1.0)
    reference: dict[int, str] = {}
    if info.record.with_name(info.record.name + ".atr").is_file():
        ref = wfdb.rdann(str(info.record), "atr")
        reference = {int(s): CLASS_NAMES["mitbih"][AAMI_MAP[c]]
                     for s, c in zip(ref.sample, ref.symbol) if c in AAMI_MAP and start <= s < end}
        for s, c in reference.items():
            ax.text(s / info.fs, top + pad, c, ha="center", va="bottom", fontsize=9, color="tab:blue")
    ref_samples = np.array(sorted(reference), dtype=np.int64)
    tol = round(0.15 * info.fs)
    for s, c in zip(ann.sample, ann.symbols):
        if not start <= s < end:
            continue
        near = ref_samples[np.abs(ref_samples - s) <= tol] if len(ref_samples) else ref_samples
        wrong = bool(reference) and (not len(near) or reference[int(near[0])] != c)
        ax.text(s / info.fs, bottom - pad, c, ha="center", va="top", fontsize=9,
                color="tab:red" if wrong else "tab:green")
        ax.axvline(s / info.fs, color="0.85", lw=0.6, zorder=0)
    ax.set_ylim(bottom - 3 * pad, top + 3 * pad)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{info.lead} (mV)")
    above = "reference (.atr) above, " if reference else ""
    ax.set_title(f"record {info.name}: {above}heartjax below (red: differs from the reference)",
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _summary(ann: Annotation) -> str:
    counts = pd.Series(ann.symbols).value_counts()
    classes = " ".join(f"{c} {counts.get(c, 0):,}" for c in ann.class_names)
    return f"{len(ann.sample):,} beats ({classes})"


def lead_line(rec: Recording) -> str:
    """Which lead of the recording annotate reads and why: its progress line begins so."""
    return f"{rec.name}: lead {rec.lead} at {rec.fs:g} Hz ({rec.choice})"


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    parser = Parser(
        prog="python -m heartjax.annotate",
        description="Detect, classify and annotate every beat of raw ECG recordings: WFDB "
                    "records, EDF/EDF+, CSV or NumPy files.",
        epilog="Units: WFDB and EDF signals are read in mV (uV and V converted); CSV and NumPy "
               "values are taken as mV. Only the QRS detection sees the scale (gqrs starts from "
               "a typical QRS amplitude in mV; the classifier normalises each 10 s window), so "
               "give CSV and NumPy values in mV.")
    parser.add_argument("records", nargs="+", metavar="RECORDING",
                        help="a WFDB record's path without suffix (or its .hea), e.g. "
                             "../shared/data/physionet/mitdb/100; an EDF/EDF+ file (.edf); a CSV "
                             "file (.csv: a header row of lead names, one column a lead, a time "
                             "column left out); a NumPy file (.npy: 1-D or (samples, leads); "
                             ".npz: one 1-D array a lead, named by its key)")
    parser.add_argument("--checkpoint", nargs="+", default=[DEFAULT_CHECKPOINT], metavar="RUN",
                        help="a train workdir, tune run or step folder; several: their ensemble; "
                             f"or a packaged model's name (default: {DEFAULT_CHECKPOINT}, the "
                             "new-patient model that ships with heartjax)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for NAME.hjx (WFDB annotations) and NAME.csv, NAME the "
                             "record's name or the file's stem")
    parser.add_argument("--lead", metavar="NAME",
                        help="the lead to use: a signal, EDF label, CSV column or .npz array name "
                             "(an unnamed .npy's column index). Default: the first of "
                             f"{', '.join(LEADS)} (lead II's names, then MIT-BIH's chest leads; "
                             "case, spaces and an ECG/EKG prefix aside: 'ECG II' is II), or the "
                             "recording's only signal")
    parser.add_argument("--fs", type=float, metavar="HZ",
                        help="sampling frequency of CSV and NumPy files, which carry none "
                             "(required for them; WFDB and EDF files keep their own)")
    parser.add_argument("--detector", choices=list(DETECTORS), default="gqrs",
                        help="QRS detector: wfdb's gqrs or xqrs, or one of neurokit2's (default "
                             "gqrs: the best of them on the DS1 records, experiments/qrs_detectors.py)")
    parser.add_argument("--no-confirm", dest="confirm", action="store_false",
                        help="keep every detection (default: drop those that neither of neurokit2's "
                             "detectors confirms and that are under half their neighbours' size)")
    parser.add_argument("--plot", metavar="START:END",
                        help="also write DIR/NAME.png: the lead over this window (seconds) with "
                             "the reference and predicted labels")
    args = parser.parse_args(argv)
    window = parse_window(args.plot) if args.plot else None
    check_fs(args.fs)
    # every recording checked first
    recordings = [open_recording(r, args.lead, args.fs) for r in args.records]
    seen = [rec.name for rec in recordings]
    if len(set(seen)) != len(seen):
        raise UserError("two recordings share a name; their outputs would overwrite each other")
    model = load(args.checkpoint)
    _check_model(model)
    for rec in recordings:
        t0 = time.perf_counter()
        ann = annotate_info(model, rec, args.detector, args.confirm)
        hjx, csv = write_annotation(ann, args.out)
        extra = ""
        if window:
            extra = f", {plot_strip(ann, rec, window, Path(args.out) / f'{rec.name}.png')}"
        print(f"{lead_line(rec)}: {_summary(ann)} in {time.perf_counter() - t0:.1f} s -> {hjx}, "
              f"{csv}{extra}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
