"""Does the loss buy recall on the rare classes? Cross-entropy vs class-weighted CE vs focal
loss, for the default MIT-BIH resnet1d; the table shows each class's test recall."""

from heartjax.experiment import run_script

VARIANTS = {
    "ce": {"train.loss": "ce"},
    "weighted_ce": {"train.loss": "weighted_ce", "train.class_weight_power": 0.5},
    "weighted_ce_full": {"train.loss": "weighted_ce", "train.class_weight_power": 1.0},
    "focal": {"train.loss": "focal", "train.class_weight_power": 0.5},
}


if __name__ == "__main__":
    run_script(__doc__, "mitbih.py", VARIANTS, "runs/experiments/loss")
