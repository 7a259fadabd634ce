"""How much does a new-patient model depend on its seed? Reads the out-of-fold probabilities that
`experiments/crossval.py` keeps (`OUT/oof_<variant>.npz`, one OUT folder per `--seed`) and
tabulates, per variant and database: N/S/V recall and S, V precision of each seed, their spread
(largest minus smallest), and the seeds' ensemble (the mean of their probabilities, as
`heartjax.checkpoint.Ensemble` predicts).

    python experiments/crossval_seeds.py reports/crossval_svdb_seed0 reports/crossval_svdb_seed1 \\
        reports/crossval_svdb_seed2 --out reports/crossval_svdb_seeds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from heartjax import metrics
from heartjax.data import CLASS_NAMES
from heartjax.errors import Parser, UserError, cli_entry

SCORES = ("nsv_recall", "N_recall", "S_recall", "S_precision", "V_recall", "V_precision")


def scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The N/S/V scores of `proba` against `y`."""
    names = CLASS_NAMES["mitbih"]
    m = metrics.evaluate_predictions(y, proba, names)
    return metrics.nsv_scores(metrics.from_confusion(np.asarray(m["confusion_matrix"]), names))


def read_seeds(work: Path, seeds: list[int], variant: str, mix: str = ""
               ) -> list[dict[str, np.ndarray]]:
    """Each seed's out-of-fold arrays (at the evaluation mix `mix`, e.g. "0.6:0.6:0.3:0.6:0.6";
    "": the config's own), in one beat order (checked)."""
    runs = []
    for seed in seeds:
        path = work / f"oof_{variant}_seed{seed}{f'_mix{mix}' if mix else ''}.npz"
        if not path.is_file():
            raise UserError(f"{path} not found; run experiments/crossval.py --variants {variant} "
                            f"--seed {seed} --work {work}" + (f" --mix {mix}" if mix else "")
                            + " first")
        with np.load(path, allow_pickle=True) as f:  # record names: strings, as crossval wrote
            runs.append({k: f[k] if k in ("proba", "y") else f[k].astype(str) for k in f.files})
    for run in runs[1:]:
        if not (np.array_equal(run["record"], runs[0]["record"])
                and np.array_equal(run["y"], runs[0]["y"])):
            raise UserError(f"the --seed runs of {variant} hold other beats; use the same folds "
                            "and tables for every seed")
    return runs


def variant_rows(variant: str, runs: list[dict[str, np.ndarray]]) -> list[dict]:
    """One row per database (and all of them): each seed, the spread, the ensemble."""
    database = runs[0]["database"]
    rows = []
    for name in [*sorted(set(database)), "all"]:
        keep = np.ones(len(database), bool) if name == "all" else database == name
        seeds = [scores(r["y"][keep], r["proba"][keep]) for r in runs]
        mean = np.mean([r["proba"][keep] for r in runs], axis=0)
        rows.append({"variant": variant, "database": str(name), "seeds": seeds,
                     "spread": {k: max(s[k] for s in seeds) - min(s[k] for s in seeds)
                                for k in SCORES},
                     "ensemble": scores(runs[0]["y"][keep], mean)})
    return rows


def markdown(rows: list[dict]) -> str:
    """Each seed's scores, the spread over seeds and the ensemble, per variant and database."""
    head = ("| variant | database | | N/S/V recall | N | S (precision) | V (precision) |\n"
            "|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        def cells(s: dict) -> str:
            return (f"{s['nsv_recall']:.3f} | {s['N_recall']:.3f} | {s['S_recall']:.3f} "
                    f"({s['S_precision']:.3f}) | {s['V_recall']:.3f} ({s['V_precision']:.3f})")
        for i, s in enumerate(r["seeds"]):
            lines.append(f"| {r['variant']} | {r['database']} | seed {i} | {cells(s)} |")
        lines.append(f"| {r['variant']} | {r['database']} | **spread** | {cells(r['spread'])} |")
        lines.append(f"| {r['variant']} | {r['database']} | **ensemble** | {cells(r['ensemble'])} |")
    return ("Out-of-fold scores of each seed, their spread (largest minus smallest) and the seeds' "
            "ensemble (the mean of their probabilities).\n\n" + head + "\n".join(lines) + "\n")


@cli_entry
def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="crossval.py's --work folder")
    parser.add_argument("--seeds", default="0,1,2", help="the seeds to read (default 0,1,2)")
    parser.add_argument("--variants", default="shipped",
                        help="variants, comma-separated (default shipped); VARIANT@MIX reads its "
                             "fold models scored at that evaluation mix (crossval.py --mix), "
                             "e.g. shipped@0.6:0.6:0.3:0.6:0.6")
    parser.add_argument("--out", type=Path, required=True, help="seeds.json and seeds.md")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: give whole numbers, e.g. 0,1,2") from None
    if len(seeds) < 2:
        raise UserError("give two or more --seeds")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    rows = [row for name in names for row in variant_rows(
        name, read_seeds(args.work, seeds, *name.partition("@")[::2]))]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seeds.json").write_text(json.dumps(
        {"work": str(args.work), "seeds": seeds, "rows": rows}, indent=2))
    text = markdown(rows)
    (args.out / "seeds.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
