"""What carries a beat classifier to new patients and new recorders? Each row adds one thing to
the MIT-BIH resnet1d: the beat window alone, the R-R features as a second input, morphology
dropout (most training beats show the head only their R-R features) and the beat augmentations
(amplitude scaling, noise, baseline wander, time shift and warp). Run it on both splits:
the default (kaggle tables, base `configs/mitbih.py:best`) and
`--config configs/mitbih.py:interpatient` (DS1 -> DS2, its own class balancing)."""

from heartjax.experiment import run_script

AUGMENT = {"train.augment.scale": 0.1, "train.augment.noise": 0.01, "train.augment.wander": 0.05,
           "train.augment.shift": 3, "train.augment.stretch": 0.05}
VARIANTS = {
    "beat_only": {"model.use_rr": False, "model.morph_dropout": 0.0},
    "beat_rr": {"model.use_rr": True, "model.morph_dropout": 0.0},
    "rr_morph_dropout": {"model.use_rr": True, "model.morph_dropout": 0.8},
    "rr_morph_dropout_augment": {"model.use_rr": True, "model.morph_dropout": 0.8, **AUGMENT},
}


if __name__ == "__main__":
    run_script(__doc__, "mitbih.py:best", VARIANTS, "runs/experiments/generalise")
