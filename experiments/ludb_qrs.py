"""How well does `heartjax.annotate` find the QRS complexes of another recorder's records? LUDB
(Lobachevsky University, 200 records of 10 s, 12 leads at 500 Hz): annotate's own detection
(the lead it picks, ii; wfdb's gqrs, each detection moved to its R peak, checked against
neurokit2's detectors: `annotate.detect_qrs` with its defaults) against the QRS marks of each
record's `ii` annotation file (its `N` symbols; `(` and `)` bound the waves). A detection matches
the nearest reference QRS within 150 ms, one to one (`heartjax.score.match`); no learning
period, the records being 10 s.

LUDB's cardiologists left the first and last beat or so of each record unmarked (the first mark
of a record lies 0.4-2.7 s in), so three scorings: every beat of the whole 10 s; the first and
last 0.5 s left out; and the headline, the span the reference annotates (its first to its last
mark, waves included): a detection outside it that matches no reference QRS is not counted.
Diagnostics, in that scoring: gqrs's detections before the check, neurokit2's detector alone,
and annotate's detection without its amplitude floor (`annotate.MIN_QRS_MV`: gqrs sees a lead
whose QRS complexes are small scaled up; gqrs starts from a typical QRS of 0.75 mV and adapts
over tens of seconds, longer than a LUDB record).

    python experiments/ludb_qrs.py [--records-dir ../shared/data/physionet/ludb] [--out reports/ludb_qrs] [RECORD ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from heartjax import annotate
from heartjax.annotate import detect_qrs
from heartjax.errors import UserError, cli_entry
from heartjax.recordings import open_recording, read_signal
from heartjax.score import WINDOW_S, match

REFERENCE = "ii"  # the annotation file of lead ii
QRS = "N"  # LUDB marks every QRS complex N (no beat classes)
EDGE_S = 0.5
SCORINGS = {"all": "every beat, the whole 10 s",
            "edges": f"the first and last {EDGE_S:g} s left out",
            "span": "the span the reference annotates (headline)"}
HEADLINE = "span"
WORST = 10
# (detector, check against neurokit2's, gqrs's amplitude floor in mV): annotate's defaults,
# then the others
VARIANTS = {"annotate": ("gqrs", True, annotate.MIN_QRS_MV),
            "gqrs before the check": ("gqrs", False, annotate.MIN_QRS_MV),
            "neurokit2's detector alone": ("neurokit", False, annotate.MIN_QRS_MV),
            "annotate without the amplitude floor": ("gqrs", True, 0.0)}


def record_names(raw: Path) -> list[str]:
    """LUDB's RECORDS lists `data/1` ...; the records lie in `raw` itself."""
    listing = raw / "RECORDS"
    if not listing.is_file():
        raise UserError(f"{raw}: no RECORDS file; point --records-dir at LUDB's folder")
    return [Path(line.strip()).name for line in listing.read_text().splitlines() if line.strip()]


def counts(ref: np.ndarray, test: np.ndarray, ri: np.ndarray, ti: np.ndarray, lo: int,
           hi: int) -> dict[str, int]:
    """Matched (by the reference beat's place), missed and extra beats inside [lo, hi]."""
    inside_ref = (ref >= lo) & (ref <= hi)
    inside_test = (test >= lo) & (test <= hi)
    missed = np.ones(len(ref), bool)
    missed[ri] = False
    extra = np.ones(len(test), bool)
    extra[ti] = False
    return {"tp": int(inside_ref[ri].sum()), "fn": int((missed & inside_ref).sum()),
            "fp": int((extra & inside_test).sum())}


def rates(c: dict[str, int]) -> dict[str, float | None]:
    """QRS Se and +P of matched / missed / extra counts."""
    tp, fn, fp = c["tp"], c["fn"], c["fp"]
    return {"se": tp / (tp + fn) if tp + fn else None, "p": tp / (tp + fp) if tp + fp else None}


def score_record(raw: Path, name: str) -> dict:
    """One record: the lead annotate picks, its detections against the reference QRS marks."""
    import wfdb

    rec = open_recording(raw / name)
    signal = read_signal(rec)
    ann = wfdb.rdann(str(raw / name), REFERENCE)
    marks = np.asarray(ann.sample, np.int64)
    ref = np.sort(marks[np.asarray(ann.symbol) == QRS])
    window = round(WINDOW_S * rec.fs)
    span = (int(marks.min()), int(marks.max()))
    found = {}
    default = annotate.MIN_QRS_MV
    for variant, (detector, confirm, floor) in VARIANTS.items():
        annotate.MIN_QRS_MV = floor  # the detector reads it: set for this variant, then restored
        try:
            found[variant] = detect_qrs(signal, rec.fs, detector, confirm=confirm)
        finally:
            annotate.MIN_QRS_MV = default
    peaks = found["annotate"]
    ri, ti = match(ref, peaks, window)
    edge = round(EDGE_S * rec.fs)
    bounds = {"all": (0, len(signal) - 1), "edges": (edge, len(signal) - 1 - edge), "span": span}
    extra = np.setdiff1d(np.arange(len(peaks)), ti)
    outside = extra[(peaks[extra] < span[0]) | (peaks[extra] > span[1])]
    rr = float(np.median(np.diff(ref))) if len(ref) > 1 else float("nan")
    # how far each extra detection outside the span lies from the nearest marked QRS, in the
    # record's median R-R intervals: about 1 for a beat the reference left unmarked
    apart = [float(np.abs(ref - peaks[e]).min() / rr) for e in outside] if len(ref) else []
    rhythm = next((c.split(":", 1)[1].strip().rstrip(".") for c in rec.comments
                   if c.lower().startswith("rhythm:")), "")
    return {"record": name, "lead": rec.lead, "fs": rec.fs, "rhythm": rhythm,
            "reference": len(ref), "detected": len(peaks),
            "span_s": [span[0] / rec.fs, span[1] / rec.fs], "outside_rr": apart,
            **{k: counts(ref, peaks, ri, ti, *b) for k, b in bounds.items()},
            "variants": {v: counts(ref, p, *match(ref, p, window), *span)
                         for v, p in found.items()}}


def pooled(counted: list[dict[str, int]]) -> dict:
    """Pooled counts, QRS Se / +P and how many records have an error."""
    c = {x: sum(r[x] for r in counted) for x in ("tp", "fn", "fp")}
    return {**c, **rates(c), "records_with_errors": sum(r["fn"] + r["fp"] > 0 for r in counted)}


def markdown(result: dict) -> str:
    """The report: gross Se, +P and counts of each scoring, then the worst records."""
    g, rows, d = result["gross"], result["records"], result["variants"]
    apart = [a for r in rows for a in r["outside_rr"]]
    lines = [
        "# QRS detection on LUDB (heartjax.annotate's detector)", "",
        f"{len(rows)} records of 10 s at 500 Hz, lead {', '.join(sorted({r['lead'] for r in rows}))} "
        f"(the lead annotate picks); annotate's detection (gqrs, R peak, confirmed by neurokit2's "
        f"detectors) against the `N` marks of each record's `ii` file, 150 ms window, one to one, "
        f"no learning period. Made by `experiments/ludb_qrs.py` in {result['seconds']:.0f} s.", "",
        "| scoring | QRS Se | QRS +P | matched | missed | extra | records with an error |",
        "|---|---|---|---|---|---|---|"]
    for k, what in SCORINGS.items():
        s = g[k]
        lines.append(f"| {what} | {100 * s['se']:.2f}% | {100 * s['p']:.2f}% | {s['tp']:,} | "
                     f"{s['fn']:,} | {s['fp']:,} | {s['records_with_errors']} |")
    lines += ["", "The reference leaves the first and last beat or so of each record unmarked "
              f"(its first mark lies {min(r['span_s'][0] for r in rows):.1f}-"
              f"{max(r['span_s'][0] for r in rows):.1f} s in, its last "
              f"{min(r['span_s'][1] for r in rows):.1f}-{max(r['span_s'][1] for r in rows):.1f} s):"
              " a detection of such a beat is no error, so the headline counts only the span the "
              "reference annotates (its first to its last mark)." + (
                  f" The {len(apart)} extra detections outside it lie {min(apart):.2f}-"
                  f"{max(apart):.2f} median R-R intervals from the nearest marked QRS: the "
                  "unmarked beats." if apart else ""), "",
              f"The {WORST} records with the most errors (headline scoring):", "",
              "| record | rhythm | reference QRS | detected (10 s) | missed | extra | "
              "missed, extra over 10 s |", "|---|---|---|---|---|---|---|"]
    worst = sorted(rows, key=lambda r: (-(r[HEADLINE]["fn"] + r[HEADLINE]["fp"]),
                                        -(r["all"]["fn"] + r["all"]["fp"]), int(r["record"])))
    for r in worst[:WORST]:
        h, a = r[HEADLINE], r["all"]
        lines.append(f"| {r['record']} | {r['rhythm']} | {r['reference']} | {r['detected']} | "
                     f"{h['fn']} | {h['fp']} | {a['fn']}, {a['fp']} |")
    lines += ["", "Each detection (headline scoring). Without the amplitude floor gqrs misses the "
              "beats of the records whose lead ii QRS complexes are small (a QRS-band amplitude "
              "of 0.13-0.27 mV in the worst, against 1.2-2.3 mV in MIT-BIH's MLII): it starts "
              "from a typical QRS of 0.75 mV and adapts over tens of seconds, longer than a "
              "LUDB record.", "",
              "| detection | QRS Se | QRS +P | matched | missed | extra | records with an error |",
              "|---|---|---|---|---|---|---|"]
    for v, s in d.items():
        lines.append(f"| {v} | {100 * s['se']:.2f}% | {100 * s['p']:.2f}% | {s['tp']:,} | "
                     f"{s['fn']:,} | {s['fp']:,} | {s['records_with_errors']} |")
    return "\n".join(lines) + "\n"


@cli_entry
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", nargs="*", help="record names (default: LUDB's RECORDS, all 200)")
    p.add_argument("--records-dir", default="../shared/data/physionet/ludb", metavar="DIR")
    p.add_argument("--out", default="reports/ludb_qrs", metavar="PATH",
                   help="writes PATH.json and PATH.md")
    args = p.parse_args()
    raw = Path(args.records_dir)
    names = args.records or record_names(raw)
    t0 = time.perf_counter()
    rows = []
    for i, name in enumerate(names):
        rows.append(score_record(raw, name))
        if (i + 1) % 50 == 0:
            print(f"{i + 1} records", flush=True)
    result = {"database": "ludb", "reference": f"{REFERENCE} annotation file, {QRS} symbols",
              "window_s": WINDOW_S, "edge_s": EDGE_S, "scorings": SCORINGS, "headline": HEADLINE,
              "variants_scoring": HEADLINE, "seconds": time.perf_counter() - t0,
              "gross": {k: pooled([r[k] for r in rows]) for k in SCORINGS},
              "variants": {v: pooled([r["variants"][v] for r in rows]) for v in VARIANTS},
              "records": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    for k, s in [*result["gross"].items(), *result["variants"].items()]:
        print(f"{SCORINGS.get(k, k):>45}: QRS Se {s['se']:.4f} +P {s['p']:.4f} (matched "
              f"{s['tp']}, missed {s['fn']}, extra {s['fp']})")
    print(f"wrote {out.with_suffix('.json')}, {out.with_suffix('.md')} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
