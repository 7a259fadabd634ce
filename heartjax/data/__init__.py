"""Beat tables: read/validate/write them, split them, and build them from PhysioNet records.

Building needs wfdb/scipy and lives in `heartjax.data.physionet` (CLI: `python -m heartjax.data`).
"""

from heartjax.data.context import CONTEXT_COLUMNS, CONTEXT_WIDTH, context_features
from heartjax.data.rhythm import RHYTHM_FEATURES, irregular_copies, rhythm_features
from heartjax.data.splits import add_training_beats, stratified_split, train_val_split
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
from heartjax.data.template import (
    SIZE_FEATURES,
    TEMPLATE_FEATURES,
    median_difference,
    size_features,
    template_features,
)

__all__ = [
    "CLASS_NAMES",
    "CONTEXT_COLUMNS",
    "CONTEXT_WIDTH",
    "RHYTHM_FEATURES",
    "RR_COLUMNS",
    "SIGNAL_LEN",
    "SIZE_FEATURES",
    "TABLE_FILES",
    "TEMPLATE_FEATURES",
    "BeatTable",
    "add_training_beats",
    "context_features",
    "irregular_copies",
    "load_dataset",
    "load_kaggle_ptb",
    "load_table",
    "median_difference",
    "rhythm_features",
    "size_features",
    "stratified_split",
    "template_features",
    "train_val_split",
    "write_table",
]
