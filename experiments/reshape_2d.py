"""Is the course's 16x12 "image" of a beat worth it? The 2D CNN on other reshapes of the
zero-padded beat (12x16, 8x24, 24x8, 4x48) against a plain 1D CNN, on MIT-BIH."""

from heartjax.experiment import run_script

VARIANTS = {
    "2d_16x12": {},
    "2d_12x16": {"model.height": 12, "model.width": 16},
    "2d_8x24": {"model.height": 8, "model.width": 24},
    "2d_24x8": {"model.height": 24, "model.width": 8},
    "2d_4x48": {"model.height": 4, "model.width": 48},
    "1d_cnn": {"model.name": "cnn1d"},
}


if __name__ == "__main__":
    run_script(__doc__, "mitbih.py:cnn2d", VARIANTS, "runs/experiments/reshape_2d")
