"""The gates a sampled plan passes before it is fine-tuned fully: its latency predicted or
measured untrained, its metric predicted (``study.predictor``) or checked at the rung
(``study.screening``). A gate returns a :class:`Rejection` instead of stopping anything
itself; the trial's objective records it (:func:`reject`) and stops the trial."""

from __future__ import annotations

from typing import Any

import optuna

from autoshuikou.compress.prune import prune
from autoshuikou.measure.latency_model import layer_macs
from autoshuikou.plan import Plan
from autoshuikou.study.rejection import Rejection
from autoshuikou.study.run import Run
from autoshuikou.study.screening import LATENCY_MARGIN, Screen, time_untrained
from autoshuikou.util import write_json


def reject(run: Run, trial: optuna.Trial, plan: Plan, rejection: Rejection) -> None:
    """Record ``plan`` as not trained (its plan and the reason under trials/, the reason and
    the latency constraint in the study) and stop the trial: optuna.TrialPruned."""
    ctx = run.ctx
    trial.set_user_attr("rejected", rejection.reason)
    trial.set_constraint("latency", rejection.latency_ms - ctx.budget_ms)
    folder = ctx.trials_dir / f"{trial.number:04d}"
    write_json(folder / "plan.json", plan.to_dict())
    write_json(
        folder / "metrics.json",
        {
            "trial": trial.number,
            "rejected": rejection.reason,
            "budget_ms": ctx.budget_ms,
            **rejection.facts,
        },
    )
    raise optuna.TrialPruned(rejection.reason)


def predict_latency(run: Run, plan: Plan, exempt: bool) -> tuple[float | None, Rejection | None]:
    """The plan's predicted latency (None without a latency model), and a rejection when it
    is predicted over the budget plus the margin (never for an ``exempt`` plan)."""
    if run.latency_model is None:
        return None, None
    ctx, example = run.ctx, run.ctx.inputs
    student = prune(ctx.teacher, example, plan.prune, plan.round_to, ctx.family)
    ratio = run.latency_model.predict_ratio(layer_macs(student, example), plan)
    predicted = ratio * ctx.baseline.latency_ms
    if exempt or run.margin is None or predicted <= ctx.budget_ms * (1 + run.margin):
        return predicted, None
    reason = f"predicted {predicted:.3f} ms > budget {ctx.budget_ms:.3f} ms + {run.margin:.0%}"
    return predicted, Rejection(reason, predicted, {"latency_predicted_ms": predicted})


def time_plan_untrained(
    run: Run, number: int, plan: Plan, exempt_budget: bool, facts: dict[str, Any]
) -> tuple[Screen | None, Rejection | None]:
    """Where the fidelity times plans before training: the plan's untrained artifact timed
    (``study.screening``), the fidelity looking at its untrained student on the way (what it
    sees goes to ``facts``); a rejection when it is over the budget (unless
    ``exempt_budget``). (None, None): the fidelity does not time plans untrained."""
    if not run.fidelity.times_untrained or plan.distill.epochs <= 0:
        return None, None  # nothing to save: the full trial trains nothing either
    ctx = run.ctx
    screen = time_untrained(
        ctx,
        number,
        plan,
        lambda s: run.progress.stage(number, s),
        run.fidelity.look_untrained(run, number, plan, facts),
    )
    limit = ctx.budget_ms * (1 + LATENCY_MARGIN)
    if exempt_budget or screen.latency_ms <= limit:
        return screen, None
    reason = (
        f"measured untrained: {screen.latency_ms:.3f} ms > budget {ctx.budget_ms:.3f} ms "
        f"+ {LATENCY_MARGIN:.0%}"
    )
    return screen, Rejection(reason, screen.latency_ms, screen.to_attrs())
