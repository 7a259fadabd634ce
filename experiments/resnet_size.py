"""How deep and wide must the residual CNN be? Kachuee's resnet1d (5 blocks x 32 channels)
against shallower, narrower and wider versions, on MIT-BIH."""

from heartjax.cli import load_config
from heartjax.errors import cli_entry
from heartjax.experiment import CONFIGS, parse_args, run_variants

VARIANTS = {
    "5x32 (Kachuee)": {},
    "3x32": {"model.num_blocks": 3},
    "2x32": {"model.num_blocks": 2},
    "5x16": {"model.channels": 16},
    "5x64": {"model.channels": 64},
}


@cli_entry
def main() -> None:
    args = parse_args(__doc__, "runs/experiments/resnet_size")
    table = run_variants(load_config(f"{CONFIGS}/mitbih.py:resnet1d"), VARIANTS, args.out,
                         quick=args.quick, data_dir=args.data_dir, epochs=args.epochs)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
