"""Does MIT-BIH pre-training help PTB (Kachuee et al. 2018)? The resnet1d trained on MIT-BIH,
fine-tuned on the real PTB beats (all layers, or only the head), against PTB from scratch."""

from pathlib import Path

from heartjax.cli import load_config
from heartjax.errors import UserError, cli_entry
from heartjax.experiment import CONFIGS, parse_args, quick_overrides, run_variants

VARIANTS = {
    "scratch": {},
    "finetune_all": {"train.trainable": "all"},
    "finetune_head": {"train.trainable": "head", "train.learning_rate": 3e-3},
}


def pretrain(args, out: Path) -> str:
    """The MIT-BIH source model: `--source` when given, else trained here once."""
    if args.source:
        return args.source
    source = out / "mitbih_source"
    if (source / "best.json").exists():
        return str(source)
    from heartjax.train import train_and_evaluate

    config = load_config(f"{CONFIGS}/mitbih.py:resnet1d")
    config.data.dir = args.mitbih_dir
    if args.quick:
        quick_overrides(config)
    print(f"[source] training resnet1d on MIT-BIH tables in {args.mitbih_dir}", flush=True)
    train_and_evaluate(config, source, progress=False, overwrite=True)
    return str(source)


@cli_entry
def main() -> None:
    args = parse_args(__doc__, "runs/experiments/transfer", extra=[
        ("--source", dict(default=None, help="trained MIT-BIH resnet1d run (default: train one)")),
        ("--mitbih-dir", dict(default="data", help="MIT-BIH tables for pre-training (default data)")),
    ])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = pretrain(args, out)

    def prepare(name, config, _out):
        if name != "scratch":
            config.train.init_from = source

    base = load_config(f"{CONFIGS}/ptb.py:resnet1d")
    if args.data_dir is None and not (Path(base.data.dir) / "heart_train.parq").exists():
        raise UserError(f"no PTB tables in {base.data.dir}: run `make data-ptb` or pass --data-dir")
    table = run_variants(base, VARIANTS, out, quick=args.quick, data_dir=args.data_dir,
                         epochs=args.epochs, prepare=prepare, only=args.only)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
