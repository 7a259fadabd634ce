"""The search spaces the dataset configs tune over (syntax: `heartjax.space`).

`default_space()` searches the four architectures, each with its own knobs, the R-R and
template inputs and the training knobs; `default_space(["cnn2d"])` one architecture with its
extension knobs. The configs set `c.tune.search_space` from here and may edit the result.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

# The training knobs every search shares. Dropout and augmentation values are compiled into the
# program, so they are few: trials that repeat them reuse programs from the persistent cache.
TRAINING = {
    "learning_rate": ("loguniform", 3e-4, 3e-3),
    "weight_decay": ("loguniform", 1e-5, 1e-3),
    "optimizer": ("choice", ["adamw", "adam"]),
    "schedule": ("choice", ["cosine", "onecycle", "constant"]),
    "batch_size": ("choice", [64, 128, 256]),
    "loss": ("choice", ["weighted_ce", "focal", "ce"]),
    "class_weight_power": ("uniform", 0.25, 1.0),
    "augment": {
        "scale": ("choice", [0.0, 0.1, 0.2]),
        "noise": ("choice", [0.0, 0.01]),
        "shift": ("choice", [0, 3]),
    },
}

# Each architecture's own knobs, searched only when model.name picks it; every range builds, and
# the widest corner trains at >= ~500 beats/s on one core (a wider one would eat a cheap rung).
ARCHITECTURES = {
    "resnet1d": {
        "num_blocks": ("randint", 3, 5),  # 5 poolings of stride 2 leave 5 of 187 samples
        "channels": ("choice", [16, 32, 48]),
        "kernel_size": ("choice", [3, 5, 7]),
        "dropout": ("choice", [0.0, 0.1, 0.2]),
        "norm": ("choice", ["none", "batch"]),
        "head_hidden": ("choice", [(32, 32), (64,), (128, 64)]),
    },
    "cnn1d": {
        "num_blocks": ("randint", 2, 4),
        "channels": ("choice", [16, 32]),
        "width_mult": ("choice", [1.0, 1.5, 2.0]),
        "kernel_size": ("choice", [3, 5, 7]),
        "dropout": ("choice", [0.0, 0.1, 0.2, 0.3]),
        "global_pool": ("choice", ["max", "mean"]),
        "head_hidden": ("choice", [(64,), (128,)]),
    },
    "cnn2d": {
        "channels": ("choice", [16, 32]),
        "num_blocks": ("randint", 1, 3),
        "width_mult": ("choice", [1.0, 2.0]),
        "kernel_size": ("choice", [3, 5]),
        "norm": ("choice", ["none", "batch"]),
        "dropout": ("choice", [0.0, 0.25, 0.5]),
        "head_hidden": ("choice", [(128,), (512,)]),
    },
    "transformer": {  # the stem stride sets the cost: 187 / stride tokens
        "hidden": ("choice", [32, 64]),
        "num_heads": ("choice", [2, 4]),
        "num_blocks": ("randint", 1, 3),
        "stem_stride": ("choice", [4, 6, 8]),
        "dropout": ("choice", [0.0, 0.1, 0.2]),
        "pre_norm": ("choice", [False, True]),
    },
}


def default_space(models: Sequence[str] = tuple(ARCHITECTURES), context: bool = True) -> dict:
    """`models` (model.name searched when more than one) with their own knobs, the R-R and
    template inputs (`context`: tables with R-R columns, as MIT-BIH's), and the training knobs."""
    model: dict = {}
    if context:
        model["context"] = ("choice", [("rr", "template"), ("rr",), ()])
    if len(models) > 1:
        model["name"] = ("choice", list(models))
        model.update({m: copy.deepcopy(ARCHITECTURES[m]) for m in models})
    else:  # one model: its original values join the choices, so a search can start from it
        model[models[0]] = with_defaults(models[0], ARCHITECTURES[models[0]])
    return {"model": model, "train": copy.deepcopy(TRAINING)}


def with_defaults(name: str, knobs: dict) -> dict:
    """`knobs` of model `name` with the model's default value added to each choice."""
    from heartjax.models import default_model_config

    defaults = default_model_config(name)
    out = {}
    for field, (kind, *args) in knobs.items():
        if kind == "choice" and defaults[field] not in args[0]:
            values = [*args[0], defaults[field]]
            try:
                values = sorted(values)
            except TypeError:  # tuples beside numbers: keep the order
                pass
            args = [values, *args[1:]]
        elif kind == "randint":
            args = [min(args[0], defaults[field]), max(args[1], defaults[field])]
        out[field] = (kind, *args)
    return out


def interpatient_space() -> dict:
    """The new-patient search (`configs/mitbih.py:tune_interpatient`): the resnet1d's own knobs,
    how much of the training sees only rhythm (morphology dropout and the evaluation mix), whether
    the head sees the R-R intervals in seconds, the class and record balance, and the
    augmentations that mimic another recorder (amplitude, noise, baseline wander, time shift and
    warp)."""
    train = copy.deepcopy(TRAINING)
    for field in ("optimizer", "schedule", "loss", "batch_size"):  # settled: adamw, cosine, weighted_ce
        del train[field]
    train["class_weight_power"] = ("uniform", 0.5, 1.0)
    train["class_weight_cap"] = ("choice", [10.0, 50.0, 200.0])
    train["record_balance"] = ("choice", [0.0, 0.5, 1.0])
    train["augment"] = {
        "scale": ("choice", [0.0, 0.1, 0.2]),
        "noise": ("choice", [0.0, 0.01, 0.03]),
        "wander": ("choice", [0.0, 0.05, 0.1]),
        "shift": ("choice", [0, 3]),
        "stretch": ("choice", [0.0, 0.05]),
    }
    model = {
        "morph_dropout": ("choice", [0.6, 0.7, 0.8, 0.9]),
        "morph_mix": ("choice", [(0.25,), (0.5,), (0.75,)]),
        "rr_seconds": ("choice", [False, True]),
        "resnet1d": with_defaults("resnet1d", ARCHITECTURES["resnet1d"]),
    }
    return {"model": model, "train": train}
