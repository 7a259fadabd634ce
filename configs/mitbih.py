"""MIT-BIH arrhythmia, 5 AAMI classes (N S V F Q).

Variants compose, applied left to right: `configs/mitbih.py:interpatient,smoke`.
- a model: `:resnet1d` (the default), `:cnn2d`, `:transformer`, `:cnn1d`;
- `:best`: the resnet1d with R-R and template features as context (`make mitbih-best`);
- `:interpatient`: `:best` for new patients, trained and chosen on MIT-BIH DS1 and svdb's
  development half (`make interpatient-best`), tested on DS2; `:interpatient_ds1` the same
  trained on DS1 alone; `:tune_interpatient` searches its knobs (`make tune-interpatient`);
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
                     (*MODELS, "best", "interpatient", "interpatient_ds1", "tune_interpatient",
                      *TUNED, "smoke"))
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
    c.tune.start_points = ({"model.name": "resnet1d",
                            "model.context": ("rr", "template")},)  # the hand-set :best
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
    """The beat window barely shows prematurity: the head also sees the R-R intervals (the
    previous, next, local and record-mean intervals, their logs and ratios) and the template
    features (the beat's QRS against its record's median QRS) beside the pooled features."""
    c.model.context = ("rr", "template")


def interpatient(c):
    """New patients: trained on MIT-BIH DS1 and the development half of svdb (`make
    data-interpatient`), 61 patients of two databases, each record seen through both its leads;
    tested on DS2 (no patient in both), looked at once. Every knob is chosen by
    cross-validation over the records of both databases (`experiments/crossval.py`, `make
    tune-interpatient`). What each knob measured, and what was tried and not taken:
    docs/new-patients.md."""
    best(c)
    c.data.dir = "data/interpatient"  # DS2: heart_big_test.parq
    c.data.train_files = ("data/interpatient/heart_big_train.parq", "data/svdb/heart_big_all.parq")
    # the same beats cut from each record's second lead (MIT-BIH V1, V2, V4 or V5; svdb ECG2)
    c.data.extra_train = ("data/interpatient_lead2/heart_big_train.parq,"
                          "data/svdb_lead2/heart_big_all.parq")
    c.data.val_by = "records"  # whole records validate: new patients, as in DS2
    c.train.select_metric = "nsv_recall"  # the classes EC57 scores (validation holds 2 F beats)
    # beat shapes are patient-specific, the rhythm is not: 90% of the training beats show the
    # head only their context
    c.model.morph_dropout = 0.9
    # at evaluation the shape-free classifier weighs 0.6, and 0.3 for V (told by its shape):
    # cross-validated over both databases' records, N/S/V recall 0.835 / 0.837 (seeds 0 / 1)
    # with DS1's 0.75 and 0.4, 0.843 / 0.851 with these
    c.model.morph_mix = (0.6, 0.6, 0.3, 0.6, 0.6)
    c.model.rr_seconds = False  # the R-R ratios only, not the patient's heart rate
    c.train.record_balance = 1.0  # a class's records drawn alike: no one patient teaches a shape
    # the rest as `make tune-interpatient` chose it
    c.model.channels = 16
    c.model.kernel_size = 3
    c.model.norm = "batch"
    c.model.head_hidden = (128, 64)
    c.train.class_weight_power = 0.825
    c.train.class_weight_cap = 50.0  # Q (8 beats in DS1) weighs at most 50x N
    c.train.learning_rate = 8.45e-4
    c.train.weight_decay = 7.3e-5
    c.train.augment.update(scale=0.2, noise=0.01, wander=0.05, stretch=0.05)
    c.train.epochs = 8


def interpatient_ds1(c):
    """`:interpatient` as it was before svdb: MIT-BIH DS1 alone (both leads), its evaluation
    mix chosen on DS1."""
    interpatient(c)
    c.data.train_files = ()
    c.data.extra_train = "data/interpatient_lead2/heart_big_train.parq"
    c.model.morph_mix = (0.75, 0.75, 0.4, 0.75, 0.75)


def tune_interpatient(c):
    """The new-patient search: `:interpatient` with one mix for every class (the space varies
    it) is the first trial; the fidelity ladder as in `make tune`, every rung scored by
    cross-validation over the records of both databases (four folds, as
    `experiments/crossval.py` deals them: four trainings a rung); 40 min, then the winner's
    full training."""
    interpatient(c)
    c.model.morph_mix = (0.75,)
    c.tune.metric = "val_nsv_recall"
    c.tune.search_space = interpatient_space()
    c.tune.start_points = ({},)
    c.tune.folds = 4
    c.tune.time_budget_s = 2400


def tuned(c):
    """The course's original model (its defaults) is the search's first trial; the search
    varies that model's own knobs, its context (R-R and template) and the training knobs."""
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


VARIANTS = {"best": best, "interpatient": interpatient, "interpatient_ds1": interpatient_ds1,
            "tune_interpatient": tune_interpatient,
            "tune_cnn2d": tune_cnn2d, "tune_transformer": tune_transformer, "smoke": smoke}
