"""QuotaASHA: ASHA's cutoff, with at most ceil(recorded / rf) promotions per rung."""

import pickle
from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from heartjax.promotion import QuotaASHA


def _drive(scheduler, rewards):
    """Each trial in turn reports `reward` at the first rung (budget 1); returns the actions."""
    actions = []
    for i, reward in enumerate(rewards):
        trial = SimpleNamespace(trial_id=f"t{i}")
        scheduler.on_trial_add(None, trial)
        actions.append(scheduler.on_trial_result(None, trial, {"budget": 1, "score": reward}))
    return actions


def _scheduler(kind):
    return kind(time_attr="budget", metric="score", mode="max", max_t=16, grace_period=1,
                reduction_factor=4)


def test_rising_rewards_promote_one_in_four():
    # every result beats all earlier ones: plain ASHA promotes them all
    rewards = [0.1 * i for i in range(12)]
    plain = _drive(_scheduler(ASHAScheduler), rewards)
    assert plain.count(TrialScheduler.CONTINUE) == 12
    capped = _drive(_scheduler(QuotaASHA), rewards)
    # ceil(n / 4) promotions after n results: trials 0, 4 and 8
    assert [i for i, a in enumerate(capped) if a == TrialScheduler.CONTINUE] == [0, 4, 8]


def test_below_cutoff_still_stops():
    capped = _drive(_scheduler(QuotaASHA), [0.9, 0.1, 0.2, 0.3, 0.05])
    assert capped[4] == TrialScheduler.STOP  # a free slot does not promote a poor result
    assert capped[0] == TrialScheduler.CONTINUE


def test_second_rung_has_its_own_quota_and_state_survives_pickle():
    s = _scheduler(QuotaASHA)
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(2)]
    for t in trials:
        s.on_trial_add(None, t)
    assert s.on_trial_result(None, trials[0], {"budget": 1, "score": 0.5}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, trials[0], {"budget": 4, "score": 0.6}) == TrialScheduler.CONTINUE
    assert s.promoted() == {1: 1, 4: 1}
    restored = _scheduler(QuotaASHA)
    restored.__dict__.update(pickle.loads(pickle.dumps(s.__dict__)))  # what save/restore do
    # the rung at budget 1 has one promotion for one result: the next must wait its turn
    action = restored.on_trial_result(None, trials[1], {"budget": 1, "score": 0.9})
    assert action == TrialScheduler.STOP


def test_start_points_take_no_place_in_the_quota():
    s = QuotaASHA(time_attr="budget", metric="score", mode="max", max_t=16, grace_period=1,
                  reduction_factor=4, exempt_first=1)
    # the start point finishes its rung second, yet still goes on; the first trial keeps its slot
    trials = [SimpleNamespace(trial_id=f"t{i}") for i in range(3)]
    for t in trials:
        s.on_trial_add(None, t)
    assert s.on_trial_result(None, trials[1], {"budget": 1, "score": 0.5}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, trials[0], {"budget": 1, "score": 0.6}) == TrialScheduler.CONTINUE
    assert s.on_trial_result(None, trials[2], {"budget": 1, "score": 0.7}) == TrialScheduler.STOP
