"""The gates a sampled plan passes before it is fine-tuned fully: its latency predicted or
measured untrained, its metric predicted (``study.predictor``) or checked at the rung
(``study.screening``). A plan that fails one is recorded, with the reason, and not trained."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from autoshuikou.compress.distill import Rung
from autoshuikou.compress.prune import (
    prune,
)
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.measure.latency_model import layer_macs
from autoshuikou.plan import Plan
from autoshuikou.study.pareto import is_feasible
from autoshuikou.study.predictor import (
    EPOCHS_ATTR,
    ERROR_ATTR,
    PREDICTED_ATTR,
    SIGMAS,
    SIGNAL_ATTR,
    beating,
    fit_predictor,
    observed_trials,
    recalibrated_metric,
)
from autoshuikou.study.run import Run
from autoshuikou.study.screening import (
    LATENCY_MARGIN,
    SCREEN_EPOCHS,
    TOLERANCE,
    Screen,
    ScreenedOut,
    dominating,
    screened_trials,
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
    """With screening or the predictor, the plan's untrained artifact timed
    (``study.screening``), and for the predictor its signal recorded (``study.predictor``);
    a plan over the budget (unless ``exempt_budget``) is recorded and not trained
    (TrialPruned)."""
    if run.fidelity == "full" or plan.distill.epochs <= 0:
        return None  # nothing to save: the full trial trains nothing either
    ctx = run.ctx

    def signal(student: torch.nn.Module) -> None:  # the predictor's, while it is at hand
        run.progress.stage(trial.number, "scoring the untrained student")
        trial.set_user_attr(SIGNAL_ATTR, recalibrated_metric(student, ctx.task, ctx.seed))
        trial.set_user_attr(EPOCHS_ATTR, plan.distill.epochs)

    screen = time_untrained(
        ctx,
        trial.number,
        plan,
        lambda s: run.progress.stage(trial.number, s),
        signal if run.fidelity == "predict" else None,
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


def rung(
    run: Run, trial: optuna.Trial, untrained: Screen, anchor: bool, extra: dict[str, Any]
) -> Rung:
    """The check at SCREEN_EPOCHS of the plan's fine-tuning: record the student's metric
    there (on the trial, and in ``extra`` for its metrics.json); unless an ``anchor``, stop
    (ScreenedOut) when a trained trial beats it."""
    ctx = run.ctx

    def check(student: torch.nn.Module) -> None:
        started = time.monotonic()
        run.progress.stage(trial.number, f"screening at {SCREEN_EPOCHS:g} epoch")
        screen = replace(untrained, metric=torch_metric(student, ctx.task))
        attrs = {**screen.to_attrs(), "screen_check_seconds": round(time.monotonic() - started, 2)}
        extra.update(attrs)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if anchor:
            return
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        beaten = dominating(screen, screened_trials(done), TOLERANCE * ctx.baseline.metric)
        if beaten is not None:
            raise ScreenedOut(
                f"screened out: {ctx.task.metric_name} {screen.metric:.4f} after "
                f"{SCREEN_EPOCHS:g} epoch at {screen.latency_ms:.3f} ms; trial {beaten.trial} "
                f"is as fast and small and scored {beaten.screen_metric:.4f} there",
                screen,
            )

    return (SCREEN_EPOCHS, check)


def predict_metric(run: Run, trial: optuna.Trial, plan: Plan, untrained: Screen) -> None:
    """With the predictor (``study.predictor``): the plan's metric predicted from its signal;
    when a trained trial beats the prediction, the plan is recorded and not trained
    (TrialPruned). Too few trained trials to fit: it is trained."""
    ctx = run.ctx
    trials = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # The fit learns from every trained trial; a plan is compared with the feasible ones.
    observed = observed_trials(trials)
    feasible = {t.number for t in trials if is_feasible(t)}
    predictor = fit_predictor(observed)
    if predictor is None:
        return
    signal = trial.user_attrs[SIGNAL_ATTR]
    prediction = predictor.predict(signal, plan.distill.epochs)
    if prediction is None:
        return
    predicted, error = prediction
    trial.set_user_attr(PREDICTED_ATTR, predicted)
    trial.set_user_attr(ERROR_ATTR, error)
    beaten = beating(
        predicted + SIGMAS * error,
        untrained.latency_ms,
        untrained.size_bytes,
        [o for o in observed if o.trial in feasible],
        TOLERANCE * ctx.baseline.metric,
    )
    if beaten is None:
        return
    trial.set_user_attr("seconds", {"screening": untrained.seconds})
    reason = (
        f"predicted out: {ctx.task.metric_name} {predicted:.4f} +- {error:.4f} "
        f"(from the untrained student's {signal:.4f}, {predictor.trained_on} trained "
        f"trials) at {untrained.latency_ms:.3f} ms; trial {beaten.trial} is as fast and "
        f"small and scored {beaten.metric:.4f}"
    )
    facts = {
        **untrained.to_attrs(),
        SIGNAL_ATTR: signal,
        PREDICTED_ATTR: predicted,
        ERROR_ATTR: error,
    }
    reject(run, trial, plan, reason, untrained.latency_ms, **facts)
