"""One trial, as one straight pipeline: plan -> gates (latency predicted, the untrained
build timed, the fidelity's judgement) -> fine-tuning (to the rung, or fully) -> artifact
-> measurement -> the trial's record. Every stage below returns what it decided; this
module writes what the trial found to its attributes and ends a trial (through
``gates.reject``). Beside it only the worker loop writes to a trial: its worker's identity
and heartbeat (``study.workers``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import torch

from autoshuikou.compress.distill import Rung
from autoshuikou.plan import Plan
from autoshuikou.study.gates import predict_latency, reject, time_plan_untrained
from autoshuikou.study.objectives import point
from autoshuikou.study.predictor import ERROR_ATTR, PREDICTED_ATTR, SIGNAL_ATTR
from autoshuikou.study.record import TRIAL_PLAN_ATTR, TrialRecord
from autoshuikou.study.refine import PLAN_ATTR, REFINE_ATTR
from autoshuikou.study.rejection import Rejection
from autoshuikou.study.run import Run
from autoshuikou.study.screening import Screen
from autoshuikou.study.students import STUDENT_FROM_ATTR, KeptStudent, StudentStore, student_key
from autoshuikou.study.trial import CHECK_SECONDS, STUDENT_NAME, run_trial, rung_facts


def _plan(run: Run, trial: optuna.Trial) -> tuple[Plan, bool]:
    """The trial's plan (a reference, a fixed plan, or the sampler's suggestion), and
    whether it is a baseline: those are always measured, never rejected by prediction."""
    attrs = trial.user_attrs
    if attrs.get("reference"):
        return run.ctx.space.reference_plan(attrs["reference"]), True
    if attrs.get(PLAN_ATTR):
        return Plan.from_dict(attrs[PLAN_ATTR]), True
    return run.ctx.space.suggest(trial), False


def _keep_student(students: StudentStore, key: str, trial: optuna.Trial, trials_dir: Path) -> None:
    """Keep the student ``trial`` just trained (read back from its folder) for a twin plan."""
    path = trials_dir / f"{trial.number:04d}" / STUDENT_NAME
    weights = torch.load(path, map_location="cpu", weights_only=True)
    students.put(key, KeptStudent(trial.number, weights, trial.user_attrs.get("screen_metric")))


def _record(trial: optuna.Trial, facts: dict[str, Any]) -> None:
    """The trial's attributes: written here, by the objective, and nowhere below it."""
    for key, value in facts.items():
        trial.set_user_attr(key, value)


def objective(run: Run, trial: optuna.Trial) -> tuple[float, ...]:
    """One trial, in order: plan -> gates (latency predicted, untrained build timed, the
    fidelity's judgement) -> fine-tuning (to the rung, or fully) -> artifact -> measurement
    -> the trial's record. A gate or the rung that stops the plan returns a
    :class:`Rejection`, recorded here (``reject`` ends the trial)."""
    ctx = run.ctx
    plan, baseline = _plan(run, trial)
    _record(trial, {TRIAL_PLAN_ATTR: plan.to_dict()})  # in the study: any machine reads it
    predicted, rejected = predict_latency(run, plan, exempt=baseline)
    facts: dict[str, Any] = {} if predicted is None else {"latency_predicted_ms": predicted}
    _record(trial, facts)
    if rejected is not None:
        reject(run, trial, plan, rejected)
    # The uniform plans the study starts from are always trained once they fit the budget:
    # they are what later plans are screened against.
    anchor = baseline or "warm_start" in trial.user_attrs
    same_student = student_key(plan, ctx.seed, ctx.device)
    twin = run.students.get(same_student) if run.students is not None else None
    seen: dict[str, Any] = {}  # what the fidelity saw of the untrained student
    untrained, rejected = time_plan_untrained(run, trial.number, plan, baseline, seen)
    if untrained is not None:
        _record(trial, {**untrained.to_attrs(), **seen})
        facts.update(untrained.to_attrs())
        if rejected is None and not anchor and twin is None:
            rejected = run.fidelity.judge_untrained(run, trial, plan, untrained, seen)
            _record(trial, seen)
        if rejected is not None:
            _record(trial, {"seconds": {"screening": untrained.seconds}})
            reject(run, trial, plan, rejected)
    facts.update({k: seen[k] for k in (SIGNAL_ATTR, PREDICTED_ATTR, ERROR_ATTR) if k in seen})
    facts.update(_twin_facts(trial, twin))
    if REFINE_ATTR in trial.user_attrs:  # both scores stay on record: search time and refined
        source = trial.user_attrs[REFINE_ATTR]
        facts["refined_from"] = source
        facts["metric_before_refine"] = trial.study.get_trials(deepcopy=False)[source].user_attrs[
            "metric"
        ]
    rungs: list[Rung] = []
    if untrained is not None and twin is None:
        rungs = _rungs(run, trial, plan, untrained, anchor)
    metrics = _train_and_measure(run, trial, plan, facts, rungs, untrained, twin)
    record = TrialRecord.from_metrics(metrics)
    _record(trial, {**record.to_attrs(), "seconds": metrics["seconds"]})
    if plan.distill.epochs <= 0:  # never trained: the same model at any point of training
        _record(trial, {"screen_metric": record.metric})
    elif run.students is not None and twin is None:
        _keep_student(run.students, same_student, trial, ctx.trials_dir)
    trial.set_constraint("latency", record.latency_ms - ctx.budget_ms)
    if ctx.min_metric is not None:
        trial.set_constraint("metric", ctx.min_metric - record.metric)
    return point(record, run.objectives)


def _rungs(
    run: Run, trial: optuna.Trial, plan: Plan, untrained: Screen, anchor: bool
) -> list[Rung]:
    """The checks part-way through the plan's fine-tuning: the fidelity's, and (but for an
    ``anchor``) the one that stops a collapsed student (``study.collapse``)."""

    def stage(what: str) -> None:
        run.progress.stage(trial.number, what)

    # The anchors (references, uniform plans, fixed and refined plans) are always trained:
    # the study is judged against them.
    collapse = None
    if run.collapse is not None and not anchor:
        collapse = run.collapse.rung(run.ctx.task, plan.distill.epochs, stage)
    return [r for r in (run.fidelity.rung(run, trial, untrained, anchor), collapse) if r]


def _twin_facts(trial: optuna.Trial, twin: KeptStudent | None) -> dict[str, Any]:
    """Where an earlier trial trained this plan's student: which, and its score at the rung."""
    if twin is None:
        return {}
    facts: dict[str, Any] = {STUDENT_FROM_ATTR: twin.trial}
    if twin.screen_metric is not None:  # the same student at the rung
        facts["screen_metric"] = twin.screen_metric
    _record(trial, facts)
    return facts


def _train_and_measure(
    run: Run,
    trial: optuna.Trial,
    plan: Plan,
    facts: dict[str, Any],
    rungs: list[Rung],
    untrained: Screen | None,
    twin: KeptStudent | None,
) -> dict[str, Any]:
    """Fine-tune, build and measure the plan (``run_trial``); its metrics. Stopped at a
    rung (screened out, collapsed), the plan is recorded as rejected (``reject`` ends the
    trial)."""
    started = time.monotonic()
    try:
        metrics = run_trial(
            run.ctx,
            trial.number,
            plan,
            lambda s: run.progress.stage(trial.number, s),
            facts,
            rungs,
            # Timed before training: the trained artifact has the same graph (trial.py).
            untrained.timing if untrained is not None else None,
            twin.weights if twin is not None else None,
            untrained.student if untrained is not None else None,
        )
    except Exception as exc:
        _record(trial, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    seen = rung_facts(rungs)
    _record(trial, seen)
    if metrics is not None:
        return metrics
    stopped = next(r for r in rungs if r.stopped)  # only a rung stops training
    assert untrained is not None  # rungs are set only where the plan was timed untrained
    check = sum(float(seen.get(key, 0.0)) for key in CHECK_SECONDS)
    seconds = {
        "screening": round(untrained.seconds + check, 2),
        "training": round(time.monotonic() - started - check, 2),
    }
    _record(trial, {"seconds": seconds})
    reject(run, trial, plan, Rejection(stopped.reason, untrained.latency_ms, facts | seen))
    raise AssertionError("reject ends the trial")  # not reached
