"""Real recorder noise from the MIT-BIH Noise Stress Test Database (nstdb): read it, keep a
compact bank of it for training, and add it to a clean record as the standard's `nst` does.

The noise records: `bw` (baseline wander), `ma` (muscle artefact) and `em` (electrode motion),
2 channels at 360 Hz, in mV. Where a folder has no `em` record but `em_est118` (an estimate:
118e_6 - mitdb/118 inside the noise-on windows, an unknown gain times em plus a constant per
window), em is that estimate with each window's constant removed, holding only the noise-on
samples (`NoiseRecord.windows`).

`nst` (PhysioNet's WFDB `nst` with `sigamp`) scales the noise of each signal so that
SNR = 10 log10(S / N) during the noisy periods, where S = A^2 / 8 with A the QRS amplitude of
the clean signal (the trimmed mean of the peak-to-peak amplitude within 50 ms of the first 300
normal beats, `qrs_amplitude`) and N = R^2 with R the noise's RMS amplitude (the trimmed mean
of the RMS over its first 300 one-second windows, `rms_amplitude`). Noise is on from minute 5,
2 minutes on and 2 off (`nst_windows`); the output stays continuous where the gain changes
(`nst_add`). docs/noise.md compares this construction with nstdb's 118e00 and 118e_6.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from heartjax.errors import UserError

KINDS = ("bw", "ma", "em")
EM_ESTIMATE = "em_est118"
EM_SOURCE = "118e_6"  # the record em_est118 was taken from: its SNR calibrates the estimate
BANK_FILE = "noise.npz"
BANK_FS = 125  # Hz, the beat tables' rate
LEARNING_S = 300.0  # nst: noise-free first 5 minutes
PERIOD_S = 120.0  # then 2 minutes noisy, 2 clean, ...
QRS_HALF_S = 0.05  # sigamp -a: the peak-to-peak window, either side of the annotation
MEASUREMENTS = 300  # sigamp: at most this many beats or one-second windows
RMS_WINDOW_S = 1.0
# sigamp measures the beats that WFDB's map1 calls NORMAL: every supraventricular and
# unclassified beat, not the V, E, F beats (WFDB's ecgmap.h)
NORMAL_SYMBOLS = frozenset("NLRaJASj/QBenf")
BUILD_HINT = "build it with `python -m heartjax.data build noise --raw NSTDB_DIR --out DIR`"

Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True, eq=False)
class NoiseRecord:
    """A noise record: `signal` (samples, channels) in mV at `fs` Hz; `windows` the (start,
    end) samples of the noise-on periods it holds, end to end, when it holds only those
    (the em estimate), else None (a whole record, from time 0)."""

    kind: str
    name: str
    signal: np.ndarray
    fs: float
    windows: tuple[tuple[int, int], ...] | None = None


# ----------------------------------------------------------------------------- measures


def nst_windows(length: int, fs: float, start_s: float = LEARNING_S,
                period_s: float = PERIOD_S) -> list[tuple[int, int]]:
    """The noise-on (start, end) samples of a record of `length` samples under nst's
    standard protocol: noisy from `start_s` on, `period_s` on and `period_s` off."""
    t0, dt = round(start_s * fs), round(period_s * fs)
    return [(a, min(a + dt, length)) for a in range(t0, length, 2 * dt)]


def _trimmed_mean(values: np.ndarray) -> np.ndarray:
    """sigamp's trimmed mean: each column sorted, the lowest and highest 5% left out."""
    values = np.sort(np.asarray(values, np.float64), axis=0)
    low = len(values) // 20
    return values[low:len(values) - low].mean(axis=0)


def qrs_amplitude(signal: np.ndarray, samples: np.ndarray, symbols: Sequence[str],
                  fs: float) -> np.ndarray:
    """Each channel's QRS amplitude as `sigamp -a` measures it: the trimmed mean of the
    peak-to-peak amplitude within 50 ms of the first 300 normal beats."""
    signal = np.asarray(signal, np.float64).reshape(len(signal), -1)
    half = round(QRS_HALF_S * fs)
    amps = []
    for s, sym in zip(np.asarray(samples), symbols):
        if sym not in NORMAL_SYMBOLS or s - half < 0 or s + half >= len(signal):
            continue
        window = signal[s - half:s + half + 1]
        amps.append(window.max(axis=0) - window.min(axis=0))
        if len(amps) == MEASUREMENTS:
            break
    if not amps:
        raise UserError("no normal beat annotation to measure the QRS amplitude on; nst's "
                        "signal level needs the reference beats (.atr)")
    return _trimmed_mean(np.stack(amps))


def rms_amplitude(signal: np.ndarray, fs: float) -> np.ndarray:
    """Each channel's RMS amplitude as `sigamp -r` measures it: the trimmed mean of the RMS
    (about the window's mean) of the first 300 one-second windows."""
    signal = np.asarray(signal, np.float64).reshape(len(signal), -1)
    w = max(round(RMS_WINDOW_S * fs), 1)
    k = min(len(signal) // w, MEASUREMENTS)
    if k == 0:
        raise UserError(f"a noise signal of {len(signal)} samples is shorter than one second")
    windows = signal[:k * w].reshape(k, w, -1)
    return _trimmed_mean(windows.std(axis=1))


def noise_gain(snr_db: float) -> float:
    """nst's noise RMS per unit of QRS amplitude for `snr_db`: 10^(-SNR/20) sqrt(2) / 4, so
    that A^2 / 8 over the noise's mean square is SNR."""
    return 10.0 ** (-snr_db / 20.0) * np.sqrt(2.0) / 4.0


# ----------------------------------------------------------------------------- reading


def _read(folder: Path, name: str) -> Any:
    """A WFDB record of `folder` (all channels, physical units); one line when it fails."""
    import wfdb

    from heartjax.data.physionet import check_data_files, error_reason

    path = folder / name
    if not path.with_name(name + ".hea").is_file():
        raise UserError(f"noise record {name}: {name}.hea not found in {folder}; point at "
                        "the nstdb folder (e.g. ../shared/data/physionet/nstdb, or "
                        "`python -m heartjax.data download noise --out DIR`)")
    try:
        header = wfdb.rdheader(str(path))
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"noise record {name}: unreadable header {name}.hea "
                        f"({error_reason(e)}); download the record again") from None
    check_data_files(path, name, header, hint="")
    try:
        record = wfdb.rdrecord(str(path))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"noise record {name}: cannot read the signal ({error_reason(e)}); "
                        "download the record again") from None
    signal = np.asarray(record.p_signal, np.float64)
    if not np.isfinite(signal).all():
        raise UserError(f"noise record {name}: holds invalid samples; download it again")
    return record, signal


def read_noise(folder: str | Path, kind: str) -> NoiseRecord:
    """Noise record `kind` (bw, ma or em) of the nstdb folder `folder`, in mV; em from the
    estimate em_est118 (each window's constant removed) where the folder has no em."""
    if kind not in KINDS:
        raise UserError(f"unknown noise kind {kind!r}; use one of {', '.join(KINDS)}")
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: nstdb folder not found; download the noise records with "
                        "`python -m heartjax.data download noise --out DIR` and pass DIR")
    name = kind if kind != "em" or (folder / "em.hea").is_file() else EM_ESTIMATE
    record, signal = _read(folder, name)
    if name != EM_ESTIMATE:
        return NoiseRecord(kind, name, signal, float(record.fs))
    # the estimate holds the noise-on samples of a MIT-BIH record (650,000 samples) end to end
    windows = nst_windows(650_000, record.fs)
    if sum(b - a for a, b in windows) != len(signal):
        raise UserError(f"noise record {name}: {len(signal)} samples, not the noise-on "
                        "samples of a 30-minute record; use nstdb's em record instead")
    parts, at = [], 0
    for a, b in windows:
        part = signal[at:at + b - a]
        parts.append(part - part.mean(axis=0))  # the window's constant
        at += b - a
    return NoiseRecord(kind, name, np.concatenate(parts), float(record.fs), tuple(windows))


def noise_reference(folder: str | Path, noise: NoiseRecord) -> np.ndarray:
    """Each channel's RMS amplitude R that nst's SNR refers to (mV): `rms_amplitude` of a
    whole noise record. For the em estimate, whose record's first 5 minutes are not here,
    the level nst gave the noise in its source record: the estimate is the noise nst added at
    that record's SNR, so R = noise_gain(SNR) x the source's QRS amplitude."""
    if noise.windows is None:
        return rms_amplitude(noise.signal, noise.fs)
    import wfdb

    folder = Path(folder)
    record, signal = _read(folder, EM_SOURCE)
    found = re.search(r"SNR\s*=\s*(-?[\d.]+)\s*dB", " ".join(record.comments or ()))
    if not found or not (folder / f"{EM_SOURCE}.atr").is_file():
        raise UserError(f"{folder}: {EM_ESTIMATE} is calibrated by {EM_SOURCE} (its header's "
                        f"SNR and its .atr), which is missing or has no 'SNR = X dB' comment")
    ann = wfdb.rdann(str(folder / EM_SOURCE), "atr")
    clean = round(LEARNING_S * record.fs)  # its noise-free minutes
    keep = np.asarray(ann.sample) < clean
    amplitude = qrs_amplitude(signal[:clean], np.asarray(ann.sample)[keep],
                              np.asarray(ann.symbol)[keep], record.fs)
    return noise_gain(float(found.group(1))) * amplitude


# ----------------------------------------------------------------------------- nst


def placed_noise(noise: NoiseRecord, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The noise at the samples of a record of `length` samples (as nst reads it, from time 0,
    from the start again when it runs out) and where it is discontinuous (a bool per
    sample): where it starts again, and at each window of a windowed record."""
    breaks = np.zeros(length, bool)
    if noise.windows is not None:
        out = np.zeros((length, noise.signal.shape[1]))
        at = 0
        for a, b in noise.windows:
            if a >= length:
                break
            b = min(b, length)
            out[a:b] = noise.signal[at:at + b - a]
            breaks[a] = True
            at += b - a
        return out, breaks
    reps = -(-length // len(noise.signal))
    breaks[::len(noise.signal)] = True
    return np.tile(noise.signal, (reps, 1))[:length], breaks


def nst_add(clean: np.ndarray, noise: np.ndarray, gains: np.ndarray,
            windows: Sequence[tuple[int, int]], breaks: np.ndarray | None = None) -> np.ndarray:
    """`clean` + `gains` x `noise` during `windows`, as nst adds it: signal i gets noise
    channel i mod channels, and where a gain changes (or the noise is discontinuous,
    `breaks`) an offset keeps the output continuous, so a clean period after a noisy one
    holds the noise's last value. Added = the running sum of gain x the noise's steps."""
    clean = np.asarray(clean, np.float64).reshape(len(clean), -1)
    noise = np.asarray(noise, np.float64).reshape(len(noise), -1)
    pick = np.arange(clean.shape[1]) % noise.shape[1]
    steps = np.diff(noise[:, pick], axis=0, prepend=noise[:1, pick])
    if breaks is not None:
        steps[breaks] = 0.0  # the noise before a break is not the noise after it
    on = np.zeros(len(clean), bool)
    for a, b in windows:
        on[a:b] = True
    return clean + np.cumsum(np.where(on[:, None], steps * gains, 0.0), axis=0)


class StressRecord(NamedTuple):
    """A clean record with noise added by `stress_record`: the signal (mV), the gain of each
    channel's noise, the clean signal's QRS amplitudes and the noise's RMS amplitudes."""

    signal: np.ndarray
    gains: np.ndarray
    qrs: np.ndarray
    reference: np.ndarray


def stress_record(clean: np.ndarray, fs: float, samples: np.ndarray, symbols: Sequence[str],
                  noise: NoiseRecord, reference: np.ndarray, snr_db: float) -> StressRecord:
    """`clean` (samples, channels) with `noise` added at `snr_db` during nst's noisy periods:
    each channel's gain = noise_gain(SNR) x its QRS amplitude / the noise's RMS amplitude
    `reference` (`noise_reference`)."""
    if not 0.9 * fs <= noise.fs <= 1.1 * fs:  # nst resamples noise of another rate
        from heartjax.data.physionet import resample_to

        noise = NoiseRecord(noise.kind, noise.name,
                            np.stack([resample_to(c, noise.fs, round(fs))
                                      for c in noise.signal.T], axis=1), fs,
                            None if noise.windows is None else tuple(
                                (round(a * fs / noise.fs), round(b * fs / noise.fs))
                                for a, b in noise.windows))
    clean = np.asarray(clean, np.float64).reshape(len(clean), -1)
    qrs = qrs_amplitude(clean, samples, symbols, fs)
    reference = np.asarray(reference, np.float64)
    gains = noise_gain(snr_db) * qrs / reference[np.arange(clean.shape[1]) % len(reference)]
    placed, breaks = placed_noise(noise, len(clean))
    signal = nst_add(clean, placed, gains, nst_windows(len(clean), fs), breaks)
    return StressRecord(signal, gains, qrs, reference)


# ----------------------------------------------------------------------------- the bank


class NoiseBank(NamedTuple):
    """The noise bank on the device for `heartjax.steps.augment`: `signal` (kinds, channels,
    samples) at 125 Hz, each kind zero padded to the longest, and each kind's `length`."""

    signal: Any
    length: Any


def bank_arrays(record: NoiseRecord, fs: int = BANK_FS) -> np.ndarray:
    """A noise record at `fs` Hz as float32 (channels, samples); a windowed record's windows
    are resampled one by one (no filter runs across the jump between two)."""
    from heartjax.data.physionet import resample_to

    n = [len(record.signal)] if record.windows is None else [b - a for a, b in record.windows]
    parts = np.split(record.signal, np.cumsum(n)[:-1])
    return np.concatenate([np.stack([resample_to(c, record.fs, fs) for c in part.T])
                           for part in parts], axis=1).astype(np.float32)


def build_bank(folder: str | Path, out_dir: str | Path, kinds: Sequence[str] = KINDS,
               log: Log = log_stderr) -> Path:
    """OUT_DIR/noise.npz: one float32 (channels, samples) array per kind at 125 Hz, in mV,
    read from the nstdb folder `folder` (every record checked before anything is written)."""
    out = Path(out_dir) / BANK_FILE
    records = [read_noise(folder, kind) for kind in kinds]  # a bad one fails before any work
    arrays = {}
    for i, (kind, record) in enumerate(zip(kinds, records), 1):
        t0 = time.perf_counter()
        arrays[kind] = bank_arrays(record)
        minutes = len(record.signal) / record.fs / 60
        log(f"[{i}/{len(kinds)}] {kind}: {record.name}, {record.signal.shape[1]} channels, "
            f"{minutes:.1f} min at {record.fs:g} Hz -> {arrays[kind].shape[1]:,} samples at "
            f"{BANK_FS} Hz ({time.perf_counter() - t0:.1f} s)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, fs=np.asarray(BANK_FS), **arrays)
    except OSError as e:
        raise UserError(f"{out}: cannot write the noise bank ({e.strerror or e})") from None
    return out


def read_bank(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a noise bank file, by kind; one line when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data.noise_file={str(path)!r}: no noise bank there; {BUILD_HINT} "
                        "(`make data-noise` builds data/noise/noise.npz) or set "
                        "--config.train.augment.real_noise=0")
    try:
        with np.load(path) as f:
            arrays = {k: np.asarray(f[k], np.float32) for k in f.files if k in KINDS}
            fs = int(f["fs"]) if "fs" in f.files else None
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"data.noise_file={str(path)!r}: not a noise bank ({type(e).__name__}); "
                        f"{BUILD_HINT}") from None
    if fs != BANK_FS or not arrays or any(a.ndim != 2 or a.shape[1] < 187 for a in arrays.values()):
        raise UserError(f"data.noise_file={str(path)!r}: not a {BANK_FS} Hz noise bank of "
                        f"{', '.join(KINDS)}; {BUILD_HINT}")
    if len({a.shape[0] for a in arrays.values()}) != 1:
        raise UserError(f"data.noise_file={str(path)!r}: its kinds differ in channels; {BUILD_HINT}")
    return arrays


def load_bank(path: str | Path) -> NoiseBank:
    """A noise bank file as a `NoiseBank` of device arrays."""
    import jax.numpy as jnp

    arrays = read_bank(path)
    longest = max(a.shape[1] for a in arrays.values())
    signal = np.stack([np.pad(a, ((0, 0), (0, longest - a.shape[1]))) for a in arrays.values()])
    length = np.asarray([a.shape[1] for a in arrays.values()], np.int32)
    return NoiseBank(jnp.asarray(signal), jnp.asarray(length))


def bank_of(config: Any) -> NoiseBank | None:
    """The noise bank a config trains with (`data.noise_file`), or None when
    `train.augment.real_noise` is 0."""
    if not config.train.augment.real_noise:
        return None
    if not config.data.noise_file:
        raise UserError(f"train.augment.real_noise={config.train.augment.real_noise} needs a "
                        f"noise bank: {BUILD_HINT} and pass --config.data.noise_file=DIR/"
                        f"{BANK_FILE} (`make data-noise` builds data/noise/{BANK_FILE})")
    return load_bank(config.data.noise_file)


# ----------------------------------------------------------------------------- download


def download(out_dir: str | Path, fetch: Callable[[str, str, list[str]], None] | None = None) -> Path:
    """Download nstdb's three noise records (bw, em, ma) from PhysioNet into `out_dir`."""
    from heartjax.data.physionet import error_reason

    out = Path(out_dir)
    if fetch is None:
        import wfdb

        def fetch(database: str, folder: str, records: list[str]) -> None:
            wfdb.dl_database(database, folder, records=records)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fetch("nstdb", str(out), list(KINDS))
    except OSError as e:  # requests' connection/HTTP errors are OSErrors too
        raise UserError(f"downloading nstdb from PhysioNet failed ({error_reason(e)}); check "
                        f"the network, or copy bw, em and ma into {out} by hand") from None
    missing = [k for k in KINDS if not (out / f"{k}.hea").is_file()]
    if missing:
        raise UserError(f"downloading nstdb put no {', '.join(missing)} into {out}; check the "
                        "network and try again")
    return out
