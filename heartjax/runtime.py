"""Runtime settings of a process: the persistent XLA compilation cache."""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs across processes (trials, reruns): compiling the scanned
    epoch costs seconds, often more than a small trial's training. HEARTJAX_XLA_CACHE="" disables."""
    path = os.environ.get("HEARTJAX_XLA_CACHE", str(Path.home() / ".cache" / "heartjax" / "xla"))
    if path and jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
