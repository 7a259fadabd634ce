"""`python -m heartjax.score --records RAW_DIR --test-dir OUT_DIR [RECORD ...]`: beat-by-beat
comparison of reference and test annotations as ANSI/AAMI EC57 defines it (PhysioNet's `bxb`);
`python -m heartjax.score stress ...` runs EC57's noise stress test (`heartjax.stress`).

Only beat annotations count, in the classes of a named table (`--classes`): `bxb` (default) is
PhysioNet's `bxb`, which counts the escape beats `e`, `j`, `n` as S and so reproduces its counts
exactly; `aami` is the literature's table (de Chazal et al. 2004, `physionet.AAMI_MAP`, what
heartjax trains on), with escape beats in N. Beats in the first
`--from` seconds (EC57's 5-minute learning period) and inside the reference's ventricular
flutter episodes (`[` to `]`) are left out of both files. A test beat
matches the nearest reference beat within 150 ms, one to one (closest pairs first). With
`C[r, t]` the matched beats of reference class r labelled t, `Ro` the reference beats of class
r no test beat matched and `Ot` the test beats of label t no reference beat matched:

- QRS: Se = matched / (matched + unmatched reference), +P = matched / (matched + unmatched test);
- VEB: Se = Vv / (all reference V, matched or not), +P = Vv / (Vv + Nv + Sv + Ov), where fusion
  and unclassifiable beats labelled V (Fv, Qv) are no false positives (EC57, as `bxb` counts);
  FPR = (Nv + Sv) / the matched reference N and S beats;
- SVEB: Se = Ss / (all reference S), +P = Ss / (every test S: matched or not).

Gross statistics pool the counts of all records; average statistics are the mean over the
records where a statistic is defined (a record without V beats has no VEB Se).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from heartjax.data.physionet import AAMI_MAP, error_reason, list_records
from heartjax.data.tables import CLASS_NAMES
from heartjax.errors import Parser, UserError, cli_entry

CLASSES = CLASS_NAMES["mitbih"]  # N S V F Q
N, S, V, F, Q = range(len(CLASSES))
UNMATCHED = len(CLASSES)  # the last row / column of a count matrix
WINDOW_S = 0.150
LEARNING_S = 300.0
# Symbol -> class id tables. bxb's (its `amap`) also knows B (bundle branch block), r (R-on-T)
# and n (supraventricular escape), and puts every escape beat but E in S.
CLASS_TABLES: Mapping[str, Mapping[str, int]] = MappingProxyType({
    "bxb": MappingProxyType({**{c: N for c in "NLRB"}, **{c: S for c in "AaJSjen"},
                             **{c: V for c in "VrE"}, "F": F, **{c: Q for c in "Q/f"}}),
    "aami": AAMI_MAP,
})
DEFAULT_CLASSES = "bxb"


@dataclass(frozen=True)
class Beats:
    """The beat annotations of one file: samples and AAMI class ids."""

    sample: np.ndarray
    label: np.ndarray
    fs: float
    # (k, 2) sample ranges of ventricular flutter or fibrillation, `[` to `]`: EC57 leaves the
    # beats inside them out of the comparison (a reference file's, on both sides)
    flutter: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))


def class_table(classes: str) -> Mapping[str, int]:
    """The symbol -> class id table named `classes` (a key of CLASS_TABLES)."""
    if classes not in CLASS_TABLES:
        raise UserError(f"--classes {classes}: unknown class table; use one of "
                        f"{', '.join(CLASS_TABLES)}")
    return CLASS_TABLES[classes]


def read_beats(record: Path, extension: str, classes: str = DEFAULT_CLASSES) -> Beats:
    """The beats of `record.extension` in the class table `classes`, sorted by sample."""
    import wfdb

    table = class_table(classes)
    path = record.with_name(f"{record.name}.{extension}")
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found; annotate the record first "
                        "(`python -m heartjax.annotate`) or check --ref / --test")
    try:
        ann = wfdb.rdann(str(record), extension)
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        raise UserError(f"{path}: unreadable annotation file ({error_reason(e)})") from None
    symbols = np.asarray(ann.symbol, dtype=object)
    keep = np.array([s in table for s in symbols], dtype=bool)
    sample = np.asarray(ann.sample, dtype=np.int64)[keep]
    label = np.array([table[s] for s in symbols[keep]], dtype=np.int64)
    order = np.argsort(sample, kind="stable")
    fs = float(ann.fs) if ann.fs else _header_fs(record, path)
    return Beats(sample[order], label[order], fs, _flutter(np.asarray(ann.sample), symbols))


def _flutter(sample: np.ndarray, symbols: np.ndarray) -> np.ndarray:
    """The `[` ... `]` episodes of a file; one still open at the end runs to its last sample."""
    spans, start = [], None
    for s, sym in zip(sample, symbols):
        if sym == "[" and start is None:
            start = int(s)
        elif sym == "]" and start is not None:
            spans.append((start, int(s)))
            start = None
    if start is not None:
        spans.append((start, int(sample.max())))
    return np.asarray(spans, np.int64).reshape(-1, 2)


def _outside(sample: np.ndarray, spans: np.ndarray) -> np.ndarray:
    keep = np.ones(len(sample), bool)
    for a, b in spans:
        keep &= (sample < a) | (sample > b)
    return keep


def _header_fs(record: Path, path: Path) -> float:
    import wfdb

    try:
        return float(wfdb.rdheader(str(record)).fs)
    except Exception:  # noqa: BLE001
        raise UserError(f"{path}: the file gives no sampling frequency and {record.name}.hea "
                        "is unreadable; keep the record's header beside it") from None


def match(reference: np.ndarray, test: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (reference index, test index) within `window` samples, closest first."""
    pairs = []
    lo = np.searchsorted(test, reference - window, side="left")
    hi = np.searchsorted(test, reference + window, side="right")
    for i in range(len(reference)):
        for j in range(lo[i], hi[i]):
            pairs.append((abs(int(test[j]) - int(reference[i])), i, j))
    pairs.sort()
    used_ref, used_test = np.zeros(len(reference), bool), np.zeros(len(test), bool)
    ri, ti = [], []
    for _, i, j in pairs:
        if not used_ref[i] and not used_test[j]:
            used_ref[i] = used_test[j] = True
            ri.append(i)
            ti.append(j)
    order = np.argsort(ri)
    return np.asarray(ri, np.int64)[order], np.asarray(ti, np.int64)[order]


def count_matrix(reference: Beats, test: Beats, start_s: float = LEARNING_S,
                 window_s: float = WINDOW_S) -> np.ndarray:
    """(6, 6) int counts: rows reference N S V F Q + unmatched test, columns test labels + missed."""
    if not math.isclose(reference.fs, test.fs, rel_tol=1e-6):
        raise UserError(f"the annotation files differ in sampling frequency ({reference.fs:g} vs "
                        f"{test.fs:g} Hz); annotate the record at its own rate")
    start = round(start_s * reference.fs)
    r = (reference.sample >= start) & _outside(reference.sample, reference.flutter)
    t = (test.sample >= start) & _outside(test.sample, reference.flutter)
    ref_s, ref_l = reference.sample[r], reference.label[r]
    test_s, test_l = test.sample[t], test.label[t]
    ri, ti = match(ref_s, test_s, round(window_s * reference.fs))
    m = np.zeros((UNMATCHED + 1, UNMATCHED + 1), np.int64)
    np.add.at(m, (ref_l[ri], test_l[ti]), 1)
    missed = np.ones(len(ref_s), bool)
    missed[ri] = False
    np.add.at(m, (ref_l[missed], UNMATCHED), 1)
    extra = np.ones(len(test_s), bool)
    extra[ti] = False
    np.add.at(m, (UNMATCHED, test_l[extra]), 1)
    return m


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def statistics(m: np.ndarray) -> dict[str, dict[str, float | None]]:
    """QRS Se/+P, VEB Se/+P/FPR and SVEB Se/+P (0-1; None where undefined) of a count matrix."""
    c = m[:UNMATCHED, :UNMATCHED]
    matched = c.sum()
    false_v = [N, S]  # F and Q beats labelled V are no false positives (EC57)
    return {
        "qrs": {"se": _ratio(matched, matched + m[:UNMATCHED, UNMATCHED].sum()),
                "p": _ratio(matched, matched + m[UNMATCHED, :UNMATCHED].sum())},
        "veb": {"se": _ratio(c[V, V], m[V].sum()),
                "p": _ratio(c[V, V], c[V, V] + c[false_v, V].sum() + m[UNMATCHED, V]),
                "fpr": _ratio(c[false_v, V].sum(), c[false_v].sum())},
        "sveb": {"se": _ratio(c[S, S], m[S].sum()),
                 "p": _ratio(c[S, S], m[:, S].sum())},
    }


def average(stats: Sequence[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, float | None]]:
    """Each statistic's mean over the records where it is defined."""
    out: dict[str, dict[str, float | None]] = {}
    for group, values in stats[0].items():
        out[group] = {}
        for key in values:
            defined = [s[group][key] for s in stats if s[group][key] is not None]
            out[group][key] = float(np.mean(defined)) if defined else None
    return out


def score(raw_dir: str | Path, test_dir: str | Path, records: Sequence[str] = (),
          ref: str = "atr", test: str = "hjx", start_s: float = LEARNING_S,
          classes: str = DEFAULT_CLASSES) -> dict[str, Any]:
    """Per-record, gross and average EC57 statistics and the pooled count matrix, with the
    beats in the class table `classes` (see CLASS_TABLES)."""
    raw_dir, test_dir = Path(raw_dir), Path(test_dir)
    class_table(classes)  # an unknown name fails before any file is read
    if not test_dir.is_dir():
        raise UserError(f"--test-dir {test_dir}: no such folder")
    names = list(records) or list_records(raw_dir)
    pairs = [(read_beats(raw_dir / n, ref, classes), read_beats(test_dir / n, test, classes))
             for n in names]
    matrices = {n: count_matrix(r, t, start_s) for n, (r, t) in zip(names, pairs)}
    per_record = {n: statistics(m) for n, m in matrices.items()}
    pooled = sum(matrices.values())
    return {"records": per_record, "gross": statistics(pooled), "average": average(list(per_record.values())),
            "counts": {n: m.tolist() for n, m in matrices.items()}, "confusion": pooled.tolist(),
            "start_s": start_s, "window_s": WINDOW_S, "ref": ref, "test": test, "classes": classes}


def _pct(v: float | None) -> str:
    return "     -" if v is None else f"{100 * v:6.2f}"


def format_table(result: dict[str, Any]) -> str:
    """Per-record, gross and average statistics (percent) and the pooled confusion of matched beats."""
    head = (f"{'record':>8} {'beats':>6} {'QRS Se':>6} {'QRS+P':>6} {'VEB Se':>6} {'VEB+P':>6} "
            f"{'VEBFPR':>6} {'SVEBSe':>6} {'SVEB+P':>6}")

    def row(name: str, s: dict[str, Any], beats: str) -> str:
        return (f"{name:>8} {beats:>6} {_pct(s['qrs']['se'])} {_pct(s['qrs']['p'])} "
                f"{_pct(s['veb']['se'])} {_pct(s['veb']['p'])} {_pct(s['veb']['fpr'])} "
                f"{_pct(s['sveb']['se'])} {_pct(s['sveb']['p'])}")

    lines = [f"EC57 beat-by-beat: .{result['ref']} against .{result['test']}, {1000 * result['window_s']:.0f} ms "
             f"window, from {result['start_s']:g} s, classes {result['classes']} (percent)", head]
    for name, s in result["records"].items():
        ref_beats = int(np.asarray(result["counts"][name])[:UNMATCHED].sum())
        lines.append(row(name, s, str(ref_beats)))
    pooled = np.asarray(result["confusion"])
    lines += [row("gross", result["gross"], str(int(pooled[:UNMATCHED].sum()))),
              row("average", result["average"], ""), ""]
    labels = [*CLASSES, "missed"]
    frame = pd.DataFrame(pooled, index=[f"ref {c}" for c in CLASSES] + ["no ref"], columns=labels)
    frame.iloc[UNMATCHED, UNMATCHED] = 0
    lines += ["reference (rows) against test labels (columns), all records:", frame.to_string()]
    return "\n".join(lines)


def run_stress(mitdb: str | Path, nstdb: str | Path, checkpoint: Sequence[str], out: str | Path,
               records: Sequence[str] | None = None, snrs: Sequence[int] | None = None,
               classes: str = DEFAULT_CLASSES) -> dict[str, Any]:
    """The EC57 noise stress test (`heartjax.stress`): each record and SNR built, annotated
    and scored from minute 5 on (one progress line each), the gross statistics of each SNR
    over the records; writes OUT/stress.json, stress.md and stress.png and returns the first."""
    from heartjax import stress

    class_table(classes)  # an unknown name fails before any work
    records = list(records or stress.RECORDS)
    snrs = list(stress.SNRS if snrs is None else snrs)
    rows: dict[int | None, dict[str, Any]] = {}
    for done in stress.annotated_records(mitdb, nstdb, checkpoint, out, records, snrs):
        m = count_matrix(read_beats(done.reference, "atr", classes),
                         read_beats(done.test_dir / done.reference.name, "hjx", classes))
        row = rows.setdefault(done.snr, {"snr": done.snr, "records": {}})
        row["records"][done.record] = {**done.info, "stats": statistics(m), "counts": m.tolist()}
        print(f"{done.label}: {done.timing}; {stress.stats_line(statistics(m))}",
              file=sys.stderr, flush=True)
    for row in rows.values():
        pooled = sum(np.asarray(r["counts"]) for r in row["records"].values())
        row["gross"], row["confusion"] = statistics(pooled), pooled.tolist()
    noisy = [r for row in rows.values() for r in row["records"].values() if "noise" in r]
    noise = {"kind": stress.NOISE_KIND, "record": noisy[0]["noise"],
             "reference_mv": noisy[0]["noise_reference_mv"]} if noisy else None
    result = {"records": records, "snrs": snrs, "classes": classes, "start_s": LEARNING_S,
              "checkpoint": [str(c) for c in checkpoint], "noise": noise,
              "rows": list(rows.values())}
    out = Path(out)
    (out / "stress.json").write_text(json.dumps(result, indent=1))
    (out / "stress.md").write_text(stress.format_markdown(result))
    stress.plot(result, out / "stress.png")
    return result


def stress_main(argv: list[str]) -> None:
    """`python -m heartjax.score stress [RECORD ...] --records MITDB --noise NSTDB
    --checkpoint RUN --out DIR [--snr 24,18,...]`."""
    from heartjax import stress
    from heartjax.annotate import DEFAULT_CHECKPOINT

    parser = Parser(prog="python -m heartjax.score stress",
                    description="The EC57 noise stress test: records 118 and 119 with "
                                "electrode-motion noise at SNR 24 to -6 dB (nst's protocol), "
                                "annotated by a model and scored -> OUT/stress.json, .md, .png "
                                "(docs/noise.md).")
    parser.add_argument("records", nargs="*", metavar="RECORD",
                        help=f"MIT-BIH records to stress (default: {' '.join(stress.RECORDS)})")
    parser.add_argument("--records", dest="mitdb", required=True, metavar="MITDB",
                        help="folder of the MIT-BIH records (with their .atr)")
    parser.add_argument("--noise", required=True, metavar="NSTDB",
                        help="the nstdb folder: its em record, or em_est118 with 118e_6")
    parser.add_argument("--checkpoint", nargs="+", default=[DEFAULT_CHECKPOINT], metavar="RUN",
                        help=f"the model (several: their ensemble; default {DEFAULT_CHECKPOINT})")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the records, their annotations and the results")
    parser.add_argument("--snr", default=",".join(map(str, stress.SNRS)), metavar="DB,DB,...",
                        help=f"SNRs in dB (default {','.join(map(str, stress.SNRS))})")
    parser.add_argument("--classes", choices=list(CLASS_TABLES), default=DEFAULT_CLASSES,
                        help="class table, as for scoring (default bxb)")
    args = parser.parse_args(argv)
    result = run_stress(args.mitdb, args.noise, args.checkpoint, args.out, args.records,
                        stress.parse_snrs(args.snr), args.classes)
    print(stress.format_markdown(result), end="")
    print(f"wrote {Path(args.out) / 'stress.json'}, stress.md and stress.png")


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point; `python -m heartjax.score stress ...` is the noise stress test."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["stress"]:
        return stress_main(argv[1:])
    parser = Parser(prog="python -m heartjax.score",
                    description="Score test beat annotations against reference ones (ANSI/AAMI "
                                "EC57). `python -m heartjax.score stress --help`: the EC57 noise "
                                "stress test.")
    parser.add_argument("records", nargs="*", metavar="RECORD",
                        help="record names (default: every record in RAW_DIR/RECORDS)")
    parser.add_argument("--records", dest="raw_dir", required=True, metavar="RAW_DIR",
                        help="folder of the WFDB records with the reference annotations")
    parser.add_argument("--test-dir", required=True, metavar="OUT_DIR",
                        help="folder of the test annotations (heartjax.annotate's --out)")
    parser.add_argument("--ref", default="atr", help="reference annotation extension (default atr)")
    parser.add_argument("--test", default="hjx", help="test annotation extension (default hjx)")
    parser.add_argument("--from", dest="start_s", type=float, default=LEARNING_S, metavar="SECONDS",
                        help="score beats from this time on (default 300: EC57 leaves out the "
                             "first 5 minutes; 0 keeps them)")
    parser.add_argument("--classes", choices=list(CLASS_TABLES), default=DEFAULT_CLASSES,
                        help="class table: bxb (default; PhysioNet's bxb, escape beats e j n "
                             "as S) or aami (de Chazal 2004, escape beats as N, as heartjax trains)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object: records, gross, average (and the counts)")
    args = parser.parse_args(argv)
    if args.start_s < 0:
        raise UserError(f"--from {args.start_s}: must be >= 0 seconds")
    result = score(args.raw_dir, args.test_dir, args.records, args.ref, args.test, args.start_s,
                   args.classes)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
