"""heartjax: train and tune ECG heartbeat classifiers (MIT-BIH, PTB) in JAX."""

from __future__ import annotations

__version__ = "0.1.0"


def load_checkpoint(path):
    """Load the best checkpoint at `path` (step folder, train workdir or tune run), or a model
    that ships with heartjax by its name: "interpatient", the new-patient beat classifier
    `heartjax.annotate` uses (the ensemble of its seeds; `heartjax.pretrained`)."""
    from heartjax.pretrained import load  # keep `import heartjax` light

    return load([path])


def load_ensemble(paths):
    """Several trained models as one (the mean of their probabilities): `load_checkpoint` each."""
    from heartjax.checkpoint import load_ensemble as _load

    return _load(paths)


def annotate_record(model, record, lead=None, fs=None):
    """Every beat of the raw recording at `record` (WFDB, EDF, CSV or NumPy; `fs`: the rate of a
    CSV or NumPy file), detected and labelled by `model`."""
    from heartjax.annotate import annotate_record as _annotate

    return _annotate(model, record, lead, fs=fs)


__all__ = ["annotate_record", "load_checkpoint", "load_ensemble", "__version__"]
