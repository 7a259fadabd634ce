"""How deep and wide must the residual CNN be? Kachuee's resnet1d (5 blocks x 32 channels)
against shallower, narrower and wider versions, on MIT-BIH."""

from heartjax.experiment import run_script

VARIANTS = {
    "5x32 (Kachuee)": {},
    "3x32": {"model.num_blocks": 3},
    "2x32": {"model.num_blocks": 2},
    "5x16": {"model.channels": 16},
    "5x64": {"model.channels": 64},
}


if __name__ == "__main__":
    run_script(__doc__, "mitbih.py:resnet1d", VARIANTS, "runs/experiments/resnet_size")
