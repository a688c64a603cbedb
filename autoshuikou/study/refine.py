"""After the search: train a few front models again, for longer.

The search fine-tunes each plan with the few epochs its space allows, so that many plans
fit in the time; a pruned detector keeps regaining mAP long after that (digits-detect,
half its channels pruned: 0.775 mAP after 6 epochs, 0.797 after 20). Refinement spends
the longer training only on the models a user would deploy: the best feasible model, then
the best one clearly faster than it, and so on down the front (``refine_targets``). Each
refined model is a new trial of the same plan with ``refine.epochs`` epochs, trained from
the pruned teacher with the same seed, so `verify` rebuilds it from its plan.json like any
other; it replaces its original on the front when it scores higher.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from autoshuikou.plan import Plan

# Each next refined model is at least this much faster than the one before it.
REFINE_STEP = 0.1
REFINE_ATTR = "refine_of"  # the trial a refined trial trains again (user attribute)


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


def refined_plan(plan: Plan, epochs: int) -> Plan:
    """The same architecture, precisions and distillation settings, trained ``epochs``."""
    return replace(plan, distill=replace(plan.distill, epochs=epochs))
