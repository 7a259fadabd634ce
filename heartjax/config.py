"""The base config every dataset config builds on, and its validation.

`configs/mitbih.py` and `configs/ptb.py` start from `base_config(dataset, model)` and change a
few fields; every knob of the project lives in the returned ConfigDict.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import ml_collections

from heartjax.data.splits import VAL_BY
from heartjax.data.tables import CLASS_NAMES
from heartjax.errors import UserError

SCHEDULES = ("constant", "cosine", "onecycle", "exponential")
OPTIMIZERS = ("adam", "adamw", "sgd")
LOSSES = ("ce", "weighted_ce", "focal")
DATASETS = ("mitbih", "ptb")


def base_config(dataset: str, model: str) -> ml_collections.ConfigDict:
    """Defaults shared by all datasets; `model` picks the architecture's own defaults."""
    from heartjax.models import default_model_config  # models import config-free code only

    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.dir = "data"  # folder with the beat tables (heart_big_*.parq / heart_*.parq)
    c.data.dataset = dataset
    c.data.train_file = ""  # explicit table instead of data.dir's standard name
    # several tables trained as one, e.g. MIT-BIH DS1 and svdb (`heartjax.data build wfdb`):
    # validation records and cross-validation folds are drawn from all of them, each
    # database's records dealt across the folds; () reads data.train_file / data.dir
    c.data.train_files = ()
    # tables of the same records seen another way (their second lead: `heartjax.data build
    # --leads`), one path or several joined by commas, whose beats join training; the
    # validation records' beats are left out (data.val_by=records)
    c.data.extra_train = ""
    c.data.val_fraction = 0.1  # stratified, seeded; tuning never looks at the test table
    c.data.val_by = "beats"  # "records": hold out whole patients (honest for interpatient tests)
    # cross-validation by records: >= 2 deals the training table's records into this many
    # folds (`heartjax.data.splits.record_folds`, val_by=records) and fold `data.fold` validates
    c.data.folds = 0
    c.data.fold = 0
    c.data.seed = 0
    c.data.train_limit = 0  # >0: train on a stratified subsample of this many beats (quick runs)
    # the real-noise bank train.augment.real_noise draws from (`python -m heartjax.data build
    # noise`, `make data-noise`: data/noise/noise.npz); "" = none
    c.data.noise_file = ""

    c.model = default_model_config(model)

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 30
    c.train.batch_size = 128
    c.train.learning_rate = 1e-3
    c.train.schedule = "cosine"
    c.train.warmup_epochs = 1.0
    c.train.decay_rate = 0.9  # per epoch, for the exponential schedule
    c.train.optimizer = "adamw"
    c.train.momentum = 0.9  # sgd only
    c.train.weight_decay = 1e-4
    c.train.grad_clip = 1.0  # global norm; 0 disables
    c.train.loss = "weighted_ce"  # recall first: rare classes weigh more
    c.train.class_weight_power = 0.5  # weights (n / n_c)^power; 1 = fully balanced
    c.train.class_weight_cap = 0.0  # >0: no class weighs more than cap x the most common one
    c.train.class_weight_scale = ()  # one factor per class multiplying those weights; () = none
    # 0..1: how far each class's records are drawn alike (heartjax.losses.record_sampling);
    # 0 = every beat once an epoch. Needs the tables' record column.
    c.train.record_balance = 0.0
    c.train.record_balance_classes = ()  # the classes so drawn, by name: ("N", "S"); () = all
    c.train.focal_gamma = 2.0
    c.train.seed = 0
    c.train.select_metric = "macro_recall"  # the client wants recall first
    c.train.patience = 8  # epochs without improvement of select_metric before stopping
    # validate (and keep a best checkpoint) every N-th epoch and after the last; > 1 keeps a
    # fast device from waiting on validation. Patience still counts epochs, checked at each
    # validation (it stops at the first one `patience` or more epochs after the best).
    c.train.eval_every = 1
    c.train.keep_checkpoints = 2  # best-k by select_metric
    c.train.eval_batch_size = 1024
    c.train.target_recall = 0.0  # binary tasks: >0 stores a threshold reaching it on validation
    c.train.calls_per_epoch = 10  # an epoch is cut into this many jitted calls (progress and timing)
    c.train.init_from = ""  # checkpoint to start from (transfer learning); "" = random init
    c.train.trainable = "all"  # all | head (fine-tune only the classification head)

    c.train.augment = ml_collections.ConfigDict()
    c.train.augment.scale = 0.0  # random amplitude scaling by 1 ± scale
    c.train.augment.noise = 0.0  # gaussian noise std (signal is in [0, 1])
    c.train.augment.wander = 0.0  # amplitude of a slow sinusoidal baseline wander
    c.train.augment.motion = 0.0  # height of three smooth 40-250 ms transients (electrode motion)
    c.train.augment.shift = 0  # max samples of random time shift (edges repeat, nothing wraps)
    c.train.augment.stretch = 0.0  # time warp: the beat resampled by a random factor 1 ± stretch
    # share of beats given a random segment of real recorder noise (nstdb's baseline wander,
    # muscle and electrode motion; data.noise_file) at an EC57 SNR drawn in real_noise_snr
    c.train.augment.real_noise = 0.0
    # dB range: below 0 dB a beat's shape is lost in the noise and its label is a guess
    # (the stress test still measures -6 dB); 24 dB is EC57's mildest level
    c.train.augment.real_noise_snr = (0.0, 24.0)

    c.tune = ml_collections.ConfigDict()
    c.tune.num_samples = 8
    c.tune.metric = "val_macro_recall"
    c.tune.mode = "max"
    c.tune.search_alg = "random"  # random | optuna | bohb
    c.tune.scheduler = "asha"  # fifo | asha | hyperband
    c.tune.grace_period = 2  # epochs before ASHA may stop a trial
    c.tune.reduction_factor = 3
    # Each trial's Ray resources: a GPU share below 1 puts 1/share trials on a GPU, each
    # with that share of its memory; 0 GPUs runs the trial on the CPU backend.
    c.tune.cpus_per_trial = 1
    c.tune.gpus_per_trial = 0.0
    c.tune.resources = ""  # custom Ray resources a trial needs: "NAME=AMOUNT[,NAME=AMOUNT]"
    c.tune.max_concurrent_trials = 0  # 0: as many as the cluster's resources hold
    # Where Ray keeps every trial's metrics, checkpoints and last state: a folder every node
    # of a cluster sees (`--storage`); "" keeps them in the run folder (WORKDIR/ray).
    c.tune.storage = ""
    c.tune.time_budget_s = 0  # seconds of search (the winner's retraining comes after); 0: none
    c.tune.seed = 0
    c.tune.startup_trials = 10  # optuna: random trials before TPE models the history
    # Cheap fidelities (heartjax.fidelity): one training pool per rung (beats of a stratified
    # subset, 0 = the whole split); rung k trains rung_beats * reduction_factor**k beats from
    # scratch and ASHA keeps the best 1/reduction_factor for the next rung. () = every trial
    # trains the full config (train.epochs on the whole split), ASHA stops it by epochs.
    c.tune.ladder = ()
    c.tune.rung_beats = 16_384
    # Trials that start the search: dicts of space values (space paths), every other searched
    # field at the config's own value; {} trains the config as it is.
    c.tune.start_points = ()
    # >= 2 (with a ladder and data.val_by='records'): every rung of a trial trains one model per
    # fold of the records (`heartjax.data.splits.record_folds`) and is scored on all of them
    # out of fold, at this many times the cost; the winner's full training validates as
    # data.val_fraction says. 0: the one validation split.
    c.tune.folds = 0
    # "auto" | "on" | "off": with folds, train a rung's folds' models in one vmapped program
    # (heartjax.fidelity.batch_folds) instead of one after another, with the same scores up to
    # float rounding. "auto": on off the CPU (on 2 CPU cores the loop was as fast).
    c.tune.batch_folds = "auto"
    c.tune.retrain = True  # with a ladder: train the winner at full fidelity into WORKDIR/best
    # also train the config as it is (the untuned original) at full fidelity into
    # WORKDIR/original: the report puts it beside the tuned winner on the test split
    c.tune.train_original = False
    # >1: each trial trains this many models at once (heartjax.population), drawing the
    # member-level fields of the space (learning rate, weight decay, class-weight power, seed)
    # per member; Ray's searcher and scheduler see the trial's best member. With a ladder
    # every rung trains all members (heartjax.fidelity); each member counts as a configuration.
    c.tune.population = 1
    # Mirrors the config: a leaf is (kind, *args[, "path=value" condition]); see heartjax.space.
    c.tune.search_space = ml_collections.ConfigDict()
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Reject config values a run would fail on later, with a line that says what to change."""

    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise UserError(f"bad config: {msg}")

    d, t = c.data, c.train
    need(d.dataset in DATASETS, f"data.dataset={d.dataset!r}; use one of {', '.join(DATASETS)}")
    need(0.0 < d.val_fraction < 1.0, f"data.val_fraction={d.val_fraction} must be in (0, 1)")
    need(d.val_by in VAL_BY, f"data.val_by={d.val_by!r}; use one of {', '.join(VAL_BY)}")
    need(not d.extra_train or d.val_by == "records",
         "data.extra_train needs data.val_by='records' (a beat split would put the same "
         "beats, seen through another lead, in training and in validation)")
    need(not d.train_files or d.val_by == "records",
         "data.train_files needs data.val_by='records' (validation by whole records of every "
         "database)")
    need(d.folds == 0 or (d.folds >= 2 and d.val_by == "records"),
         f"data.folds={d.folds}: use 0 (no folds) or >= 2 with data.val_by='records'")
    need(d.folds == 0 or 0 <= d.fold < d.folds, f"data.fold={d.fold} must be in 0..{d.folds - 1}")
    need(t.epochs >= 1, f"train.epochs={t.epochs} must be >= 1")
    need(t.batch_size >= 1, f"train.batch_size={t.batch_size} must be >= 1")
    need(t.learning_rate > 0, f"train.learning_rate={t.learning_rate} must be > 0")
    need(t.schedule in SCHEDULES, f"train.schedule={t.schedule!r}; use one of {SCHEDULES}")
    need(t.optimizer in OPTIMIZERS, f"train.optimizer={t.optimizer!r}; use one of {OPTIMIZERS}")
    need(t.loss in LOSSES, f"train.loss={t.loss!r}; use one of {LOSSES}")
    need(t.class_weight_cap >= 0, f"train.class_weight_cap={t.class_weight_cap} must be >= 0 (0: no cap)")
    scale, classes = tuple(t.class_weight_scale), CLASS_NAMES[d.dataset]
    need(not scale or len(scale) == len(classes),
         f"train.class_weight_scale={scale} needs one factor per class "
         f"({', '.join(classes)}), or () for none")
    need(all(v > 0 for v in scale), f"train.class_weight_scale={scale} must hold factors > 0")
    need(0.0 <= t.record_balance <= 1.0,
         f"train.record_balance={t.record_balance} must be in [0, 1]")
    named = tuple(t.record_balance_classes)
    need(set(named) <= set(classes), f"train.record_balance_classes={named} must name classes "
         f"of {d.dataset} ({', '.join(classes)}), or be () for all")
    need(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    need(t.patience >= 1, f"train.patience={t.patience} must be >= 1")
    need(t.eval_every >= 1,
         f"train.eval_every={t.eval_every} must be >= 1 (1: validate every epoch)")
    need(t.keep_checkpoints >= 1, f"train.keep_checkpoints={t.keep_checkpoints} must be >= 1")
    need(0.0 <= t.target_recall < 1.0, f"train.target_recall={t.target_recall} must be in [0, 1)")
    need(t.trainable in ("all", "head"), f"train.trainable={t.trainable!r}; use all or head")
    for name in ("scale", "noise", "wander", "motion", "shift", "stretch"):
        value = t.augment[name]
        need(value >= 0, f"train.augment.{name}={value} must be >= 0 (0 turns it off)")
    need(t.augment.stretch < 0.5, f"train.augment.stretch={t.augment.stretch} "
         "must be < 0.5 (a warp by half a beat is no longer the same beat)")
    share, snr = t.augment.real_noise, tuple(t.augment.real_noise_snr)
    need(0.0 <= share <= 1.0, f"train.augment.real_noise={share} must be in [0, 1] "
         "(the share of beats given real noise; 0 turns it off)")
    need(len(snr) == 2 and snr[0] <= snr[1], f"train.augment.real_noise_snr={snr} must be "
         "(low, high) in dB with low <= high, e.g. (0, 24)")
    need(share == 0 or bool(d.noise_file), f"train.augment.real_noise={share} needs "
         "data.noise_file: build the bank with `python -m heartjax.data build noise --raw "
         "NSTDB_DIR --out DIR` (`make data-noise`) and pass "
         "--config.data.noise_file=DIR/noise.npz")
    from heartjax.metrics import SELECTABLE

    need(
        t.select_metric in SELECTABLE,
        f"train.select_metric={t.select_metric!r}; use one of {', '.join(SELECTABLE)}",
    )
    need(t.select_metric != "nsv_recall" or d.dataset == "mitbih",
         "train.select_metric='nsv_recall' needs the MIT-BIH classes N, S, V; use macro_recall")


def set_model(config: ml_collections.ConfigDict, name: str) -> None:
    """Switch `config.model` to `name` with that model's defaults (keeps the context parts)."""
    from heartjax.models import default_model_config

    context = config.model.context
    with config.unlocked():
        config.model = default_model_config(name)
        config.model.context = context


def variants(arg: str | None, path: str, known: Sequence[str]) -> list[str]:
    """The variants named in `path:arg` (comma-separated, applied in order), each one of
    `known`; one line for a name the file does not define."""
    names = [n.strip() for n in (arg or "").split(",") if n.strip()]
    for name in names:
        if name not in known:
            raise UserError(f"{path} has no variant {name!r}; use one or more of "
                            f"{', '.join(known)}, comma-separated (e.g. {path}:{known[0]},smoke)")
    return names


def set_present(section: ml_collections.ConfigDict, values: dict) -> None:
    """Set those of `values` that `section` has (e.g. the fields the chosen model defines)."""
    for key, value in values.items():
        if key in section:
            section[key] = value


REMOVED_INPUTS = ("use_rhythm", "use_irregularity", "use_size", "use_median_diff")


def migrate(saved: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier heartjax (a checkpoint's meta, a run's config.json) in
    today's fields: model.use_rr and use_template become model.context, morph_mix with
    morph_mix_by_class the one morph_mix, data.irregular_copies goes, and the fields added
    since take their defaults. A model that read a removed input is one line."""
    c = copy.deepcopy(saved)
    model, data = c["model"], c["data"]
    used = [f for f in REMOVED_INPUTS if model.pop(f, False)]
    if used:
        raise UserError(f"this model was trained with model.{used[0]}=True, an input heartjax "
                        "no longer has; load it with heartjax at commit 1daa95e")
    if "use_rr" in model:  # the template features travelled with the R-R features
        rr, template = model.pop("use_rr"), model.pop("use_template", False)
        model["context"] = ("rr", "template") if rr and template else ("rr",) if rr else ()
    by_class = tuple(model.pop("morph_mix_by_class", ()))
    if isinstance(model.get("morph_mix"), (int, float)):  # one weight, set aside by by_class
        mix = float(model["morph_mix"])
        model["morph_mix"] = by_class or ((mix,) if mix else ())
    data.pop("irregular_copies", None)
    return _with_defaults(c, base_config(data["dataset"], model["name"]).to_dict())


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`saved` plus the fields of `defaults` it lacks, section by section (a section empty by
    default, such as tune.search_space, is free-form and kept as saved)."""
    out = dict(saved)
    for key, default in defaults.items():
        if key not in out:
            out[key] = default
        elif isinstance(default, dict) and default and isinstance(out[key], dict):
            out[key] = _with_defaults(out[key], default)
    return out
