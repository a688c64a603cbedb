"""How far a sampled plan is trained before it is judged: one class per fidelity, by name.

* ``full``: every plan is trained fully (its latency may still be predicted first).
* ``screen``: the plan's untrained build is timed (over the budget: not trained), then its
  student is scored at a rung of half an epoch and stopped there when a trained trial as
  fast and small scored higher (``study.screening``).
* ``predict``: the untrained build is timed, and its score after BatchNorm recalibration
  predicts the trained metric (``study.predictor``); a plan that a trained one beats by more
  than the prediction's doubt is not trained.
* ``auto`` (the default): ``predict`` where the teacher has BatchNorm, ``screen`` where it
  has none (:func:`fidelity_for`).

Adding a fidelity is one class here and one entry in FIDELITIES.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import optuna
import torch
from optuna.trial import TrialState

from autoshuikou.compress.distill import Rung
from autoshuikou.measure.accuracy import torch_metric
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
    has_batchnorm,
    observed_trials,
    recalibrated_metric,
)
from autoshuikou.study.rejection import Rejection
from autoshuikou.study.screening import (
    SCREEN_EPOCHS,
    TOLERANCE,
    Screen,
    dominating,
    screened_trials,
)

if TYPE_CHECKING:  # a type only: the run holds the study's settings, which name the fidelities
    from autoshuikou.study.run import Run

AUTO = "auto"


class Fidelity:
    """A fidelity's three hooks into a trial, in the order the trial calls them. The base
    class trains every plan fully and looks at nothing. No hook stops a trial or writes to
    it: each returns what it decided, and what it saw goes to the ``facts`` it is given
    (the trial's objective records both)."""

    name: ClassVar[str]
    times_untrained: ClassVar[bool] = True  # time each plan's untrained build first

    def look_untrained(
        self, run: Run, number: int, plan: Plan, facts: dict[str, Any]
    ) -> Callable[[torch.nn.Module], None] | None:
        """What to do with the plan's untrained student while it is at hand (None: nothing)."""
        return None

    def judge_untrained(
        self, run: Run, trial: optuna.Trial, plan: Plan, untrained: Screen, facts: dict[str, Any]
    ) -> Rejection | None:
        """Decide before fine-tuning: None to train the plan, or why not."""
        return None

    def rung(self, run: Run, trial: optuna.Trial, untrained: Screen, anchor: bool) -> Rung | None:
        """A check part-way through fine-tuning (None: none)."""
        return None


class Full(Fidelity):
    name = "full"
    times_untrained = False


class Screening(Fidelity):
    name = "screen"

    def rung(self, run: Run, trial: optuna.Trial, untrained: Screen, anchor: bool) -> Rung | None:
        return screening_rung(run, trial, untrained, anchor)


class Prediction(Fidelity):
    name = "predict"

    def look_untrained(
        self, run: Run, number: int, plan: Plan, facts: dict[str, Any]
    ) -> Callable[[torch.nn.Module], None] | None:
        def signal(student: torch.nn.Module) -> None:  # the predictor's, while it is at hand
            run.progress.stage(number, "scoring the untrained student")
            facts[SIGNAL_ATTR] = recalibrated_metric(student, run.ctx.task, run.ctx.seed)
            facts[EPOCHS_ATTR] = plan.distill.epochs

        return signal

    def judge_untrained(
        self, run: Run, trial: optuna.Trial, plan: Plan, untrained: Screen, facts: dict[str, Any]
    ) -> Rejection | None:
        return predict_metric(run, trial, plan, untrained, facts)


FIDELITIES: dict[str, type[Fidelity]] = {f.name: f for f in (Prediction, Screening, Full)}


def fidelity_names() -> tuple[str, ...]:
    """What ``--fidelity`` takes."""
    return (AUTO, *FIDELITIES)


def fidelity_for(name: str, teacher: torch.nn.Module) -> Fidelity:
    """The fidelity ``name`` names, with "auto" resolved: the predictor where ``teacher``
    has BatchNorm, the rung where it has none. The predictor's signal is the score after
    adaptive BatchNorm; without BatchNorm it is the pruned model's untrained score, which
    ranked the trained encoders at Spearman 0.13 (docs/results/cheaper-trials.md, "The transformer
    task")."""
    if name == AUTO:
        name = Prediction.name if has_batchnorm(teacher) else Screening.name
    return FIDELITIES[name]()


def screening_rung(run: Run, trial: optuna.Trial, untrained: Screen, anchor: bool) -> Rung:
    """The check at SCREEN_EPOCHS of the plan's fine-tuning: the student's metric there goes
    to the rung's facts; unless an ``anchor``, training stops when a trained trial beats it."""
    ctx = run.ctx

    def check(student: torch.nn.Module) -> bool:
        started = time.monotonic()
        run.progress.stage(trial.number, f"screening at {SCREEN_EPOCHS:g} epoch")
        screen = replace(untrained, metric=torch_metric(student, ctx.task))
        seconds = round(time.monotonic() - started, 2)
        rung.facts.update(screen.to_attrs(), screen_check_seconds=seconds)
        if anchor:
            return True
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        beaten = dominating(screen, screened_trials(done), TOLERANCE * ctx.baseline.metric)
        if beaten is None:
            return True
        rung.reason = (
            f"screened out: {ctx.task.metric_name} {screen.metric:.4f} after "
            f"{SCREEN_EPOCHS:g} epoch at {screen.latency_ms:.3f} ms; trial {beaten.trial} "
            f"is as fast and small and scored {beaten.screen_metric:.4f} there"
        )
        return False

    rung = Rung(SCREEN_EPOCHS, check)
    return rung


def predict_metric(
    run: Run, trial: optuna.Trial, plan: Plan, untrained: Screen, facts: dict[str, Any]
) -> Rejection | None:
    """With the predictor (``study.predictor``): the plan's metric predicted from its signal
    (in ``facts``, where the prediction goes too); a rejection when a trained trial beats
    the prediction. Too few trained trials to fit: None, it is trained."""
    ctx = run.ctx
    trials = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    # The fit learns from every trained trial; a plan is compared with the feasible ones.
    observed = observed_trials(trials)
    feasible = {t.number for t in trials if is_feasible(t)}
    predictor = fit_predictor(observed)
    if predictor is None:
        return None
    signal = facts[SIGNAL_ATTR]
    prediction = predictor.predict(signal, plan.distill.epochs)
    if prediction is None:
        return None
    predicted, error = prediction
    facts.update({PREDICTED_ATTR: predicted, ERROR_ATTR: error})
    beaten = beating(
        predicted + SIGMAS * error,
        untrained.latency_ms,
        untrained.size_bytes,
        [o for o in observed if o.trial in feasible],
        TOLERANCE * ctx.baseline.metric,
    )
    if beaten is None:
        return None
    reason = (
        f"predicted out: {ctx.task.metric_name} {predicted:.4f} +- {error:.4f} "
        f"(from the untrained student's {signal:.4f}, {predictor.trained_on} trained "
        f"trials) at {untrained.latency_ms:.3f} ms; trial {beaten.trial} is as fast and "
        f"small and scored {beaten.metric:.4f}"
    )
    return Rejection(reason, untrained.latency_ms, {**untrained.to_attrs(), **facts})
