"""Models that ship inside heartjax: `heartjax.load_checkpoint("interpatient")` needs no training.

Each model is a folder of this package: `MODEL.md` (what it was trained on and measured, the
data's licence and citations) and one checkpoint step folder per member (`seed0`, `seed1`, ...:
Orbax `variables` and the `meta` with the config); several members load as their ensemble.
`python -m heartjax.pretrained RUN [RUN ...] --name NAME` copies the best checkpoint of each
trained run into such a folder (what `make pretrained` does for the new-patient model).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Sequence
from pathlib import Path

from heartjax.checkpoint import Ensemble, Predictor, best_checkpoint, load_checkpoint, load_models
from heartjax.errors import Parser, UserError, cli_entry

HERE = Path(__file__).parent
# the packaged models, each with its one-line description
MODELS = {
    "interpatient": "beats of new patients, N S V F Q (AAMI): MIT-BIH DS1 and svdb, "
                    "both leads; docs/new-patients.md",
}


def model_dir(name: str) -> Path:
    """The package folder of the packaged model `name`."""
    folder = HERE / name
    if name not in MODELS or not any(folder.glob("seed*/meta")):
        raise UserError(f"no packaged model {name!r}: heartjax ships "
                        + ", ".join(n for n in MODELS if any((HERE / n).glob("seed*/meta")))
                        + "; or give the path of a trained run")
    return folder


def members(name: str) -> list[Path]:
    """The step folders of the packaged model `name`, one per member."""
    return sorted(p.parent for p in model_dir(name).glob("seed*/meta"))


def pretrained(name: str = "interpatient") -> Predictor | Ensemble:
    """The packaged model `name`: a `Predictor`, or the `Ensemble` of its members."""
    return load_models(members(name))


def load(paths: Sequence[str | Path]) -> Predictor | Ensemble:
    """A packaged model's name, or the paths of trained runs (several: their ensemble); a path
    that exists wins over a packaged model of the same name."""
    if len(paths) == 1 and str(paths[0]) in MODELS and not Path(paths[0]).exists():
        return pretrained(str(paths[0]))
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise UserError(f"checkpoint path {missing[0]} does not exist; give a trained run's "
                        f"folder or a packaged model's name ({', '.join(MODELS)})")
    return load_models(list(paths))


def export(runs: Sequence[str | Path], name: str, root: Path = HERE) -> Path:
    """Copy the best checkpoint step folder of each of `runs` into `root/name/seed<i>`, loading
    each back first (a broken run is one line, and nothing is replaced)."""
    steps = []
    for run in runs:
        load_checkpoint(run)
        steps.append(best_checkpoint(run)[0])
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("seed*"):
        shutil.rmtree(old)
    for i, step in enumerate(steps):
        shutil.copytree(step, out / f"seed{i}",
                        ignore=shutil.ignore_patterns("*.orbax-checkpoint-tmp-*"))
    return out


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """`python -m heartjax.pretrained RUN [RUN ...] --name NAME`."""
    parser = Parser(prog="python -m heartjax.pretrained",
                    description="Package trained runs as a model that ships with heartjax "
                                "(their best checkpoints; several runs: their ensemble).",
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="trained runs (train workdirs)")
    parser.add_argument("--name", default="interpatient", choices=list(MODELS),
                        help="the packaged model to replace (default interpatient)")
    args = parser.parse_args(argv)
    out = export(args.runs, args.name)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"packaged {len(args.runs)} run(s) as {args.name}: {out} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
