"""Beat tables: read/validate/write them, split them, and build them from PhysioNet records.

Building needs wfdb/scipy and lives in `heartjax.data.physionet` (CLI: `python -m heartjax.data`).
"""

from heartjax.data.splits import stratified_split, train_val_split
from heartjax.data.tables import (
    CLASS_NAMES,
    RR_COLUMNS,
    SIGNAL_LEN,
    TABLE_FILES,
    BeatTable,
    load_dataset,
    load_kaggle_ptb,
    load_table,
    write_table,
)

__all__ = [
    "CLASS_NAMES",
    "RR_COLUMNS",
    "SIGNAL_LEN",
    "TABLE_FILES",
    "BeatTable",
    "load_dataset",
    "load_kaggle_ptb",
    "load_table",
    "stratified_split",
    "train_val_split",
    "write_table",
]
