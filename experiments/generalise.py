"""What carries a beat classifier to new patients and new recorders? Each row adds one thing to
the MIT-BIH resnet1d: the beat window alone, the R-R features as a second input, morphology
dropout (most training beats show the head only their R-R features; evaluation averages the
predictions with and without the shape), the template features (how much the beat's QRS looks
like its record's median QRS) and the beat augmentations (amplitude scaling, noise, baseline
wander, time shift and warp). Run it on both splits: the default (kaggle tables, base
`configs/mitbih.py:best`) and
`--config configs/mitbih.py:interpatient` (DS1 -> DS2, its own class balancing). Other leads,
sampling rates and equipment: `experiments/proxies.py`."""

from heartjax.experiment import run_script

AUGMENT = {"train.augment.scale": 0.1, "train.augment.noise": 0.01, "train.augment.wander": 0.05,
           "train.augment.shift": 3, "train.augment.stretch": 0.05}
RR = {"model.context": ("rr",)}
DROP = {"model.morph_dropout": 0.8, "model.morph_mix": (0.5,)}
NO_DROP = {"model.morph_dropout": 0.0, "model.morph_mix": ()}
TEMPLATE = {"model.context": ("rr", "template")}
VARIANTS = {
    "beat_only": {"model.context": (), **NO_DROP},
    "beat_rr": {**RR, **NO_DROP},
    "rr_morph_dropout": {**RR, **DROP},
    "rr_morph_dropout_template": {**TEMPLATE, **DROP},
    "rr_morph_dropout_template_augment": {**TEMPLATE, **DROP, **AUGMENT},
}


if __name__ == "__main__":
    run_script(__doc__, "mitbih.py:best", VARIANTS, "runs/experiments/generalise")
