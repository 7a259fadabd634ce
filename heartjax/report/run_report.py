"""The report's data type: what the report says about one run (built by `build`, written by
`markdown`, `overview` and `pdf`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from heartjax.report.runs import Run


@dataclass
class RunReport:
    """Everything the report says about one run."""

    run: Run
    table: pd.DataFrame
    notes: list[str]
    plots: dict[str, Path]
    test_path: Path
    test_counts: dict[str, int] | None  # None: no test table
    operating: dict[str, Any] | None
    losses: list[tuple[str, pd.DataFrame]]
    comparison: pd.DataFrame | None = None  # the untuned original beside the tuned winner
