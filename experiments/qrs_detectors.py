"""Which of wfdb's QRS detectors should `heartjax.annotate` use? gqrs and xqrs, each followed by
annotate's move to the R peak, on the lead annotate picks, scored against the reference beats
as EC57 counts them (150 ms, from 5 minutes on). Measured on the DS1 records (the training
records of the new-patient protocol), so that choosing cannot look at DS2.

    python experiments/qrs_detectors.py [--records DIR] [--out reports/qrs_detectors.json] [RECORD ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from heartjax.annotate import DETECTORS, detect_qrs, open_record
from heartjax.data.physionet import read_lead
from heartjax.data.splits import DS1
from heartjax.errors import cli_entry
from heartjax.score import Beats, count_matrix, read_beats, statistics


@cli_entry
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="*", default=list(DS1))
    p.add_argument("--records-dir", default="../shared/data/physionet/mitdb", metavar="DIR")
    p.add_argument("--out", default="reports/qrs_detectors.json")
    args = p.parse_args()
    raw = Path(args.records_dir)
    rows, pooled = [], {d: np.zeros((6, 6), np.int64) for d in DETECTORS}
    seconds = {d: 0.0 for d in DETECTORS}
    for name in args.records:
        info = open_record(raw / name)
        signal = read_lead(info)
        reference = read_beats(raw / name, "atr")
        row = {"record": name, "lead": info.lead}
        for d in DETECTORS:
            t0 = time.perf_counter()
            peaks = detect_qrs(signal, info.fs, d)
            seconds[d] += time.perf_counter() - t0
            m = count_matrix(reference, Beats(peaks, np.zeros(len(peaks), np.int64), info.fs))
            pooled[d] += m
            row[d] = statistics(m)["qrs"]
        rows.append(row)
        print(name, "  ".join(f"{d} Se {row[d]['se']:.4f} +P {row[d]['p']:.4f}" for d in DETECTORS),
              flush=True)
    gross = {d: {**statistics(pooled[d])["qrs"], "seconds_per_record": seconds[d] / len(rows)}
             for d in DETECTORS}
    for d, g in gross.items():
        print(f"gross {d}: Se {g['se']:.4f} +P {g['p']:.4f}, {g['seconds_per_record']:.1f} s a record")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"records": rows, "gross": gross}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
