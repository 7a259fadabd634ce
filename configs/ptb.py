"""PTB diagnostic ECG, binary (0 normal, 1 abnormal = myocardial infarction).

Variants compose, applied left to right: `configs/ptb.py:resnet1d,smoke`.
- a model: `:cnn1d` (the default), `:resnet1d`, `:cnn2d`, `:transformer`;
- `:best`: the MIT-BIH resnet1d of `runs/mitbih-source` fine-tuned on PTB (Kachuee et al.
  2018); `make ptb-best` trains that source first when it is missing;
- `:tune_cnn2d`, `:tune_transformer`: tune the course's original model from its own settings;
- `:smoke`: tiny and short, for tests.
The tables are `heart_train.parq` / `heart_test.parq` in `data.dir`; make them from the course
sample with `python -m heartjax.data split ../shared/data/course/ptb_sample.parq --out data/ptb`.
"""

from heartjax.config import base_config, set_present, variants
from heartjax.spaces import default_space

MODELS = ("cnn1d", "resnet1d", "cnn2d", "transformer")
TUNED = {"tune_cnn2d": "cnn2d", "tune_transformer": "transformer"}  # variant -> original model


def get_config(arg=None):
    names = variants(arg, "configs/ptb.py", (*MODELS, "best", *TUNED, "smoke"))
    models = ([n for n in names if n in MODELS] + [TUNED[n] for n in names if n in TUNED]
              + (["resnet1d"] if "best" in names else []))
    c = base_config("ptb", models[-1] if models else "cnn1d")
    c.data.dir = "data/ptb"
    c.train.epochs = 40
    c.train.batch_size = 64
    c.train.learning_rate = 1e-3
    c.train.select_metric = "macro_recall"
    c.train.target_recall = 0.97  # abnormal recall the stored decision threshold aims for
    c.train.patience = 10

    # `python -m heartjax.tune --config configs/ptb.py`: the four architectures and the training
    # knobs on the fidelity ladder (heartjax.fidelity): 4k beats on a 500-beat stratified pool,
    # then 16k and 66k beats (about 12 and 47 epochs) on the whole training part.
    c.tune.search_space = default_space(context=False)
    c.tune.search_alg = "optuna"
    c.tune.ladder = (500, 0, 0)
    c.tune.rung_beats = 4_096
    c.tune.reduction_factor = 4
    c.tune.num_samples = 1000  # the time budget ends the search
    c.tune.time_budget_s = 1200  # + the winner's full training: under half an hour in all

    for name in names:
        VARIANTS.get(name, lambda c: None)(c)
    return c


def best(c):
    """Transfer: every layer starts from the MIT-BIH model (same architecture, a new 2-class
    head) and is fine-tuned (experiments/transfer.py compares from scratch and head-only). The
    decision threshold is set on validation for target_recall. Augmentation keeps the
    fine-tune's probabilities from saturating, which would leave no threshold to trade
    precision for recall."""
    c.train.init_from = "runs/mitbih-source"
    c.train.trainable = "all"
    c.train.augment.scale = 0.1
    c.train.augment.noise = 0.01
    c.train.augment.wander = 0.05
    c.train.augment.shift = 3


def tuned(c):
    """The course's original model first, then its own knobs and the training knobs."""
    c.tune.search_space = default_space([c.model.name], context=False)
    c.tune.start_points = ({},)
    c.tune.train_original = True  # the report's original-vs-tuned table


def smoke(c):
    """Tiny and short: a few seconds a training, eight trials of a small search."""
    set_present(c.model, {"num_blocks": 2, "channels": 16, "head_hidden": (32,)})  # whichever of these the model has
    c.train.epochs = 4
    c.train.patience = 4
    c.tune.num_samples = 8
    c.tune.grace_period = 1
    c.tune.reduction_factor = 2
    c.tune.max_concurrent_trials = 2
    c.tune.search_space = {
        "train": {
            "learning_rate": ("loguniform", 3e-4, 3e-3),
            "weight_decay": ("loguniform", 1e-5, 1e-3),
            "batch_size": ("choice", [32, 64]),
        },
        "model": {"dropout": ("uniform", 0.0, 0.3)},
    }
    c.tune.search_alg = "random"
    c.tune.ladder = ()
    c.tune.time_budget_s = 0


VARIANTS = {"best": best, "tune_cnn2d": tuned, "tune_transformer": tuned, "smoke": smoke}
