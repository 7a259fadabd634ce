"""Does training on both MIT-BIH leads make the new-patient model depend less on MLII?

Every MIT-BIH record has a second channel (V1, V2, V4 or V5): other leads' beat shapes. The
`both_leads` variant adds each DS1 training record's beats cut from that channel
(`data.extra_train`, a table built with `heartjax.data build mitbih --split interpatient --leads
V1,V2,V4,V5`); the validation records' beats stay out of training. The comparison is on DS1
alone: the held-out validation records (109, 115, 118, 207) through MLII, as model selection
sees them, and through their second channel. DS2 is not read here (`experiments/proxies.py`
reports it once for the shipped model).

    python experiments/both_leads.py --lead2 data/interpatient_lead2/heart_big_train.parq
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heartjax import metrics, space
from heartjax.checkpoint import load_checkpoint
from heartjax.cli import load_config
from heartjax.data import load_table
from heartjax.errors import Parser, UserError, cli_entry
from heartjax.evaluate import evaluate_table
from heartjax.experiment import CONFIGS, quick_overrides


def validation_tables(config, lead2_path: str):
    """The held-out DS1 records' beats through MLII (as training validates) and lead 2."""
    from heartjax.train import load_splits

    _, val = load_splits(space.apply(config, {"data.extra_train": ""}))
    lead2 = load_table(lead2_path, config.data.dataset)
    records = set(val.meta["record"].astype(str))
    rows = np.flatnonzero(lead2.meta["record"].astype(str).isin(records).to_numpy())
    return {"mlii": val, "lead2": lead2.subset(rows)}, sorted(records)


@cli_entry
def main() -> None:
    p = Parser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=f"{CONFIGS}/mitbih.py:interpatient",
                   help="the new-patient config (default configs/mitbih.py:interpatient)")
    p.add_argument("--lead2", required=True, help="DS1 training table cut from the second lead")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    p.add_argument("--work", default="runs/experiments/both_leads", help="run folders")
    p.add_argument("--out", default="reports/both_leads", help="results.json and results.md")
    p.add_argument("--quick", action="store_true", help="seconds of training: checks the pipeline")
    args = p.parse_args()
    from heartjax.train import train_and_evaluate

    base = load_config(args.config)
    if base.data.val_by != "records":
        raise UserError(f"{args.config}: needs data.val_by='records' (whole records validate)")
    tables, records = validation_tables(base, args.lead2)
    variants = {"mlii": {"data.extra_train": ""}, "both_leads": {"data.extra_train": args.lead2}}
    rows = []
    for name, overrides in variants.items():
        for seed in [int(s) for s in args.seeds.split(",")]:
            config = space.apply(base, {**overrides, "train.seed": seed})
            if args.quick:
                quick_overrides(config)
            run = Path(args.work) / f"{name}-seed{seed}"
            if not (run / "best.json").exists():
                print(f"[{name} seed {seed}] training", flush=True)
                train_and_evaluate(config, run, progress=False, overwrite=True)
            model = load_checkpoint(run)
            for view, table in tables.items():
                rows.append({"variant": name, "seed": seed, "validation": view,
                             **metrics.nsv_scores(evaluate_table(model, table)[0])})
                print(f"[{name} seed {seed}] {view}: "
                      + "  ".join(f"{k} {v:.3f}" for k, v in rows[-1].items() if k.endswith("recall")),
                      flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"records": records, "rows": rows}, indent=2))
    (out / "results.md").write_text(markdown(rows, records))
    print(markdown(rows, records))


def markdown(rows: list[dict], records: list[str]) -> str:
    """Mean over seeds of each variant and validation view."""
    head = ("| variant | validation | N/S/V macro recall | N recall | S recall (precision) | "
            "V recall (precision) | seeds |\n|---|---|---|---|---|---|---|\n")
    lines = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        for view in dict.fromkeys(r["validation"] for r in rows):
            part = [r for r in rows if r["variant"] == name and r["validation"] == view]
            mean = {k: float(np.mean([r[k] for r in part])) for k in part[0] if k not in
                    ("variant", "seed", "validation")}
            seeds = " / ".join(f"{r['nsv_recall']:.3f}" for r in part)
            lines.append(f"| {name} | {view} | {mean['nsv_recall']:.3f} | {mean['N_recall']:.3f} | "
                         f"{mean['S_recall']:.3f} ({mean['S_precision']:.3f}) | "
                         f"{mean['V_recall']:.3f} ({mean['V_precision']:.3f}) | {seeds} |")
    return (f"DS1 held-out records {', '.join(records)}; mean over seeds (per-seed N/S/V macro "
            f"recall in the last column).\n\n" + head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
