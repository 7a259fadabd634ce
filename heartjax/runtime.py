"""Runtime settings of a process: the persistent XLA compilation cache; what it computes on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jaxlib


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs across processes (trials, reruns): compiling the scanned
    epoch costs seconds, often more than a small trial's training. HEARTJAX_XLA_CACHE="" disables."""
    path = os.environ.get("HEARTJAX_XLA_CACHE", str(Path.home() / ".cache" / "heartjax" / "xla"))
    if path and jax.config.jax_compilation_cache_dir != path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def device_info() -> dict[str, Any]:
    """What JAX computes on in this process: backend ("cpu", "gpu", "tpu"), the device kind
    (e.g. "NVIDIA H100 80GB HBM3"; several joined by ", "), the device count and versions."""
    devices = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": ", ".join(sorted({d.device_kind for d in devices})),
        "device_count": len(devices),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
    }
