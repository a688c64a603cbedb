"""The gates a sampled plan passes before it is fine-tuned fully: its latency predicted or
measured untrained, its metric predicted (``study.predictor``) or checked at the rung
(``study.screening``). A plan that fails one is recorded, with the reason, and not trained."""

from __future__ import annotations

from typing import Any

import optuna

from autoshuikou.compress.prune import (
    prune,
)
from autoshuikou.measure.latency_model import layer_macs
from autoshuikou.plan import Plan
from autoshuikou.study.run import Run
from autoshuikou.study.screening import (
    LATENCY_MARGIN,
    Screen,
    time_untrained,
)
from autoshuikou.util import write_json


def reject(
    run: Run, trial: optuna.Trial, plan: Plan, reason: str, latency_ms: float, **facts: Any
) -> None:
    """Record ``plan`` as not trained (its plan and the reason under trials/, the latency as
    the constraint, so the sampler learns the region) and stop the trial: TrialPruned."""
    ctx = run.ctx
    trial.set_user_attr("rejected", reason)
    trial.set_constraint("latency", latency_ms - ctx.budget_ms)
    folder = ctx.trials_dir / f"{trial.number:04d}"
    write_json(folder / "plan.json", plan.to_dict())
    write_json(
        folder / "metrics.json",
        {"trial": trial.number, "rejected": reason, "budget_ms": ctx.budget_ms, **facts},
    )
    raise optuna.TrialPruned(reason)


def predict_latency(run: Run, trial: optuna.Trial, plan: Plan, exempt: bool) -> float | None:
    """The plan's predicted latency (None without a latency model); a plan predicted over
    the budget (plus the margin) is recorded and rejected: optuna.TrialPruned."""
    if run.latency_model is None:
        return None
    ctx, example = run.ctx, run.ctx.inputs
    student = prune(ctx.teacher, example, plan.prune, plan.round_to, ctx.family)
    ratio = run.latency_model.predict_ratio(layer_macs(student, example), plan)
    predicted = ratio * ctx.baseline.latency_ms
    trial.set_user_attr("latency_predicted_ms", predicted)
    if exempt or run.margin is None or predicted <= ctx.budget_ms * (1 + run.margin):
        return predicted
    reason = f"predicted {predicted:.3f} ms > budget {ctx.budget_ms:.3f} ms + {run.margin:.0%}"
    reject(run, trial, plan, reason, predicted, latency_predicted_ms=predicted)
    return None  # not reached: reject raises


def time_plan_untrained(
    run: Run, trial: optuna.Trial, plan: Plan, exempt_budget: bool
) -> Screen | None:
    """Where the fidelity times plans before training, the plan's untrained artifact timed
    (``study.screening``), the fidelity looking at its untrained student on the way; a
    plan over the budget (unless ``exempt_budget``) is recorded and not trained
    (TrialPruned)."""
    if not run.fidelity.times_untrained or plan.distill.epochs <= 0:
        return None  # nothing to save: the full trial trains nothing either
    ctx = run.ctx
    screen = time_untrained(
        ctx,
        trial.number,
        plan,
        lambda s: run.progress.stage(trial.number, s),
        run.fidelity.look_untrained(run, trial, plan),
    )
    for key, value in screen.to_attrs().items():
        trial.set_user_attr(key, value)
    limit = ctx.budget_ms * (1 + LATENCY_MARGIN)
    if exempt_budget or screen.latency_ms <= limit:
        return screen
    trial.set_user_attr("seconds", {"screening": screen.seconds})
    reason = (
        f"measured untrained: {screen.latency_ms:.3f} ms > budget {ctx.budget_ms:.3f} ms "
        f"+ {LATENCY_MARGIN:.0%}"
    )
    reject(run, trial, plan, reason, screen.latency_ms, **screen.to_attrs())
    return None  # not reached
