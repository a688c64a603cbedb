"""After the search: train a few front models again, for longer.

The search fine-tunes each plan with the few epochs its space allows, so that many plans
fit in the time; a pruned detector keeps regaining mAP long after that (digits-detect,
half its channels pruned: 0.775 mAP after 6 epochs, 0.797 after 20). Refinement spends
the longer training only on the models a user would deploy: the best model within the budget,
then the best one clearly faster than it, and so on down the front (``refine_targets``);
with a ``--min-accuracy`` goal, models just under it are candidates too (``within_reach``). Each
refined model is a new trial of the same plan with ``refine.epochs`` epochs, trained from
the pruned teacher with the same seed, so `verify` rebuilds it from its plan.json like any
other; it replaces its original on the front when it scores higher.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.plan import Plan
from autoshuikou.study.optuna_adapter import new_trial

# Each next refined model is at least this much faster than the one before it.
REFINE_STEP = 0.1
# Without refine.epochs: REFINE_SEARCH_TIMES the search's longest fine-tuning, and at least
# REFINE_STEPS optimizer steps (more epochs on a small data set), at most REFINE_MAX_EPOCHS.
# On the digits (23 batches an epoch, up to 4 searched) that is 12 epochs, about 15 s a
# model: the quick start keeps its time.
REFINE_STEPS = 250
REFINE_SEARCH_TIMES = 3
REFINE_MAX_EPOCHS = 60
# A model under the --min-accuracy goal by at most this share of the baseline metric is
# within reach: refinement may lift it over (digits-detect: +2.2 points of mAP from 60 epochs).
REFINE_REACH = 0.02
REFINE_ATTR = "refine_of"  # the trial a refined trial trains again (user attribute)
# The plan a fixed or refined trial is queued with (user attribute; exempt from rejection).
PLAN_ATTR = "plan"


@dataclass(frozen=True)
class Candidate:
    """A feasible front model, as refinement chooses among them."""

    trial: int
    metric: float
    latency_ms: float


def refine_targets(front: list[Candidate], models: int) -> list[int]:
    """Up to ``models`` trials to train again: the highest metric first, then each time the
    highest metric among models at least REFINE_STEP faster than the last one chosen (ties:
    the faster, then the lower trial number)."""
    chosen: list[int] = []
    limit = float("inf")
    for _ in range(models):
        pool = [c for c in front if c.latency_ms <= limit]
        if not pool:
            break
        best = max(pool, key=lambda c: (c.metric, -c.latency_ms, -c.trial))
        chosen.append(best.trial)
        limit = best.latency_ms * (1 - REFINE_STEP)
    return chosen


def within_reach(metric: float, goal: float | None, baseline_metric: float) -> bool:
    """Whether refinement could bring ``metric`` to the ``goal`` (None: no goal, any)."""
    return goal is None or metric >= goal - REFINE_REACH * abs(baseline_metric)


def auto_epochs(steps_per_epoch: int, search_epochs: int) -> int:
    """The refinement's epochs where the space leaves them to the data set's size:
    REFINE_SEARCH_TIMES x ``search_epochs`` (the space's longest fine-tuning), raised to
    REFINE_STEPS optimizer steps on a small data set, at most REFINE_MAX_EPOCHS."""
    wanted = math.ceil(REFINE_STEPS / max(1, steps_per_epoch))
    return min(REFINE_MAX_EPOCHS, max(REFINE_SEARCH_TIMES * max(1, search_epochs), wanted))


def refined_plan(plan: Plan, epochs: int) -> Plan:
    """The same architecture, precisions and distillation settings, trained ``epochs``."""
    return replace(plan, distill=replace(plan.distill, epochs=epochs))


def run_new_trial(
    study: optuna.Study,
    storage: BaseStorage,
    user_attrs: dict[str, Any],
    objective: Callable[[optuna.Trial], tuple[float, ...]],
    after: Callable[[optuna.Study, FrozenTrial], None],
) -> None:
    """Run ``objective`` on a trial created now with ``user_attrs``, as ``study.optimize``
    would (pruned or failed states; the objective beats on it, see ``study.workers``), but
    never on a queued one: ``optimize`` takes the oldest WAITING trial, and uniform plans
    beyond ``trials`` stay queued for a larger rerun. Failures are recorded on the trial,
    not raised (as ``catch`` does)."""
    trial, trial_id = new_trial(study, storage, user_attrs)
    values: tuple[float, ...] | None = None
    state: TrialState | None = None
    stopped: KeyboardInterrupt | None = None
    try:
        values = objective(trial)
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    except Exception:
        state = TrialState.FAIL
    except KeyboardInterrupt as interrupt:  # failed without an error: a rerun retries it
        state, stopped = TrialState.FAIL, interrupt
    study.tell(trial, values, state=state)
    if stopped is not None:
        raise stopped
    after(study, storage.get_trial(trial_id))


def refinement_done(trial: FrozenTrial, epochs: int) -> bool:
    """Whether ``trial`` settles its refinement with ``epochs``: its plan trains them (one
    from before the epochs were changed does not) and it finished, runs, or failed with an
    error (not retried, so an error cannot loop); interrupted, dead-worker or queued ones
    do not."""
    if (
        trial.state == TrialState.WAITING
        or trial.user_attrs[PLAN_ATTR]["distill"]["epochs"] != epochs
    ):
        return False
    return trial.state != TrialState.FAIL or "error" in trial.user_attrs
