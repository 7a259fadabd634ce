"""Ablations: train named variants of one config and compare them on the test table.

Every script in `experiments/` is a base config plus a dict of variants (overrides by config
path); `run_variants` trains each with `train_and_evaluate` (the same code as every other run),
evaluates its best checkpoint on the test table and writes `results.csv`, `results.md`,
`results.png` and each variant's `evaluate --json` output.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import pandas as pd

from heartjax import space
from heartjax.checkpoint import load_checkpoint
from heartjax.data import TABLE_FILES
from heartjax.errors import Parser, UserError
from heartjax.evaluate import evaluate

Variants = dict[str, dict[str, Any]]


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def parse_args(
    description: str, default_out: str, extra: list[tuple[str, dict]] = ()
) -> argparse.Namespace:
    """The flags every experiment script takes (plus the script's own `extra`)."""
    p = Parser(description=description)
    for name, kwargs in extra:
        p.add_argument(name, **kwargs)
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    p.add_argument("--data-dir", default=None, help="folder of the beat tables (default: the config's)")
    p.add_argument("--quick", action="store_true",
                   help="a few epochs on a small stratified subsample: checks the pipeline, not the answer")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs of every variant")
    p.add_argument("--only", default=None, metavar="NAME[,NAME]",
                   help="train only these variants; the other rows of --out's results.csv are kept "
                        "(add a row to an ablation without retraining the rest)")
    return p.parse_args()


def quick_overrides(config: ml_collections.ConfigDict) -> None:
    """Shrink a config to seconds of training (used by --quick and the tests)."""
    config.train.epochs = 2
    config.data.train_limit = 3000
    config.train.patience = 2


def run_variants(
    base: ml_collections.ConfigDict,
    variants: Variants,
    out: str | Path,
    *,
    quick: bool = False,
    data_dir: str | None = None,
    epochs: int | None = None,
    prepare: Callable[[str, ml_collections.ConfigDict, Path], None] | None = None,
    only: str | None = None,
) -> pd.DataFrame:
    """Train every variant (or the comma-separated `only`) into `out/<name>`, evaluate on test,
    write the comparison; with `only`, the other variants' rows come from `out/results.csv`."""
    out = Path(out)
    from heartjax.train import train_and_evaluate

    chosen, kept = _select(out, variants, only)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, overrides in variants.items():
        if name in kept:
            rows.append(kept[name])
        if name not in chosen:
            continue
        config = space.apply(base, overrides)
        if data_dir:
            config.data.dir = data_dir
        if quick:
            quick_overrides(config)
        if epochs:
            config.train.epochs = epochs
        if prepare is not None:  # e.g. transfer learning: point init_from at a trained run
            prepare(name, config, out)
        print(f"[{name}] training {config.model.name} with {overrides or 'the base config'}", flush=True)
        t0 = time.time()
        best = train_and_evaluate(config, out / name, progress=False, overwrite=True)
        seconds = time.time() - t0
        test_file = Path(config.data.dir) / TABLE_FILES[config.data.dataset][1]
        m = evaluate(load_checkpoint(out / name), test_file)
        (out / name / "test_metrics.json").write_text(json.dumps(m, indent=2))
        row = {"variant": name, "changes": ", ".join(f"{k}={v}" for k, v in overrides.items()) or "base",
               "params": best["params"], "train_s": round(seconds, 1), "best_epoch": best["epoch"],
               "val_macro_recall": best["val"]["macro_recall"], "val_macro_f1": best["val"]["macro_f1"],
               "test_accuracy": m["accuracy"], "test_macro_recall": m["macro_recall"],
               "test_macro_f1": m["macro_f1"]}
        row.update({f"test_recall_{c}": s["recall"] for c, s in m["per_class"].items()})
        row.update({f"test_precision_{c}": s["precision"] for c, s in m["per_class"].items()})
        rows.append(row)
        print(f"[{name}] test macro recall {m['macro_recall']:.4f}, macro F1 {m['macro_f1']:.4f}, "
              f"accuracy {m['accuracy']:.4f} ({seconds:.0f} s)", flush=True)
    if not rows:
        raise UserError("no variants to run")
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(_markdown(table, quick))
    plot_results(table, out / "results.png")
    return table


def _select(out: Path, variants: Variants, only: str | None) -> tuple[set[str], dict[str, dict]]:
    """The variants to train, and the rows of `out/results.csv` that `--only` leaves alone."""
    if only is None:
        return set(variants), {}
    names = {n.strip() for n in only.split(",") if n.strip()}
    if not names or not names <= set(variants):
        raise UserError(f"--only {only!r}: choose among {', '.join(variants)}")
    csv = out / "results.csv"
    old = pd.read_csv(csv).to_dict("records") if csv.exists() else []
    return names, {r["variant"]: r for r in old if r["variant"] in variants and r["variant"] not in names}


def run_script(doc: str, config: str, variants: Variants, default_out: str) -> None:
    """The whole `main` of a one-config ablation script: flags, runs, printed table."""
    from heartjax.cli import load_config
    from heartjax.errors import cli_entry

    @cli_entry
    def main() -> None:
        args = parse_args(doc, default_out, [("--config", {
            "default": f"{CONFIGS}/{config}",
            "help": f"base config the variants change (default configs/{config})"})])
        table = run_variants(load_config(args.config), variants, args.out,
                             quick=args.quick, data_dir=args.data_dir, epochs=args.epochs,
                             only=args.only)
        print(table.to_string(index=False))

    main()


def _markdown(table: pd.DataFrame, quick: bool) -> str:
    cols = [c for c in table.columns if c not in ("best_epoch",)]
    fmt = table[cols].copy()
    for c in cols:
        if fmt[c].dtype.kind == "f" and c != "train_s":
            fmt[c] = fmt[c].map(lambda v: f"{v:.4f}")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in fmt.itertuples(index=False)]
    note = "\n\n_--quick run: a few epochs on a subsample; numbers check the pipeline only._\n" if quick else "\n"
    return "\n".join(lines) + note


def plot_results(table: pd.DataFrame, path: Path) -> None:
    """Grouped bars: test macro recall, macro F1 and each class's recall per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ["test_macro_recall", "test_macro_f1"] + [c for c in table.columns if c.startswith("test_recall_")]
    labels = [m.replace("test_", "").replace("_", " ") for m in metrics]
    n, k = len(table), len(metrics)
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.5, 1.1 * k + 2) + 2.5, 4.2))
    for i, row in enumerate(table.itertuples(index=False)):
        values = [getattr(row, m) for m in metrics]
        ax.bar(np.arange(k) + (i - (n - 1) / 2) * width, values, width, label=row.variant)
    ax.set_xticks(np.arange(k), labels, rotation=20)
    ax.set_ylabel("score on the test table")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: bars stay visible
    ax.set_title("Ablation: test recall (recall first) and macro F1 per variant")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
