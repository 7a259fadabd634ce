"""heartjax: train and tune ECG heartbeat classifiers (MIT-BIH, PTB) in JAX."""

from __future__ import annotations

__version__ = "0.1.0"


def load_checkpoint(path):
    """Load the best checkpoint at `path` (step folder, train workdir or tune run)."""
    from heartjax.checkpoint import load_checkpoint as _load  # keep `import heartjax` light

    return _load(path)


__all__ = ["load_checkpoint", "__version__"]
