"""Which QRS detector, which R-peak rule, and whether to check each detection against other
detectors, should `heartjax.annotate` use? wfdb's gqrs and xqrs, each followed by annotate's move
to the R peak (the largest deviation from the local mean, or the largest sample), then with the
deviation rule also with annotate's check (`drop_unconfirmed`: a detection neither of
neurokit2's detectors confirms and under half its neighbours' size goes); the rest of
annotate's detectors (neurokit2's) alone, deviation rule. On the lead annotate picks: QRS Se/+P
as EC57 counts them (150 ms, from 5 minutes on) and, per class, the share of matched beats whose
peak lies within one 125 Hz sample of the reference annotation (where the training beats start).
Measured on the DS1 records (the training records of the new-patient protocol), so that
choosing cannot look at DS2.

    python experiments/qrs_detectors.py [--records-dir DIR] [--out reports/qrs_detectors.json] [RECORD ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from heartjax.annotate import DETECTORS, PEAK_RULES, detect_qrs
from heartjax.data.splits import DS1
from heartjax.errors import cli_entry
from heartjax.recordings import open_recording, read_signal
from heartjax.score import CLASSES, WINDOW_S, Beats, count_matrix, match, read_beats, statistics


def name_of(method: tuple[str, str, bool]) -> str:
    """"gqrs/deviation", "gqrs/deviation/confirmed", ..."""
    detector, rule, confirm = method
    return f"{detector}/{rule}" + ("/confirmed" if confirm else "")


@cli_entry
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="*", default=list(DS1))
    p.add_argument("--records-dir", default="../shared/data/physionet/mitdb", metavar="DIR")
    p.add_argument("--out", default="reports/qrs_detectors.json")
    args = p.parse_args()
    raw = Path(args.records_dir)
    wfdb_detectors = ("gqrs", "xqrs")  # each peak rule, and with the check
    methods = [(d, rule, False) for d in wfdb_detectors for rule in PEAK_RULES]
    methods += [(d, "deviation", True) for d in wfdb_detectors]
    methods += [(d, "deviation", False) for d in DETECTORS if d not in wfdb_detectors]
    rows = []
    pooled = {m: np.zeros((6, 6), np.int64) for m in methods}
    aligned = {m: np.zeros((2, len(CLASSES)), np.int64) for m in methods}  # within, matched
    seconds = {m: 0.0 for m in methods}
    for name in args.records:
        info = open_recording(raw / name)
        signal = read_signal(info)
        reference = read_beats(raw / name, "atr")
        row = {"record": name, "lead": info.lead}
        for m in methods:
            t0 = time.perf_counter()
            peaks = detect_qrs(signal, info.fs, *m)
            seconds[m] += time.perf_counter() - t0
            counts = count_matrix(reference, Beats(peaks, np.zeros(len(peaks), np.int64), info.fs))
            pooled[m] += counts
            ri, ti = match(reference.sample, peaks, round(WINDOW_S * info.fs))
            close = np.abs(peaks[ti] - reference.sample[ri]) <= info.fs / 125
            np.add.at(aligned[m][0], reference.label[ri][close], 1)
            np.add.at(aligned[m][1], reference.label[ri], 1)
            row[name_of(m)] = statistics(counts)["qrs"]
        rows.append(row)
        print(name, flush=True)
    gross = {}
    for m in methods:
        within, matched = aligned[m]
        gross[name_of(m)] = {
            **statistics(pooled[m])["qrs"], "seconds_per_record": seconds[m] / len(rows),
            "aligned": {c: float(within[i] / matched[i]) for i, c in enumerate(CLASSES) if matched[i]}}
    for m, g in gross.items():
        share = ", ".join(f"{c} {v:.3f}" for c, v in g["aligned"].items())
        print(f"{m:>22}: QRS Se {g['se']:.4f} +P {g['p']:.4f}, {g['seconds_per_record']:.1f} s a "
              f"record; peak within one 125 Hz sample: {share}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"records": rows, "gross": gross}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
