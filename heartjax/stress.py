"""The records of the EC57 noise stress test (`python -m heartjax.score stress`) and its table
and figure; `heartjax.score` scores them.

Records 118 and 119 with electrode-motion noise added as the standard's `nst` adds it
(`heartjax.noise.stress_record`: from minute 5 on, 2 minutes on and 2 off, at SNR 24, 18, 12,
6, 0 and -6 dB) are written as WFDB records (`118e24` ... `118e_6`, nstdb's names) with the
reference .atr copied, annotated by `heartjax.annotate` from their signals alone and scored
as `heartjax.score` does (EC57, from minute 5 on); the clean records are the first row.
Writes OUT/stress.json, OUT/stress.md (gross QRS and VEB Se and +P of each SNR) and
OUT/stress.png; the records and their annotations stay in OUT/records (OUT/clean: the clean
records' annotations). docs/noise.md has how the records are built and checked.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from heartjax import noise as nz
from heartjax.errors import UserError

SNRS = (24, 18, 12, 6, 0, -6)  # dB, EC57's levels
RECORDS = ("118", "119")  # EC57's noise stress test records
NOISE_KIND = "em"  # electrode motion: the noise EC57 stresses with


def record_name(record: str, snr: int) -> str:
    """nstdb's name for `record` with noise at `snr` dB: 118e24, 118e00, 118e_6."""
    return f"{record}e{snr:02d}" if snr >= 0 else f"{record}e_{-snr}"


def parse_snrs(text: str) -> list[int]:
    """`--snr 24,18,-6` -> [24, 18, -6] (whole dB, as EC57's levels and nstdb's names)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--snr {text!r}: give whole dB values, comma-separated, e.g. 12,0,-6") from None
    if not values:
        raise UserError(f"--snr {text!r}: give at least one SNR in dB, e.g. 12,0")
    return list(dict.fromkeys(values))  # each level once


def write_stress_record(clean: Path, noise: nz.NoiseRecord, reference: np.ndarray, snr: int,
                        out_dir: Path) -> tuple[Path, nz.StressRecord]:
    """OUT_DIR/<record>e<snr>: the record `clean` (path without suffix) with `noise` added at
    `snr` dB, as a WFDB record (format 16, the clean record's gains) with its .atr copied."""
    import wfdb

    record = wfdb.rdrecord(str(clean))
    ann = wfdb.rdann(str(clean), "atr")
    stress = nz.stress_record(record.p_signal, record.fs, ann.sample, ann.symbol, noise,
                              reference, snr)
    name = record_name(clean.name, snr)
    out_dir.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(name, fs=record.fs, units=record.units, sig_name=record.sig_name,
                p_signal=stress.signal, fmt=["16"] * record.n_sig,
                adc_gain=list(record.adc_gain), baseline=[0] * record.n_sig,
                comments=[f"heartjax.stress: record {clean.name} + {noise.name} (SNR = {snr} dB), "
                          "nst's standard protocol"], write_dir=str(out_dir))
    shutil.copyfile(clean.with_name(clean.name + ".atr"), out_dir / f"{name}.atr")
    return out_dir / name, stress


def _percent(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _records(names: Sequence[str]) -> str:
    return f"record{'s' if len(names) > 1 else ''} {', '.join(names)}"


def stats_line(stats: dict[str, Any]) -> str:
    """QRS and VEB Se and +P of one `heartjax.score.statistics` result, in one line."""
    return (f"QRS Se {_percent(stats['qrs']['se'])} +P {_percent(stats['qrs']['p'])}, "
            f"VEB Se {_percent(stats['veb']['se'])} +P {_percent(stats['veb']['p'])}")


class Annotated(NamedTuple):
    """One annotated record of the test: `reference` (path without suffix, beside its .atr),
    the folder of its .hjx, its SNR (None: clean) and the noise gains it was built with."""

    record: str
    snr: int | None
    reference: Path
    test_dir: Path
    info: dict[str, Any]
    label: str
    timing: str


def annotated_records(mitdb: str | Path, nstdb: str | Path, checkpoint: Sequence[str],
                      out: str | Path, records: Sequence[str] = RECORDS,
                      snrs: Sequence[int] = SNRS) -> Iterator[Annotated]:
    """Build and annotate the test's records one by one, the clean ones first (every input
    is checked before the first is built): OUT/clean holds the clean records' annotations,
    OUT/records the stress records, their .atr and annotations."""
    from heartjax.annotate import _check_model, annotate_record, write_annotation
    from heartjax.pretrained import load
    from heartjax.recordings import open_recording

    mitdb, out = Path(mitdb), Path(out)
    for r in records:
        open_recording(mitdb / r)
        if not (mitdb / f"{r}.atr").is_file():
            raise UserError(f"record {r}: {r}.atr not found in {mitdb}; the stress test needs "
                            "the reference beats (nst measures the QRS amplitude on them)")
    noise = nz.read_noise(nstdb, NOISE_KIND)
    reference = nz.noise_reference(nstdb, noise)
    model = load(list(checkpoint))
    _check_model(model)
    for snr in [None, *snrs]:
        for r in records:
            t0, info = time.perf_counter(), {}
            if snr is None:
                path, folder, label = mitdb / r, out / "clean", f"{r} clean"
                built = ""
            else:
                path, stress = write_stress_record(mitdb / r, noise, reference, snr,
                                                   out / "records")
                folder, label = out / "records", f"{path.name} ({r} at {snr} dB)"
                built = f"built in {time.perf_counter() - t0:.1f} s, "
                info = {"gains": stress.gains.tolist(), "qrs_mv": stress.qrs.tolist(),
                        "noise": noise.name, "noise_reference_mv": reference.tolist()}
            t0 = time.perf_counter()
            ann = annotate_record(model, path)
            write_annotation(ann, folder)
            timing = f"{built}{len(ann.sample):,} beats annotated in {time.perf_counter() - t0:.1f} s"
            yield Annotated(r, snr, path, folder, info, label, timing)


def format_markdown(result: dict[str, Any]) -> str:
    """The gross table of stress.json: one row per SNR, the clean records first (percent)."""
    noise = (result.get("noise") or {}).get("record", "electrode-motion")
    lines = [f"EC57 noise stress test: {_records(result['records'])} with "
             f"{noise} noise (nst's protocol), gross statistics from "
             f"{result['start_s']:g} s, classes {result['classes']} (percent)", "",
             "| SNR (dB) | QRS Se | QRS +P | VEB Se | VEB +P |", "|---|---:|---:|---:|---:|"]
    for row in result["rows"]:
        g = row["gross"]
        snr = "clean" if row["snr"] is None else str(row["snr"])
        lines.append(f"| {snr} | {_percent(g['qrs']['se'])} | {_percent(g['qrs']['p'])} | "
                     f"{_percent(g['veb']['se'])} | {_percent(g['veb']['p'])} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    """QRS and VEB Se and +P against SNR; the clean records' values as dotted lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    noisy = [r for r in result["rows"] if r["snr"] is not None]
    clean = next(r for r in result["rows"] if r["snr"] is None)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    series = [("qrs", "se", "QRS Se"), ("qrs", "p", "QRS +P"), ("veb", "se", "VEB Se"),
              ("veb", "p", "VEB +P")]
    for (group, key, label), colour in zip(series, ("C0", "C1", "C2", "C3")):
        ys = [np.nan if r["gross"][group][key] is None else 100 * r["gross"][group][key]
              for r in noisy]
        ax.plot([r["snr"] for r in noisy], ys, "o-", color=colour, label=label)
        if clean["gross"][group][key] is not None:
            ax.axhline(100 * clean["gross"][group][key], color=colour, ls=":", lw=1)
    ax.invert_xaxis()  # more noise to the right
    ax.set_xlabel("SNR (dB)")
    ax.set_ylabel("percent")
    ax.set_title(f"EC57 noise stress test, {_records(result['records'])} "
                 "(dotted: clean)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
