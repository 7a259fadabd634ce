"""Does the loss buy recall on the rare classes? Cross-entropy vs class-weighted CE vs focal
loss, for the default MIT-BIH resnet1d; the table shows each class's test recall."""

from heartjax.cli import load_config
from heartjax.errors import cli_entry
from heartjax.experiment import CONFIGS, parse_args, run_variants

VARIANTS = {
    "ce": {"train.loss": "ce"},
    "weighted_ce": {"train.loss": "weighted_ce", "train.class_weight_power": 0.5},
    "weighted_ce_full": {"train.loss": "weighted_ce", "train.class_weight_power": 1.0},
    "focal": {"train.loss": "focal", "train.class_weight_power": 0.5},
}


@cli_entry
def main() -> None:
    args = parse_args(__doc__, "runs/experiments/loss")
    table = run_variants(load_config(f"{CONFIGS}/mitbih.py"), VARIANTS, args.out,
                         quick=args.quick, data_dir=args.data_dir, epochs=args.epochs)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
