"""The fidelity ladder: stratified pools, importance weights, rung budgets, per-model spaces,
start points and the progress line."""

from __future__ import annotations

import jax
import numpy as np
import optuna
import pandas as pd
import pytest

from heartjax import fidelity, metrics, population, space
from heartjax.cli import load_config
from heartjax.data import SIGNAL_LEN, BeatTable
from heartjax.data.splits import train_val_split
from heartjax.errors import UserError
from heartjax.spaces import default_space
from heartjax.tune_progress import Progress

# MIT-BIH's kaggle training split (N S V F Q), as the rebuilt tables hold it
MITBIH = np.array([65255, 2003, 5210, 578, 5791])


def labels(counts) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_pool_takes_from_the_largest_class_first():
    take = fidelity.pool_counts(MITBIH, 6000)
    assert take.sum() <= 6000 and take.sum() > 6000 - len(MITBIH)
    assert take[3] == 578  # F, the rarest, keeps every beat
    assert take[0] == take[2] == take[4] < MITBIH[2]  # N, V, Q cut to one cap
    assert take[1] == min(2003, take[0])
    assert (fidelity.pool_counts(MITBIH, 0) == MITBIH).all()
    assert (fidelity.pool_counts(MITBIH, 10**6) == MITBIH).all()


def test_pools_are_nested_and_stratified():
    y = labels(MITBIH // 10)
    small, big, whole = fidelity.nested_pools(y, (600, 2400, 0), seed=3)
    assert set(small) <= set(big) <= set(whole) and len(whole) == len(y)
    assert len(small) == pytest.approx(600, abs=5) and len(big) == pytest.approx(2400, abs=5)
    assert set(np.unique(y[small])) == set(range(5))  # every class is in the smallest pool
    again = fidelity.nested_pools(y, (600,), seed=3)[0]
    assert (again == small).all()


def test_importance_weights_restore_the_split_objective():
    y = labels(MITBIH // 10)
    pool = fidelity.nested_pools(y, (800,), seed=0)[0]
    w = fidelity.importance(y, pool, 5)
    per_class_pool = np.bincount(y[pool], minlength=5)
    # weighted pool shares equal the split's shares, and the mean pool weight is 1
    assert np.allclose(w * per_class_pool / len(pool), np.bincount(y, minlength=5) / len(y))
    assert np.mean(w[y[pool]]) == pytest.approx(1.0)
    assert w[0] > 1 > w[3]  # N (subsampled) weighs more, F (all kept) less


def _record_table(signal: float = 1.0) -> BeatTable:
    """Six records of unequal length (folds' tables differ in length and get padded) of three
    classes, learnable as far as `signal` says."""
    sizes = [40, 50, 60, 70, 80, 90]
    records = np.repeat([f"r{i}" for i in range(6)], sizes)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, len(records)).astype(np.int32)
    x = rng.random((len(records), SIGNAL_LEN)).astype(np.float32)
    x[:, :30] += signal * y[:, None]
    return BeatTable(x, y, "mitbih", "", pd.DataFrame({"record": records}))


def _ladder_config(batch_folds: str = "auto"):
    c = load_config("configs/mitbih.py:smoke")
    c.tune.ladder, c.tune.rung_beats, c.tune.reduction_factor = (100, 0), 256, 2
    c.tune.batch_folds = batch_folds
    return c


def _scores(monkeypatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """What each rung's metrics are computed on, (labels, probabilities), as they come."""
    scored = []
    evaluate = metrics.evaluate_predictions
    monkeypatch.setattr(metrics, "evaluate_predictions",
                        lambda y, p, names: scored.append((y, p)) or evaluate(y, p, names))
    return scored


def test_a_ladder_over_folds_scores_every_record_out_of_fold(monkeypatch):
    table = _record_table()
    folds = [train_val_split(table, 0.1, 0, "records", 3, f) for f in range(3)]
    c = _ladder_config("off")
    scored = _scores(monkeypatch)
    rows = []
    fidelity.train_ladder(c, folds, rows.append)
    assert [r["rung"] for r in rows] == [0, 1]
    y_all, p_all = scored[-1]
    assert len(y_all) == len(table) and p_all.shape == (len(table), 5)  # every beat, no padding
    assert sorted(np.concatenate([v.records for _, v in folds])) == sorted(table.records)
    # the shortest fold, padded to the longest, predicts as it does trained alone
    short = int(np.argmin([len(t) for t, _ in folds]))
    start = sum(len(v) for _, v in folds[:short])
    alone = []
    fidelity.train_ladder(c, [folds[short]], alone.append)
    np.testing.assert_allclose(p_all[start:start + len(folds[short][1])], scored[-1][1], atol=1e-4)
    assert rows[1]["beats_seen"] == 3 * alone[1]["beats_seen"]  # a rung costs three trainings
    assert rows[1]["val_macro_recall"] > 0.5


MEMBERS = [  # population members: a member-level field or two each
    {"train.learning_rate": 1e-4, "train.class_weight_power": 0.0},
    {"train.learning_rate": 3e-3, "train.weight_decay": 1e-3, "train.class_weight_power": 1.0},
    {"train.learning_rate": 1e-3, "train.seed": 7},
]


@pytest.mark.parametrize("members", [None, MEMBERS], ids=["one", "population"])
def test_folds_batched_in_one_program_train_as_the_loop_does(monkeypatch, members):
    table = _record_table(signal=0.3)  # hard enough that the scores are not all 1
    folds = [train_val_split(table, 0.1, 0, "records", 3, f) for f in range(3)]
    scored = _scores(monkeypatch)
    rows = {}
    for mode in ("off", "on"):
        rows[mode] = []
        fidelity.train_ladder(_ladder_config(mode), folds, rows[mode].append, members=members)
    looped, batched = scored[:len(scored) // 2], scored[len(scored) // 2:]
    for (y_a, p_a), (y_b, p_b) in zip(looped, batched):  # the same beats, (nearly) the same scores
        assert (y_a == y_b).all()
        np.testing.assert_allclose(p_a, p_b, atol=2e-3)  # float rounding: vmap regroups sums
    for a, b in zip(rows["off"], rows["on"]):
        assert (a["rung"], a["pool"], a["beats_seen"]) == (b["rung"], b["pool"], b["beats_seen"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        for key in ("val_macro_recall", "val_accuracy"):
            assert a[key] == pytest.approx(b[key], abs=1e-3)
        assert a.get("member") == b.get("member")
    assert min(r["val_accuracy"] for r in rows["on"]) < 1.0


def test_a_ladder_population_reports_its_best_member_and_all_members():
    table = _record_table(signal=0.3)
    split = train_val_split(table, 0.1, 0, "records", 3, 0)
    c = _ladder_config()
    rows = []
    fidelity.train_ladder(c, [split], rows.append, members=MEMBERS)
    assert [r["rung"] for r in rows] == [0, 1]
    for row in rows:
        ranked = row["members"]
        assert [m["member"] for m in ranked] == [0, 1, 2]
        assert ranked[2]["train.seed"] == 7 and ranked[1]["train.learning_rate"] == 3e-3
        lead = max(ranked, key=lambda m: m[c.tune.metric])
        assert row["member"] == lead["member"] and row[c.tune.metric] == lead[c.tune.metric]
        assert row["train_loss"] == lead["train_loss"]
    assert len({m["train_loss"] for m in rows[0]["members"]}) == 3  # the members did differ
    # a member trains as its config would alone (members 0 and 1 keep the base seed, so the
    # data order too)
    configs = population.member_configs(c, MEMBERS)
    for i in (0, 1):
        alone = []
        fidelity.train_ladder(configs[i], [split], alone.append)
        for row, one in zip(rows, alone):
            member = row["members"][i]
            assert member["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)
            assert member["val_macro_recall"] == pytest.approx(one["val_macro_recall"], abs=1e-3)


def test_a_diverged_member_never_leads_and_only_all_diverged_fail():
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    members = [{"train.learning_rate": 1.0}, {"train.learning_rate": 1e-3}]
    row = fidelity._score_members(members, np.array([np.nan, 0.5]), y, np.stack([proba] * 2),
                                  ["A", "B"], "val_macro_recall")
    assert row["member"] == 1 and "val_macro_recall" not in row["members"][0]
    with pytest.raises(FloatingPointError, match="diverged"):
        fidelity._score_members(members, np.array([np.nan, np.inf]), y, np.stack([proba] * 2),
                                ["A", "B"], "val_macro_recall")


def test_batch_folds_is_on_where_it_was_measured_faster():
    c = _ladder_config()
    assert fidelity.batch_folds(c.tune, 4) == (jax.default_backend() != "cpu")
    assert not fidelity.batch_folds(c.tune, 1)  # nothing to batch
    c.tune.batch_folds = "on"
    assert fidelity.batch_folds(c.tune, 4)
    c.tune.batch_folds = "sometimes"
    with pytest.raises(UserError, match="tune.batch_folds='sometimes'"):
        fidelity.check_ladder(c.tune)


def test_a_rung_draws_its_pool_by_the_record_sampling():
    pool = np.array([3, 5, 8, 13])
    plain = fidelity._index_stream(pool, np.random.default_rng(0))
    assert sorted(next(plain) for _ in range(4)) == pool.tolist()  # an epoch: each row once
    drawn = fidelity._index_stream(pool, np.random.default_rng(0), np.array([0.0, 0.0, 0.5, 0.5]))
    assert {next(drawn) for _ in range(40)} == {8, 13}  # only what the sampling allows


def test_rung_budgets_are_asha_milestones():
    c = load_config("configs/mitbih.py")
    budgets = fidelity.rung_budgets(c.tune)
    assert budgets == [c.tune.rung_beats * c.tune.reduction_factor**k for k in range(3)]


@pytest.mark.parametrize("ladder, needle", [
    ((24_000, 6_000), "shrink"), ((0, 6_000), "shrink"), ((-1,), ">= 0"),
])
def test_bad_ladders_are_one_line(ladder, needle):
    c = load_config("configs/mitbih.py")
    c.tune.ladder = ladder
    with pytest.raises(UserError, match=needle):
        fidelity.check_ladder(c.tune)


def test_per_model_fields_have_their_own_names_and_ranges():
    c = load_config("configs/mitbih.py")
    params = {p.key: p for p in space.parse(c.tune.search_space, c)}
    a, b = params["model.resnet1d.num_blocks"], params["model.cnn2d.num_blocks"]
    assert a.path == b.path == "model.num_blocks" and a.args != b.args
    assert a.when == ("model.name", "resnet1d") and b.when == ("model.name", "cnn2d")
    sampler = space.DefineByRun(tuple(params.values()))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    models = set()
    for _ in range(40):
        values = sampler(study.ask())["params"]
        name = values["model.name"]
        models.add(name)
        assert all(k.split(".")[1] == name for k in values if k.count(".") == 2 and k.startswith("model."))
        applied = space.apply(c, values)
        own = {k.split(".")[2]: v for k, v in values.items() if k.startswith(f"model.{name}.")}
        assert all(applied.model[f] == (tuple(v) if isinstance(v, list) else v) for f, v in own.items())
    assert models == {"resnet1d", "cnn1d", "cnn2d", "transformer"}


def test_a_field_under_a_model_refuses_another_condition():
    c = load_config("configs/mitbih.py")
    c.tune.search_space = {"model": {"name": ("choice", ["cnn2d", "cnn1d"]),
                                     "cnn2d": {"channels": ("choice", [8], "model.name=cnn1d")}}}
    with pytest.raises(UserError, match="only for model.name=cnn2d"):
        space.parse(c.tune.search_space, c)


def test_start_point_trains_the_config_as_it_is():
    c = load_config("configs/mitbih.py:tune_cnn2d")
    params = space.parse(c.tune.search_space, c)
    point = space.start_point(params, c, {})
    study = optuna.create_study()
    study.enqueue_trial(point)
    values = space.DefineByRun(tuple(params))(study.ask())["params"]
    applied = space.apply(c, values)
    for section in ("model", "train"):
        assert applied[section].to_dict() == c[section].to_dict()
    with pytest.raises(UserError, match="not one of"):
        space.start_point(params, c, {"model.cnn2d.channels": 7})
    with pytest.raises(UserError, match="does not search"):
        space.start_point(params, c, {"model.resnet1d.channels": 32})


@pytest.mark.parametrize("spec", ["configs/mitbih.py", "configs/mitbih.py:tune_cnn2d",
                                  "configs/mitbih.py:tune_transformer", "configs/ptb.py",
                                  "configs/ptb.py:tune_cnn2d", "configs/ptb.py:tune_transformer"])
def test_shipped_spaces_and_start_points_are_valid(spec):
    from heartjax.tune import check_tune_config

    c = load_config(spec)
    params = check_tune_config(c)  # raises on a bad space, ladder or start point
    assert len(params) >= 8 and c.tune.ladder


def test_ptb_space_has_no_rr_inputs():
    assert "context" not in default_space(context=False)["model"]
    assert "context" in default_space()["model"]


class _Trial:
    def __init__(self, trial_id, status, values):
        self.trial_id, self.status, self.config = trial_id, status, {"params": values}


def test_progress_line_counts_rungs_and_shows_the_best():
    p = Progress("val_macro_recall", budget_s=600)
    trials = [_Trial("a", "TERMINATED", {"model.name": "cnn2d", "train.learning_rate": 1e-3}),
              _Trial("b", "RUNNING", {"model.name": "resnet1d"}),
              _Trial("c", "RUNNING", {"model.name": "cnn1d"})]
    p.on_trial_result(0, trials, trials[0], {"val_macro_recall": 0.7, "rung": 0})
    p.on_trial_result(0, trials, trials[1], {"val_macro_recall": 0.9, "rung": 0})
    p.on_trial_result(0, trials, trials[0], {"val_macro_recall": 0.8, "rung": 1})
    line = p.line(trials)
    assert "2 configs" in line and "rung 0: 2, 1: 1" in line and "2 running, 1 done" in line
    assert "left" in line
    # a higher rung beats a better score at a lower one: the longer training is the better guess
    assert "best val_macro_recall 0.8000 at rung 1: cnn2d, learning_rate 0.001" in line
