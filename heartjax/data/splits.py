"""Seeded stratified splits of beats, and the MIT-BIH record-level splits (kaggle, interpatient)."""

from __future__ import annotations

import numpy as np

from heartjax.data.tables import BeatTable, concat_tables
from heartjax.errors import UserError

SPLITS = ("kaggle", "interpatient", "none")

# de Chazal, O'Dwyer, Reilly 2004: the paced records are left out of both halves.
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124",
       "201", "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212",
       "213", "214", "219", "221", "222", "228", "231", "232", "233", "234")
PACED = ("102", "104", "107", "217")


def check_fraction(fraction: float, name: str = "fraction") -> float:
    """`fraction` as a float if it lies strictly between 0 and 1, else a UserError."""
    try:
        value = float(fraction)
    except (TypeError, ValueError):
        raise UserError(f"{name} {fraction!r} is not a number; use a value between 0 and 1"
                        ) from None
    if not 0.0 < value < 1.0:
        raise UserError(f"{name} {fraction!r} must lie strictly between 0 and 1 (e.g. 0.2)")
    return value


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (keep, held_out) with `fraction` of every class held out."""
    fraction = check_fraction(fraction)
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for label in np.unique(y):  # sorted, so the draws depend only on the seed and the labels
        rows = rng.permutation(np.flatnonzero(y == label))
        n_held = round(len(rows) * fraction)
        if len(rows) >= 2:
            # A rare class must appear on both sides, or its metrics are undefined on one.
            n_held = min(max(n_held, 1), len(rows) - 1)
        else:
            n_held = 0
        held.append(rows[:n_held])
        keep.append(rows[n_held:])
    keep_idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    return keep_idx.astype(np.int64), held_idx.astype(np.int64)


VAL_BY = ("beats", "records")


def train_val_split(table: BeatTable, val_fraction: float, seed: int, by: str = "beats",
                    folds: int = 0, fold: int = 0) -> tuple[BeatTable, BeatTable]:
    """Carve a seeded validation part out of a training table: stratified beats, or whole
    records (`by="records"`), so that validation, like an interpatient test, meets unseen
    patients and model selection stops rewarding a fit to the training patients.

    `folds` >= 2 (with `by="records"`): the records are dealt into that many folds
    (`record_folds`) and fold number `fold` validates; `val_fraction` and `seed` are not used.
    """
    check_fraction(val_fraction, "validation fraction")
    if folds and by != "records":
        raise UserError(f"data.folds={folds} needs data.val_by='records' (folds are whole records)")
    if by == "beats":
        train_idx, val_idx = stratified_split(table.y, val_fraction, seed)
    elif by == "records":
        if "record" not in table.meta.columns:
            raise UserError(f"{table.path or 'the training table'}: data.val_by='records' needs a "
                            "'record' column; rebuild the table with `python -m heartjax.data build` "
                            "or use data.val_by='beats'")
        records = table.meta["record"].to_numpy()
        if folds:
            databases = table.meta["database"].to_numpy() if "database" in table.meta else None
            which = record_folds(records, table.y, folds, databases)
            if not 0 <= fold < folds:
                raise UserError(f"data.fold={fold} must be in 0..{folds - 1} (data.folds={folds})")
            train_idx, val_idx = np.flatnonzero(which != fold), np.flatnonzero(which == fold)
        else:
            train_idx, val_idx = record_holdout(records, table.y, val_fraction, seed)
    else:
        raise UserError(f"data.val_by={by!r}; use one of {', '.join(VAL_BY)}")
    return table.subset(train_idx), table.subset(val_idx)


def record_holdout(records: np.ndarray, y: np.ndarray, fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, held_out) rows by whole records, stratified by each record's most common
    arrhythmia (class 0, normal, is in every record) so held-out patients show it too."""
    records = np.asarray(records).astype(str)
    if len(np.unique(records)) < 2:
        raise UserError("data.val_by='records' needs at least 2 records in the training table")
    keep, held = group_split(records, y, fraction, seed, ignore=0)
    if len(held) == 0:  # every stratum had one record: hold out one at random
        held_name = np.random.default_rng(seed).choice(np.unique(records))
        keep, held = np.flatnonzero(records != held_name), np.flatnonzero(records == held_name)
    return keep, held


def record_folds(records: np.ndarray, y: np.ndarray, folds: int,
                 databases: np.ndarray | None = None) -> np.ndarray:
    """Fold number (0..folds-1) of every row, by whole records: the records are sorted by
    their count of class 1 beats, then of class 2 and so on (MIT-BIH: S, then V; the rare
    classes a fold must show), and dealt in snake order (0, 1, .., k-1, k-1, .., 0, 0, ..), so
    every fold gets one of the k richest records and the folds' counts stay close. With
    `databases` (each row's database), each database's records are dealt in turn, the snake
    going on where the last one stopped: every fold holds records of every database.
    Deterministic: each record validates exactly once over the folds."""
    records = np.asarray(records).astype(str)
    if databases is not None:  # a record is a (database, record) pair
        databases = np.asarray(databases).astype(str)
        records = np.char.add(np.char.add(databases, "/"), records)
    names, inverse = np.unique(records, return_inverse=True)
    if not 2 <= folds <= len(names):
        raise UserError(f"data.folds={folds} needs between 2 and {len(names)} (the number of "
                        "records in the training table)")
    counts = np.zeros((len(names), int(np.max(y)) + 1), np.int64)
    np.add.at(counts, (inverse, np.asarray(y)), 1)
    database = [n.rpartition("/")[0] for n in names]
    order = sorted(range(len(names)), key=lambda g: (database[g], *(-counts[g, 1:]), names[g]))
    snake = [i % folds if (i // folds) % 2 == 0 else folds - 1 - i % folds
             for i in range(len(names))]
    fold_of = np.zeros(len(names), np.int64)
    fold_of[order] = snake
    return fold_of[inverse]


def group_split(groups: np.ndarray, y: np.ndarray, fraction: float, seed: int,
                ignore: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into (keep, held_out) by whole groups (patients), stratified by group label:
    its most common beat label (patients rarely mix diagnoses), not counting the label
    `ignore` when the group has others."""
    groups = np.asarray(groups)
    names, inverse = np.unique(groups, return_inverse=True)
    num_classes = int(np.max(y)) + 1
    group_y = np.zeros(len(names), np.int64)
    for g in range(len(names)):
        counts = np.bincount(y[inverse == g], minlength=num_classes)
        if ignore is not None and counts.sum() > counts[ignore]:
            counts[ignore] = 0
        group_y[g] = counts.argmax()
    _, held_groups = stratified_split(group_y, fraction, seed)
    held = np.isin(inverse, held_groups)
    return np.flatnonzero(~held), np.flatnonzero(held)


def record_split(records: np.ndarray, y: np.ndarray, split: str, fraction: float,
                 seed: int) -> dict[str, np.ndarray]:
    """Row indices per output part ("train"/"test" or "all") for an MIT-BIH split name."""
    records = np.asarray(records).astype(str)
    if split == "none":
        return {"all": np.arange(len(records))}
    if split == "kaggle":
        train, test = stratified_split(y, fraction, seed)
        return {"train": train, "test": test}
    if split == "interpatient":
        return {"train": np.flatnonzero(np.isin(records, DS1)),
                "test": np.flatnonzero(np.isin(records, DS2))}
    raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def join_tables(tables: list[BeatTable]) -> BeatTable:
    """Several databases' tables as one training table: each needs `record` and `database`
    columns (`heartjax.data build`), the same columns and dataset, and no record name may stand
    for two databases' patients."""
    owner: dict[str, str] = {}
    for t in tables:
        missing = [c for c in ("record", "database") if c not in t.meta.columns]
        if missing:
            raise UserError(f"{t.path}: data.train_files needs the columns record and database "
                            f"(it lacks {', '.join(missing)}); rebuild it with `python -m "
                            "heartjax.data build mitbih|wfdb`")
        if t.dataset != tables[0].dataset or set(t.meta.columns) != set(tables[0].meta.columns):
            raise UserError(f"{t.path}: its dataset or columns differ from {tables[0].path}'s; "
                            "build every table of data.train_files with `python -m "
                            "heartjax.data build` and the same options")
        for record, database in t.meta[["record", "database"]].drop_duplicates().to_numpy():
            if owner.setdefault(str(record), str(database)) != str(database):
                raise UserError(f"{t.path}: record {record} of {database} has the name of a "
                                f"record of {owner[str(record)]}; list each table of "
                                "data.train_files once, and databases whose record names differ")
    columns = list(tables[0].meta.columns)
    joined = [BeatTable(t.x, t.y, t.dataset, t.path, t.meta[columns]) for t in tables]
    table = concat_tables(joined, tables[0].dataset)
    return BeatTable(table.x, table.y, table.dataset, " + ".join(t.path for t in tables),
                     table.meta)


def add_training_beats(train: BeatTable, val: BeatTable, extra: BeatTable) -> BeatTable:
    """`train` plus the beats of `extra` (the same records seen another way, e.g. through
    their second lead) whose records are not in `val`, so validation stays unseen patients."""
    for t in (train, val, extra):
        if "record" not in t.meta.columns:
            raise UserError(f"{t.path or 'a training table'}: data.extra_train needs a 'record' "
                            "column in both tables; rebuild them with `python -m heartjax.data build`")
    if extra.dataset != train.dataset:
        raise UserError(f"{extra.path}: holds {extra.dataset} beats, the training table "
                        f"{train.dataset}")
    missing = sorted(set(train.meta.columns) - set(extra.meta.columns))
    if missing:
        raise UserError(f"{extra.path}: lacks the columns {', '.join(missing)} of the training "
                        "table; build both with the same `python -m heartjax.data build` options")
    held = extra.meta["record"].astype(str).isin(set(val.meta["record"].astype(str)))
    extra = extra.subset(np.flatnonzero(~held.to_numpy()))
    meta = extra.meta[list(train.meta.columns)].reset_index(drop=True)
    # a record's template is the median of its beats: one per lead, not one of both leads
    meta["record"] = meta["record"].astype(str) + "+" + (
        meta["lead"].astype(str) if "lead" in meta.columns else "extra")
    extra = BeatTable(extra.x, extra.y, extra.dataset, extra.path, meta)
    return concat_tables([train, extra], train.dataset)
