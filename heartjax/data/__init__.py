"""Beat tables: read/validate/write them, split them, and build them from PhysioNet records.

Building needs wfdb/scipy and lives in `heartjax.data.physionet` (CLI: `python -m heartjax.data`).
"""

from heartjax.data.context import PARTS, context_features, context_width, needs_rr
from heartjax.data.splits import (
    add_training_beats,
    join_tables,
    stratified_split,
    train_val_split,
)
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
from heartjax.data.template import TEMPLATE_FEATURES, template_features

__all__ = [
    "CLASS_NAMES",
    "PARTS",
    "RR_COLUMNS",
    "SIGNAL_LEN",
    "TABLE_FILES",
    "TEMPLATE_FEATURES",
    "BeatTable",
    "add_training_beats",
    "context_features",
    "context_width",
    "join_tables",
    "load_dataset",
    "load_kaggle_ptb",
    "load_table",
    "needs_rr",
    "stratified_split",
    "template_features",
    "train_val_split",
    "write_table",
]
