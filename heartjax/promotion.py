"""ASHA with its nominal promotion rate enforced: at most 1 in `reduction_factor` per rung.

Ray's ASHA promotes a trial whose result beats the (1 - 1/rf) quantile of the results recorded
at its rung so far. With a searcher that learns (TPE), later trials beat earlier ones, so far more
than 1/rf of them pass: measured on `make tune`, 21 of 45 configurations reached the top rung
(nominal 1 in 16), and the top rung took 65% of the trial time. Here a trial that passes the
cutoff is promoted only while the rung's promotions stay within ceil(recorded / rf); otherwise it
stops at that rung, as it would in synchronous successive halving. The first `exempt_first`
trials (the config's hand-set start points, which the searcher suggests first) are promoted by
ASHA's cutoff alone and take no place in the quota.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler


class QuotaASHA(AsyncHyperBandScheduler):
    """`ray.tune.schedulers.ASHAScheduler` whose promotions per rung are capped at 1/rf."""

    def __init__(self, exempt_first: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._promoted: dict[tuple[int, float], int] = {}  # (bracket, milestone) -> promotions
        self._exempt_left = exempt_first
        self._exempt: set[str] = set()

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if self._exempt_left > 0:
            self._exempt_left -= 1
            self._exempt.add(trial.trial_id)

    def promoted(self) -> dict[float, int]:
        """Promotions made at each milestone (summed over brackets)."""
        out: dict[float, int] = {}
        for (_, milestone), n in self._promoted.items():
            out[milestone] = out.get(milestone, 0) + n
        return out

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        bracket = self._trial_info.get(trial.trial_id)
        t = result.get(self._time_attr)
        rung = None
        if bracket is not None and t is not None and self._metric in result and t < self._max_t:
            # the rung ASHA decides on: the highest milestone reached where this trial has no
            # result yet (its rungs are listed highest first)
            rung = next(((m, rec) for m, rec in bracket._rungs
                         if t >= m and trial.trial_id not in rec), None)
        action = super().on_trial_result(tune_controller, trial, result)
        if (rung is None or action != TrialScheduler.CONTINUE or trial.trial_id not in rung[1]
                or trial.trial_id in self._exempt):
            return action
        milestone, recorded = rung
        key = (self._brackets.index(bracket), milestone)
        if self._promoted.get(key, 0) >= math.ceil(len(recorded) / self._reduction_factor):
            self._num_stopped += 1
            return TrialScheduler.STOP
        self._promoted[key] = self._promoted.get(key, 0) + 1
        return action
