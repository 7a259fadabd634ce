"""How a MIT-BIH model fares on recordings unlike its training data, measured on what is here:

- `ds2`: the DS2 test table (MLII), the reference row;
- `ds2_lead2`: the same DS2 beats cut from the record's second channel (V1, V2, V4 or V5:
  other leads' beat shapes) instead of MLII;
- `ds2_250hz`, `ds2_500hz`: the DS2 records resampled to 250 and 500 Hz
  (`scipy.signal.resample_poly`), written as WFDB records and rebuilt (another recorder's rate);
- `ptb_normal`: the 537 normal beats of `../shared/data/course/ptb_sample.parq` (other
  equipment, lead ii), where a MIT-BIH model should find N. Those beats come without their
  record, so the R-R features are the regular rhythm the beat's own length implies (the
  published cut is 1.2 R-R periods long) and the template is the median of the 537 beats.

The proxy tables are built into `--work` (git-ignored `data/proxies`). Every model is
evaluated on every table; the N, S, V recall and precision go to `--out` as JSON and markdown.

    python experiments/proxies.py --model interpatient=runs/interpatient-best \\
        --model ensemble=runs/interpatient-best,runs/interpatient-seed1,runs/interpatient-seed2
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import wfdb
from scipy.signal import resample_poly

from heartjax.checkpoint import load_models
from heartjax.data import BeatTable, load_table, write_table
from heartjax.data.physionet import BEAT_PERIODS, build_mitbih, log_stderr
from heartjax.data.splits import DS2
from heartjax.data.tables import FS, SIGNAL_LEN
from heartjax.errors import Parser, UserError, cli_entry
from heartjax.evaluate import evaluate_table

SECOND_LEADS = ("V1", "V2", "V4", "V5")  # every DS2 record's other channel is one of these
PROXIES = ("ds2", "ds2_lead2", "ds2_250hz", "ds2_500hz", "ptb_normal")
CLASSES = ("N", "S", "V")


def resample_record(src: Path, out_dir: Path, fs: int) -> None:
    """Write record `src` (all channels, and its .atr) resampled to `fs` Hz into `out_dir`."""
    record = wfdb.rdrecord(str(src))
    ratio = Fraction(fs) / Fraction(record.fs).limit_denominator(1000)
    signal = resample_poly(record.p_signal, ratio.numerator, ratio.denominator, axis=0)
    wfdb.wrsamp(src.name, fs=fs, units=record.units, sig_name=record.sig_name, p_signal=signal,
                fmt=["16"] * record.n_sig, write_dir=str(out_dir))
    ann = wfdb.rdann(str(src), "atr")
    sample = np.minimum(np.round(ann.sample * float(ratio)).astype(np.int64), len(signal) - 1)
    wfdb.wrann(src.name, "atr", sample, symbol=ann.symbol, subtype=ann.subtype, chan=ann.chan,
               num=ann.num, aux_note=ann.aux_note, fs=fs, write_dir=str(out_dir))


def build_resampled(raw: Path, work: Path, fs: int, records: Sequence[str]) -> Path:
    """`records` resampled to `fs` Hz and rebuilt as one table; returns its path."""
    folder = work / f"mitdb_{fs}hz"
    folder.mkdir(parents=True, exist_ok=True)
    for name in records:
        resample_record(raw / name, folder, fs)
    (folder / "RECORDS").write_text("\n".join(records) + "\n")
    return build_mitbih(folder, work / f"ds2_{fs}hz", split="none", records=records)["all"]


def ptb_normal_table(ptb_sample: Path, out: Path) -> Path:
    """The normal beats of the course's PTB sample as a MIT-BIH N table with R-R columns."""
    ptb = load_table(ptb_sample, "ptb")
    x = ptb.x[ptb.y == 0]
    # the beat's length: up to its last non-zero sample (the rest is the published zero padding)
    length = SIGNAL_LEN - np.argmax(x[:, ::-1] > 0, axis=1)
    period = length / BEAT_PERIODS / FS
    meta = pd.DataFrame({"record": "ptb", "rr_prev": period, "rr_next": period,
                         "rr_local": period, "rr_record": period})
    write_table(BeatTable(x, np.zeros(len(x), np.int32), "mitbih", "", meta), out)
    return out


def proxy_tables(raw: Path, ds2: Path, ptb_sample: Path, work: Path,
                 records: Sequence[str] = DS2) -> dict[str, Path]:
    """Build each proxy's table from `records` into `work`; returns the tables by proxy."""
    lead2 = build_mitbih(raw, work / "ds2_lead2", split="none", leads=SECOND_LEADS,
                         records=records)["all"]
    return {"ds2": ds2, "ds2_lead2": lead2,
            **{f"ds2_{fs}hz": build_resampled(raw, work, fs, records) for fs in (250, 500)},
            "ptb_normal": ptb_normal_table(ptb_sample, work / "ptb_normal.parq")}


def scores(predictor, table: BeatTable) -> dict:
    """N, S, V recall, precision and support, and their macro recall."""
    m, _ = evaluate_table(predictor, table)
    return {"per_class": {c: m["per_class"][c] for c in CLASSES}, "nsv_recall": m["nsv_recall"],
            "confusion_matrix": m["confusion_matrix"]}


def markdown(results: dict) -> str:
    """One row per proxy and model: recall (precision) of N, S, V; support in the header."""
    lines = ["| proxy | model | N recall (precision) | S recall (precision) | "
             "V recall (precision) | N/S/V macro recall |", "|---|---|---|---|---|---|"]
    for proxy, models in results.items():
        for name, r in models.items():
            cells = []
            for c in CLASSES:
                s = r["per_class"][c]
                cells.append(f"{s['recall']:.3f} ({s['precision']:.3f})" if s["support"] else "-")
            support = "/".join(str(r["per_class"][c]["support"]) for c in CLASSES)
            lines.append(f"| {proxy} ({support}) | {name} | " + " | ".join(cells)
                         + f" | {r['nsv_recall']:.3f} |")
    return "\n".join(lines) + "\n"


def parse_model(spec: str) -> tuple[str, list[str]]:
    """`NAME=RUN[,RUN...]` -> (name, runs)."""
    name, sep, runs = spec.partition("=")
    if not sep or not name or not runs:
        raise UserError(f"--model {spec!r}: write NAME=RUN or NAME=RUN1,RUN2,... (an ensemble)")
    return name, runs.split(",")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = Parser(description=__doc__.split("\n\n")[0],
                    epilog="Proxy tables: " + ", ".join(PROXIES))
    parser.add_argument("--model", action="append", required=True, metavar="NAME=RUN[,RUN...]",
                        help="a model to evaluate (several runs: their ensemble); repeatable")
    parser.add_argument("--raw", default="../shared/data/physionet/mitdb", type=Path,
                        help="the MIT-BIH records (default ../shared/data/physionet/mitdb)")
    parser.add_argument("--ds2", default="data/interpatient/heart_big_test.parq", type=Path,
                        help="the DS2 table (default data/interpatient/heart_big_test.parq)")
    parser.add_argument("--ptb-sample", default="../shared/data/course/ptb_sample.parq",
                        type=Path, help="the course's PTB beats (their normal beats are used)")
    parser.add_argument("--records", default=",".join(DS2), metavar="A,B,...",
                        help="the records the DS2 proxies are built from (default: DS2's 22)")
    parser.add_argument("--work", default="data/proxies", type=Path,
                        help="where the proxy tables are built (default data/proxies)")
    parser.add_argument("--out", default="reports/proxies", type=Path,
                        help="folder for proxies.json and proxies.md (default reports/proxies)")
    args = parser.parse_args(argv)
    models = dict(parse_model(spec) for spec in args.model)
    predictors = {name: load_models(runs) for name, runs in models.items()}  # fail before building
    tables = {k: load_table(p, "mitbih") for k, p in
              proxy_tables(args.raw, args.ds2, args.ptb_sample, args.work,
                                    args.records.split(",")).items()}
    results: dict = {}
    for proxy, table in tables.items():
        results[proxy] = {}
        for name, predictor in predictors.items():
            results[proxy][name] = scores(predictor, table)
            log_stderr(f"{proxy} {name}: N/S/V macro recall {results[proxy][name]['nsv_recall']:.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "proxies.json").write_text(json.dumps(
        {"models": models, "results": results}, indent=2) + "\n")
    (args.out / "proxies.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
