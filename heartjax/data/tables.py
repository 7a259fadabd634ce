"""Read, validate and write beat tables (187 samples at 125 Hz + a class label per row)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from heartjax.errors import UserError

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mitbih": ("N", "S", "V", "F", "Q"),
    "ptb": ("normal", "abnormal"),
}
TABLE_FILES: dict[str, tuple[str, str]] = {
    "mitbih": ("heart_big_train.parq", "heart_big_test.parq"),
    "ptb": ("heart_train.parq", "heart_test.parq"),
}
SIGNAL_LEN = 187
FS = 125  # Hz, the sampling rate of every beat table
SIGNAL_COLUMNS = tuple(str(i) for i in range(SIGNAL_LEN))
TARGET_COLUMN = "target"
RR_COLUMNS = ("rr_prev", "rr_next", "rr_local", "rr_record")
PARQUET_SUFFIXES = (".parq", ".parquet")


@dataclass(frozen=True, eq=False)  # arrays have no single truth value: compare by identity
class BeatTable:
    """Beats `x` (N, 187) float32 with labels `y` (N,) int32 and per-beat extra columns `meta`."""

    x: np.ndarray
    y: np.ndarray
    dataset: str
    path: str = ""
    meta: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    def __post_init__(self) -> None:
        # Catch shape bugs at construction rather than deep inside a training step.
        if self.x.ndim != 2 or self.x.shape[1] != SIGNAL_LEN:
            raise ValueError(f"x must be (N, {SIGNAL_LEN}), got {self.x.shape}")
        if self.y.shape != (self.x.shape[0],):
            raise ValueError(f"y must be ({self.x.shape[0]},), got {self.y.shape}")
        if self.dataset not in CLASS_NAMES:
            raise ValueError(f"unknown dataset {self.dataset!r}")
        if len(self.meta.columns) and len(self.meta) != len(self.y):
            raise ValueError(f"meta has {len(self.meta)} rows for {len(self.y)} beats")
        if not len(self.meta.columns):
            object.__setattr__(self, "meta", pd.DataFrame(index=pd.RangeIndex(len(self.y))))

    @property
    def rr(self) -> np.ndarray | None:
        """R-R features (N, 4) float32 in seconds, or None when the table lacks an RR column."""
        if not all(c in self.meta.columns for c in RR_COLUMNS):
            return None
        return self.meta[list(RR_COLUMNS)].to_numpy(dtype=np.float32)

    @property
    def records(self) -> np.ndarray | None:
        """The record each beat comes from, or None when the table has no `record` column."""
        return self.meta["record"].to_numpy() if "record" in self.meta.columns else None

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the classes, indexed by label."""
        return CLASS_NAMES[self.dataset]

    def subset(self, idx: np.ndarray) -> BeatTable:
        """The rows `idx` (integer indices or a boolean mask) as a new table."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        meta = self.meta.iloc[idx].reset_index(drop=True)
        return BeatTable(self.x[idx], self.y[idx], self.dataset, self.path, meta)

    def __len__(self) -> int:
        return len(self.y)


def record_rows(n: int, records: np.ndarray | None) -> list[np.ndarray]:
    """The row indices of each recording among `n` beats, in order of first appearance (all
    rows when `records` is None: the beats of one recording)."""
    if records is None:
        return [np.arange(n)]
    return list(pd.Series(np.asarray(records)).groupby(np.asarray(records), sort=False).indices.values())


def infer_dataset(path: str | Path, labels: np.ndarray | None = None) -> str:
    """Guess the dataset from the file name, else from the largest label."""
    name = Path(path).name.lower()
    if "big" in name or "mitbih" in name:
        return "mitbih"
    if "ptb" in name or "heart_train" in name or "heart_test" in name:
        return "ptb"
    if labels is not None and len(labels) and np.nanmax(labels) > 1:
        return "mitbih"
    return "ptb"


def _check_dataset(dataset: str) -> None:
    if dataset not in CLASS_NAMES:
        raise UserError(f"unknown dataset {dataset!r}: use one of {', '.join(CLASS_NAMES)}")


def _read_frame(path: Path) -> pd.DataFrame:
    """Read a parquet or Kaggle CSV file into a frame with columns "0".."186", "target", ..."""
    if not path.exists():
        raise UserError(f"{path}: file not found; check the path or build it with "
                        "`python -m heartjax.data build ...`")
    if not path.is_file():
        raise UserError(f"{path}: is not a file; give the path of a .parq or .csv beat table")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix not in PARQUET_SUFFIXES:
        raise UserError(f"{path}: unknown file type {suffix!r}; use a .parq/.parquet or "
                        "Kaggle .csv table")
    try:
        return pd.read_parquet(path)
    except PermissionError:
        raise UserError(f"{path}: permission denied; make the file readable") from None
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for a damaged file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable parquet file ({reason}); "
                        "re-create it with `python -m heartjax.data build ...`") from None


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a Kaggle-style CSV: no header, 187 signal values then the label."""
    try:
        frame = pd.read_csv(path, header=None)
    except PermissionError:
        raise UserError(f"{path}: permission denied; make the file readable") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: the CSV file is empty; it needs {SIGNAL_LEN + 1} "
                        "comma-separated columns per row") from None
    except Exception as e:  # noqa: BLE001 - any failure here is a bad input file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a readable CSV file ({reason})") from None
    if frame.shape[1] != SIGNAL_LEN + 1:
        raise UserError(f"{path}: the CSV has {frame.shape[1]} columns, expected {SIGNAL_LEN + 1} "
                        f"({SIGNAL_LEN} signal values then the label, no header)")
    frame.columns = list(SIGNAL_COLUMNS) + [TARGET_COLUMN]
    return frame


def _numeric(frame: pd.DataFrame, columns: list[str], path: Path, what: str) -> np.ndarray:
    """The columns as float64, or a UserError naming the first non-numeric column."""
    try:
        return frame[columns].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        for c in columns:
            if not pd.api.types.is_numeric_dtype(frame[c]):
                raise UserError(f"{path}: {what} column {c!r} is not numeric "
                                f"(dtype {frame[c].dtype}); the table must hold numbers") from None
        raise


def table_from_frame(frame: pd.DataFrame, path: str | Path,
                     dataset: str | None = None) -> BeatTable:
    """Validate a frame in beat-table layout and turn it into a `BeatTable`."""
    path = Path(path)
    columns = [str(c) for c in frame.columns]
    frame = frame.set_axis(columns, axis=1).reset_index(drop=True)  # the index carries no meaning
    missing = [c for c in SIGNAL_COLUMNS if c not in columns]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise UserError(f"{path}: {len(missing)} of the {SIGNAL_LEN} signal columns "
                        f"\"0\"..\"{SIGNAL_LEN - 1}\" are missing ({shown}); "
                        f"a beat table needs all {SIGNAL_LEN} samples per beat")
    if TARGET_COLUMN not in columns:
        raise UserError(f"{path}: no {TARGET_COLUMN!r} column; add the class label of each beat "
                        f"as a column named {TARGET_COLUMN!r}")
    if len(frame) == 0:
        raise UserError(f"{path}: the table has no rows; rebuild it from the raw records")

    x = _numeric(frame, list(SIGNAL_COLUMNS), path, "signal")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise UserError(f"{path}: {int(bad.sum())} signal values are NaN or infinite "
                        f"(first at row {row}, column \"{col}\"); drop or repair those beats")
    labels = _numeric(frame, [TARGET_COLUMN], path, "label")[:, 0]
    bad = ~np.isfinite(labels)
    if bad.any():
        raise UserError(f"{path}: {int(bad.sum())} labels are NaN or infinite "
                        f"(first at row {int(np.argmax(bad))}); every beat needs a class label")
    bad = labels != np.round(labels)
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(f"{path}: label {labels[row]:g} at row {row} is not an integer; "
                        f"labels must be whole class ids")

    dataset = infer_dataset(path, labels) if dataset is None else dataset
    _check_dataset(dataset)
    names = CLASS_NAMES[dataset]
    bad = (labels < 0) | (labels >= len(names))
    if bad.any():
        row = int(np.argmax(bad))
        raise UserError(f"{path}: label {labels[row]:g} at row {row} is out of range for "
                        f"{dataset} (0..{len(names) - 1} = {', '.join(names)}); "
                        f"pass the right --dataset or fix the labels")

    meta = frame.drop(columns=list(SIGNAL_COLUMNS) + [TARGET_COLUMN])
    rr_present = [c for c in RR_COLUMNS if c in meta.columns]
    if rr_present:
        rr = _numeric(meta, rr_present, path, "R-R")
        if not np.isfinite(rr).all():
            raise UserError(f"{path}: R-R columns {rr_present} hold NaN or infinite values; "
                            "rebuild the table from the raw records")
    return BeatTable(x.astype(np.float32), labels.astype(np.int32), dataset, str(path), meta)


def concat_tables(tables: list[BeatTable], dataset: str) -> BeatTable:
    """One table from several (same dataset)."""
    if not tables:
        return BeatTable(np.zeros((0, SIGNAL_LEN), np.float32), np.zeros(0, np.int32), dataset)
    meta = pd.concat([t.meta for t in tables], ignore_index=True)
    return BeatTable(np.concatenate([t.x for t in tables]), np.concatenate([t.y for t in tables]),
                     dataset, "", meta)


def load_table(path: str | Path, dataset: str | None = None) -> BeatTable:
    """Read and validate a beat table (.parq/.parquet, or a Kaggle-style headerless .csv)."""
    if dataset is not None:
        _check_dataset(dataset)
    path = Path(path)
    return table_from_frame(_read_frame(path), path, dataset)


def load_dataset(data_dir: str | Path, dataset: str, split: str) -> BeatTable:
    """Load the course-named `train` or `test` table of `dataset` from `data_dir`."""
    _check_dataset(dataset)
    if split not in ("train", "test"):
        raise UserError(f"unknown split {split!r}: use 'train' or 'test'")
    path = Path(data_dir) / TABLE_FILES[dataset][0 if split == "train" else 1]
    if not path.exists():
        how = (f"`python -m heartjax.data build mitbih --raw ../shared/data/physionet/mitdb "
               f"--out {data_dir}`" if dataset == "mitbih" else
               f"`python -m heartjax.data build ptb --raw PTBDB_DIR --out {data_dir}` "
               "(or copy the course files there)")
        raise UserError(f"{path}: {dataset} {split} table not found; build it with {how}")
    return load_table(path, dataset)


def load_kaggle_ptb(normal_csv: str | Path, abnormal_csv: str | Path) -> BeatTable:
    """Load Kaggle's ptbdb_normal.csv + ptbdb_abnormal.csv as one PTB table."""
    parts = []
    for path, label in ((Path(normal_csv), 0), (Path(abnormal_csv), 1)):
        table = load_table(path, "ptb")
        if (table.y != label).any():
            raise UserError(f"{path}: expected only label {label} "
                            f"({CLASS_NAMES['ptb'][label]}) in this file; "
                            "are the normal and abnormal files swapped?")
        parts.append(table)
    meta = pd.DataFrame({"source": np.repeat([p.path for p in parts], [len(p) for p in parts])})
    x = np.concatenate([p.x for p in parts])
    y = np.concatenate([p.y for p in parts])
    return BeatTable(x, y, "ptb", "", meta)


def to_frame(table: BeatTable) -> pd.DataFrame:
    """The table as a frame: "0".."186", "target", then the meta columns."""
    signal = pd.DataFrame(table.x.astype(np.float32), columns=list(SIGNAL_COLUMNS))
    # Float labels, as in the course files, so both kinds of table read back the same way.
    signal[TARGET_COLUMN] = table.y.astype(np.float64)
    return pd.concat([signal, table.meta.reset_index(drop=True)], axis=1)


def write_table(table_or_df: BeatTable | pd.DataFrame, path: str | Path) -> None:
    """Write a beat table as parquet: columns "0".."186", "target", then the extra columns."""
    if isinstance(table_or_df, BeatTable):
        frame = to_frame(table_or_df)
    else:
        frame = table_or_df.set_axis([str(c) for c in table_or_df.columns], axis=1)
        missing = [c for c in (*SIGNAL_COLUMNS, TARGET_COLUMN) if c not in frame.columns]
        if missing:
            raise ValueError(f"frame lacks beat-table columns {missing[:5]}")
        first = [*SIGNAL_COLUMNS, TARGET_COLUMN]
        frame = frame[first + [c for c in frame.columns if c not in first]]
        frame = frame.reset_index(drop=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        frame.to_parquet(path, index=False)
    except OSError as e:
        raise UserError(f"{path}: cannot write the table ({e.strerror or e}); "
                        "choose a writable --out folder") from None
