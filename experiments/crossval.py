"""Cross-validation by records on DS1 (or on several databases: `data.train_files`): every
record validates once, so a choice rests on all patients' arrhythmias instead of a few
held-out records'.

The records are dealt into `--folds` folds (`heartjax.data.splits.record_folds`: each fold gets
one of the richest S records, 209, 201, 207, 118, ...). For every training variant and fold a
model trains on the other folds (choosing its epoch on the held-out fold, as
`data.val_by=records` does), and its predictions on the held-out fold are kept. The pooled
out-of-fold predictions score each variant over all of DS1, beat by beat, as a DS2 test would.
Evaluation-time knobs are scored on the same models without training again: `--mix`
(`model.morph_mix`, the weight of the shape-free classifier) and `--adapt-norm` (test-time
adaptation: each held-out record classified with batch-norm statistics moved that share of the
way from the trained ones to the record's own, AdaBN, Li et al. 2016). DS2 is not read.

    python experiments/crossval.py --variants shipped,rr_seconds --mix 0.5,0.6,0.9 --adapt-norm 0.5,1

Over MIT-BIH DS1 and svdb (`heartjax.data build wfdb`), each database's records dealt across
the folds, with the scores per database; `mitdb_only` trains each fold's model on its MIT-BIH
records alone (the model as it was before svdb) and scores it on the same held-out records:

    python experiments/crossval.py --variants mitdb_only,shipped \
        --config.data.train_files='("data/interpatient/heart_big_train.parq","data/svdb/heart_big_all.parq")' \
        --config.data.extra_train=data/interpatient_lead2/heart_big_train.parq,data/svdb_lead2/heart_big_all.parq

Any field of the config can be overridden as for training (`--config.train.epochs=4`);
a fold's model is reused from `--work` only when it was trained with the same config (a field
added to heartjax since, left at its default, counts as the same).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from heartjax import metrics, space
from heartjax.checkpoint import Predictor, load_checkpoint
from heartjax.cli import parse_config_flags
from heartjax.config import migrate
from heartjax.data import CLASS_NAMES
from heartjax.errors import UserError, cli_entry
from heartjax.evaluate import evaluate_table
from heartjax.experiment import CONFIGS, quick_overrides

FIRST_TRIAL = {
    "model.morph_dropout": 0.8, "model.channels": 32, "model.kernel_size": 5, "model.norm": "none",
    "model.head_hidden": (32, 32), "train.class_weight_power": 1.0, "train.learning_rate": 1e-3,
    "train.weight_decay": 1e-4, "train.augment.scale": 0.0, "train.augment.noise": 0.0,
    "train.augment.wander": 0.0, "train.augment.stretch": 0.0,
}

S_TWICE = {"train.class_weight_scale": (1.0, 2.0, 1.0, 1.0, 1.0)}  # S weighs twice as much

# what training differs in; "shipped" is the config as given
VARIANTS = {
    "shipped": {},
    "mitdb_only": {},  # trained on the fold's MIT-BIH records alone (TRAIN_DATABASES)
    "mlii": {"data.extra_train": ""},  # MLII alone, no second-lead beats
    "rr_seconds": {"model.rr_seconds": True},  # the head also sees the R-R intervals in seconds
    "rr_seconds_mlii": {"model.rr_seconds": True, "data.extra_train": ""},
    # every class weighs as much as N
    "rr_seconds_full_balance": {"model.rr_seconds": True, "train.class_weight_power": 1.0},
    "morph_0.8": {"model.morph_dropout": 0.8},  # more beats train the head with their shape
    "s_weight_2": S_TWICE,
    # a class's records drawn alike (heartjax.losses.record_sampling), fully and halfway
    "record_balance": {"train.record_balance": 1.0},
    "record_balance_0.5": {"train.record_balance": 0.5},
    # electrode motion in training: three smooth transients a beat, up to 0.1 or 0.2 of its range
    "motion_0.1": {"train.augment.motion": 0.1},
    "motion_0.2": {"train.augment.motion": 0.2},
    # nstdb's real baseline wander, muscle and electrode-motion noise (`make data-noise`) added
    # to half the training beats at 0-24 dB
    "real_noise": {"train.augment.real_noise": 0.5, "data.noise_file": "data/noise/noise.npz"},
    # the records drawn alike in every class but V (V as it is: 208's 992 beats teach V its
    # shapes), and in S alone
    "balance_but_v": {"train.record_balance_classes": ("N", "S", "F", "Q")},
    "balance_s": {"train.record_balance_classes": ("S",)},
    # the new-patient search's first trial: the resnet1d's own 32 channels of kernel 5 without
    # normalisation, head (32, 32), morphology dropout 0.8, full class balance, no augmentation
    "first_trial": {**FIRST_TRIAL, "model.rr_seconds": True, "data.extra_train": ""},
    # the same with what cross-validation chose since: R-R ratios only, both leads
    "first_trial_ratios": FIRST_TRIAL,
    # the cross-validated search's best on a two-rung ladder (reports/tune_interpatient_2rungs):
    # 48 channels without normalisation, dropout 0.1, morphology dropout 0.7 and mix 0.5
    "search_48": {
        "model.morph_dropout": 0.7, "model.morph_mix": (0.5,),
        "model.channels": 48, "model.dropout": 0.1, "model.norm": "none",
        "train.augment.noise": 0.0, "train.augment.scale": 0.0, "train.augment.shift": 3,
        "train.augment.wander": 0.0, "train.class_weight_power": 0.684,
        "train.learning_rate": 2.16e-3, "train.record_balance": 0.5, "train.weight_decay": 2.75e-5,
    },
}


# variants whose fold models train on these databases' records only (validated on all)
TRAIN_DATABASES = {"mitdb_only": ("mitdb",)}


def fold_model_and_table(base, overrides: dict, folds: int, fold: int, run: Path, quick: bool,
                         databases: tuple[str, ...] = ()):
    """Train (unless `run` holds a finished model) and return the model and its held-out fold;
    `databases`: train on the records of these databases only."""
    from heartjax.train import load_splits, train_and_evaluate

    config = space.apply(base, {**overrides, "data.folds": folds, "data.fold": fold})
    if quick:
        quick_overrides(config)
    if not (run / "best.json").exists():
        splits = None
        if databases:
            train, val = load_splits(config)
            if "database" not in train.meta:
                raise UserError("training on some databases needs tables with a database column")
            splits = (train.subset(train.meta["database"].isin(databases).to_numpy()), val)
        train_and_evaluate(config, run, progress=False, overwrite=True, splits=splits)
    elif not same_training(json.loads((run / "config.json").read_text()), config):
        raise UserError(f"{run} holds a model of another config than this variant's; pick "
                        "another --work for these config overrides")
    _, val = load_splits(space.apply(config, {"data.extra_train": ""}))
    return load_checkpoint(run), val


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def same_training(saved: dict, config) -> bool:
    """Whether a run folder's config is `config`; a field added to heartjax after the run was
    trained counts as the same while it holds its default (`heartjax.config.migrate`)."""
    saved = {k: v for k, v in saved.items() if k != "runtime"}  # what it ran on
    return _flat(json.loads(json.dumps(migrate(saved)))) == _flat(
        json.loads(config.to_json_best_effort()))


def adapted_proba(model: Predictor, table, share: float) -> np.ndarray:
    """Class probabilities of `table`, each record's beats classified with the batch-norm
    statistics moved `share` of the way from the trained ones to those of the record's own
    beats (0: as trained). Only the record being classified is used."""
    import jax

    from heartjax.data import context_features
    from heartjax.models import build_model
    from heartjax.models.layers import BN_MOMENTUM

    trained = model.variables.get("batch_stats")
    if not trained:
        raise UserError(f"{model.path}: the model has no batch normalisation to adapt")
    module = build_model(model.config.model, len(model.class_names))
    records = np.asarray(table.records).astype(str)
    proba = np.zeros((len(table.y), len(model.class_names)))
    for record in sorted(set(records)):
        rows = records == record
        x, rr = table.x[rows], table.rr[rows]
        # one training-mode pass normalises each layer by the record's own statistics and
        # moves the running ones (1 - momentum) of the way there: that step, undone, is them
        ctx = context_features(x, rr, None, model.config.model.context)
        _, moved = module.apply(model.variables, x, ctx, train=True,
                                mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
        own = jax.tree.map(lambda new, old: (new - BN_MOMENTUM * old) / (1 - BN_MOMENTUM),
                           moved["batch_stats"], trained)
        stats = jax.tree.map(lambda old, new: (1 - share) * old + share * new, trained, own)
        adapted = replace(model, variables={**model.variables, "batch_stats": stats})
        proba[rows] = adapted.predict_proba(x, rr)
    return proba


def record_recalls(table, pred: np.ndarray) -> dict[str, dict]:
    """Per record of `table`: the count of S and V beats and the share of each found."""
    out = {}
    for record in sorted(set(table.records)):
        rows = table.records == record
        out[record] = {}
        for i, c in enumerate(metrics.EC57_CLASSES):
            truth = rows & (table.y == i)
            out[record][c] = int(truth.sum())
            out[record][f"{c}_recall"] = float((pred[truth] == i).mean()) if truth.any() else None
    return out


@cli_entry
def main() -> None:
    base, args = parse_config_flags(None, __doc__.split("\n\n")[0], extra=[
        ("--data-dir", dict(default="", help="DS1 tables of a one-database config such as "
                                             ":interpatient_ds1 (default: its data.dir)")),
        ("--lead2", dict(default=None, help="second-lead DS1 table for training (default: the "
                                            "config's data.extra_train; '' for none)")),
        ("--folds", dict(type=int, default=4, help="folds of DS1 records (default 4)")),
        ("--variants", dict(default="shipped", help="training variants, comma-separated, of "
                                                    + ", ".join(VARIANTS))),
        ("--mix", dict(default="", help="evaluation-time model.morph_mix values to score too, "
                                        "e.g. 0.5,0.9, or one weight per class joined by ':', "
                                        "e.g. 0.75:0.75:0.4:0.75:0.75 "
                                        "(default: the config's only)")),
        ("--adapt-norm", dict(default="", help="test-time batch-norm adaptation shares to score "
                                               "too, e.g. 0.5,1 (each record's own statistics; "
                                               "default: none)")),
        ("--seed", dict(type=int, default=0, help="training seed (default 0)")),
        ("--work", dict(default="runs/experiments/crossval", help="run folders")),
        ("--out", dict(default="reports/crossval", help="results.json and results.md")),
        ("--quick", dict(action="store_true", help="seconds of training: checks the pipeline")),
    ], default_config=f"{CONFIGS}/mitbih.py:interpatient")
    if args.data_dir and base.data.train_files:
        raise UserError(f"--data-dir sets the DS1 tables of a one-database config; {args.config} "
                        "trains on data.train_files: set --config.data.train_files, or use "
                        "--config configs/mitbih.py:interpatient_ds1")
    if args.data_dir:
        base = space.apply(base, {"data.dir": args.data_dir})
    if args.lead2 is not None:
        base = space.apply(base, {"data.extra_train": args.lead2})
    if base.data.val_by != "records":
        raise UserError(f"{args.config}: needs data.val_by='records' (folds are whole records)")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise UserError(f"unknown --variants {', '.join(unknown)}; use {', '.join(VARIANTS)}")
    own = config_mix(base)
    mixes = [own, *(parse_mix(m, len(CLASS_NAMES[base.data.dataset])) for m in args.mix.split(",")
                    if m.strip())]
    mixes = sorted(set(mixes), key=lambda m: (len(m) > 1, m))
    try:
        shares = [float(a) for a in args.adapt_norm.split(",") if a.strip()]
    except ValueError:
        raise UserError(f"--adapt-norm {args.adapt_norm!r}: give numbers in (0, 1], e.g. 0.5,1") from None
    if any(not 0.0 < a <= 1.0 for a in shares):
        raise UserError(f"--adapt-norm {args.adapt_norm!r}: every value must lie in (0, 1]")
    if shares and base.model.norm != "batch":
        raise UserError(f"--adapt-norm needs a model with batch normalisation; {args.config} "
                        f"has model.norm={base.model.norm!r}")
    # what is scored on each fold's model: (morph_mix, adapt_norm share)
    settings = [(m, 0.0) for m in mixes] + [(own, a) for a in sorted(set(shares))]

    rows, folds_of = [], {}
    by_record: dict[str, dict] = {name: {} for name in names}
    by_database: list[dict] = []
    for name in names:
        pooled = {k: None for k in settings}
        per_fold = {k: [] for k in settings}
        # each mix's out-of-fold probabilities, beat by beat
        oof = {m: {"proba": [], "y": [], "record": [], "database": []} for m in mixes}
        for fold in range(args.folds):
            print(f"[{name} fold {fold + 1}/{args.folds}]", flush=True)
            run = Path(args.work) / (f"{name}-fold{fold}" + (f"-seed{args.seed}" if args.seed else ""))
            model, val = fold_model_and_table(base, {**VARIANTS[name], "train.seed": args.seed},
                                              args.folds, fold, run, args.quick,
                                              TRAIN_DATABASES.get(name, ()))
            folds_of[fold] = sorted(set(val.meta["record"].astype(str)))
            database = (val.meta["database"].astype(str).to_numpy() if "database" in val.meta
                        else np.full(len(val), "mitdb"))
            for key in settings:
                mix, share = key
                mixed = model.with_model(morph_mix=mix)
                if share:
                    proba = adapted_proba(mixed, val, share)
                    m = metrics.evaluate_predictions(val.y, proba, model.class_names)
                else:
                    m, proba = evaluate_table(mixed, val)
                if key == (own, 0.0):
                    by_record[name].update(record_recalls(val, proba.argmax(axis=1)))
                if not share:
                    for k, v in (("proba", proba), ("y", val.y),
                                 ("record", val.records.astype(str)), ("database", database)):
                        oof[mix][k].append(np.asarray(v, dtype=None if k in ("proba", "y") else str))
                cm = np.asarray(m["confusion_matrix"], np.int64)
                pooled[key] = cm if pooled[key] is None else pooled[key] + cm
                per_fold[key].append(m["nsv_recall"])
        # the out-of-fold probabilities, to score seeds' ensembles (experiments/crossval_seeds.py)
        for mix, arrays in oof.items():
            arrays = {k: np.concatenate(v) for k, v in arrays.items()}
            suffix = "" if mix == own else f"_mix{mix_label(mix)}"
            np.savez_compressed(Path(args.work) / f"oof_{name}_seed{args.seed}{suffix}.npz",
                                **arrays)
            if mix == own:
                by_database += database_scores(name, arrays, model.class_names)
        for key in settings:
            mix, share = key
            scores = metrics.nsv_scores(metrics.from_confusion(pooled[key], model.class_names))
            rows.append({"variant": name, "morph_mix": mix, "adapt_norm": share, **scores,
                         "folds_nsv_recall": per_fold[key],
                         "confusion_matrix": pooled[key].tolist()})
            print(f"[{name} mix {mix_label(mix)} adapt {share:g}] pooled "
                  + "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    out = Path(args.out)  # made only once every fold has trained and been scored
    out.mkdir(parents=True, exist_ok=True)
    result = {"config": args.config, "seed": args.seed, "folds": {str(k): v for k, v in folds_of.items()},
              "rows": rows, "databases": by_database, "records": by_record}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    text = (markdown(rows, folds_of) + database_markdown(by_database)
            + record_markdown(by_record, own))
    (out / "results.md").write_text(text)
    print(text)


def database_scores(variant: str, oof: dict[str, np.ndarray],
                    class_names: tuple[str, ...]) -> list[dict]:
    """N/S/V recall and S, V precision of the out-of-fold predictions in each database."""
    rows = []
    for database in sorted(set(oof["database"])):
        rows_of = oof["database"] == database
        m = metrics.evaluate_predictions(oof["y"][rows_of], oof["proba"][rows_of], class_names)
        rows.append({"variant": variant, "database": str(database),
                     "records": len(set(oof["record"][rows_of])),
                     **metrics.nsv_scores(metrics.from_confusion(
                         np.asarray(m["confusion_matrix"]), class_names))})
    return rows


def database_markdown(rows: list[dict]) -> str:
    """One line per variant and database (the config's own mix)."""
    lines = ["\nPer database (out of fold, the config's own mix):\n",
             "| variant | database | records | N/S/V recall | N | S (precision) | V (precision) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['variant']} | {r['database']} | {r['records']} | {r['nsv_recall']:.3f} | "
              f"{r['N_recall']:.3f} | {r['S_recall']:.3f} ({r['S_precision']:.3f}) | "
              f"{r['V_recall']:.3f} ({r['V_precision']:.3f}) |" for r in rows]
    return "\n".join(lines) + "\n"


def config_mix(config) -> tuple[float, ...]:
    """The config's evaluation-time mix (`model.morph_mix`)."""
    return tuple(config.model.morph_mix)


def parse_mix(text: str, num_classes: int) -> tuple[float, ...]:
    """'0.5' -> (0.5,); '0.75:0.75:0.4:0.75:0.75' -> one weight per class."""
    try:
        values = tuple(float(v) for v in text.split(":"))
    except ValueError:
        raise UserError(f"--mix {text!r}: give numbers in [0, 1), e.g. 0.5 or "
                        "0.75:0.75:0.4:0.75:0.75") from None
    if any(not 0.0 <= v < 1.0 for v in values):
        raise UserError(f"--mix {text!r}: every weight must lie in [0, 1)")
    if len(values) not in (1, num_classes):
        raise UserError(f"--mix {text!r}: one weight, or one per class ({num_classes})")
    return values


def mix_label(mix: tuple[float, ...]) -> str:
    return ":".join(f"{v:g}" for v in mix) or "0"


def markdown(rows: list[dict], folds_of: dict[int, list[str]]) -> str:
    """One line per training variant and evaluation-time mix: pooled out-of-fold scores."""
    folds = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(folds_of.items()))
    head = ("| variant | morph_mix | adapt_norm | N/S/V recall | N recall (precision) | "
            "S recall (precision) | V recall (precision) | per fold |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = [
        f"| {r['variant']} | {mix_label(r['morph_mix'])} | {r.get('adapt_norm', 0.0):g} | {r['nsv_recall']:.3f} | "
        f"{r['N_recall']:.3f} ({r['N_precision']:.3f}) | {r['S_recall']:.3f} ({r['S_precision']:.3f}) | "
        f"{r['V_recall']:.3f} ({r['V_precision']:.3f}) | "
        + " / ".join(f"{v:.3f}" for v in r["folds_nsv_recall"]) + " |"
        for r in rows
    ]
    return (f"Pooled out-of-fold predictions over the records (folds {folds}); the last "
            "column is each fold's N/S/V recall.\n\n" + head + "\n".join(lines) + "\n")


def record_markdown(by_record: dict[str, dict], mix: tuple[float, ...], least: int = 20) -> str:
    """S and V recall in each record holding at least `least` of that class, per variant."""
    names = list(by_record)
    records = sorted(next(iter(by_record.values())), key=str) if names else []
    lines = []
    for c in ("S", "V"):
        rich = [r for r in records if by_record[names[0]][r][c] >= least]
        lines.append(f"\n{c} recall in the records with at least {least} {c} beats (out of fold, "
                     f"morph_mix {mix_label(mix)}):\n\n| record | {c} beats | " + " | ".join(names)
                     + " |\n|---|---|" + "---|" * len(names))
        lines += [f"| {r} | {by_record[names[0]][r][c]} | "
                  + " | ".join(f"{by_record[n][r][c + '_recall']:.2f}" for n in names) + " |"
                  for r in rich]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
