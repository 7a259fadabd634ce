"""Leave one database out: does a new-patient model carry to a recorder it never saw? For each
database of the config's `data.train_files` (with its `data.extra_train` second leads), a model
trains on the other databases' records (validation records held out of those, as
`data.val_by=records` draws them) and is scored on every beat of the left-out database.

    python experiments/leave_one_database_out.py --config configs/mitbih.py:interpatient
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from heartjax import metrics
from heartjax.checkpoint import load_checkpoint
from heartjax.cli import parse_config_flags
from heartjax.data import add_training_beats, train_val_split
from heartjax.errors import UserError, cli_entry
from heartjax.evaluate import evaluate_table
from heartjax.experiment import CONFIGS, quick_overrides
from heartjax.train import extra_tables, train_and_evaluate, training_table


def left_out_splits(config, database: str):
    """(train, validation) from every database but `database`, and `database`'s table."""
    d = config.data
    table = training_table(d)
    of = table.meta["database"].astype(str).to_numpy()
    rest, test = table.subset(of != database), table.subset(of == database)
    train, val = train_val_split(rest, d.val_fraction, d.seed, d.val_by)
    for extra in extra_tables(d):
        keep = extra.meta["database"].astype(str).to_numpy() != database
        train = add_training_beats(train, val, extra.subset(keep))
    return (train, val), test


@cli_entry
def main() -> None:
    config, args = parse_config_flags(None, __doc__.split("\n\n")[0], extra=[
        ("--work", dict(default="runs/experiments/leave_one_database_out", help="run folders")),
        ("--out", dict(default="reports/leave_one_database_out", help="results.json and .md")),
        ("--quick", dict(action="store_true", help="seconds of training: checks the pipeline")),
    ], default_config=f"{CONFIGS}/mitbih.py:interpatient")
    if len(config.data.train_files) < 2:
        raise UserError("leaving a database out needs data.train_files with two or more "
                        "databases' tables (`heartjax.data build wfdb`)")
    if args.quick:
        quick_overrides(config)
    databases = sorted(set(training_table(config.data).meta["database"].astype(str)))
    rows = []
    for database in databases:
        print(f"[train without {database}]", flush=True)
        splits, test = left_out_splits(config, database)
        run = Path(args.work) / f"without_{database}"
        train_and_evaluate(config, run, progress=False, overwrite=True, splits=splits)
        m, _ = evaluate_table(load_checkpoint(run), test)
        scores = metrics.nsv_scores(m)
        rows.append({"left_out": database, "records": int(len(set(test.records))),
                     "beats": int(len(test)), "trained_on": [b for b in databases if b != database],
                     **scores, "confusion_matrix": np.asarray(m["confusion_matrix"]).tolist()})
        print("  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"config": args.config, "rows": rows}, indent=2))
    lines = ["| left out | trained on | records | N/S/V recall | N | S (precision) | V (precision) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['left_out']} | {', '.join(r['trained_on'])} | {r['records']} | "
              f"{r['nsv_recall']:.3f} | {r['N_recall']:.3f} | {r['S_recall']:.3f} "
              f"({r['S_precision']:.3f}) | {r['V_recall']:.3f} ({r['V_precision']:.3f}) |"
              for r in rows]
    text = "Each database scored by a model that never saw it:\n\n" + "\n".join(lines) + "\n"
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
