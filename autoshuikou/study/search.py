"""The search: wires task -> space -> baseline -> Optuna study -> Pareto front -> run files."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from autoshuikou.compress.teacher_cache import TeacherCache
from autoshuikou.measure.latency import REMEASURE_MAX_WINDOWS, REMEASURE_MIN_WINDOWS
from autoshuikou.measure.latency_model import LatencyModel
from autoshuikou.plan import Plan
from autoshuikou.report.progress import Progress
from autoshuikou.space.bind import BoundSpace, warm_start_params
from autoshuikou.study.budget import parse_budget
from autoshuikou.study.collapse import CollapseLine
from autoshuikou.study.config import SearchConfig
from autoshuikou.study.context import RunContext
from autoshuikou.study.fidelity import AUTO, Fidelity, Screening, fidelity_for
from autoshuikou.study.final import (
    remeasure,
    search_time_record,
)
from autoshuikou.study.front import front
from autoshuikou.study.loop import run_trials
from autoshuikou.study.objective import objective
from autoshuikou.study.objectives import (
    objectives_for,
)
from autoshuikou.study.prepare import (
    bind_context,
    check_energy_objective,
    check_reachable_budget,
    check_reachable_metric,
    measure_baseline,
    parse_min_metric,
    record_settings,
    resolve_device,
    study_fingerprint,
    writable_folder,
)
from autoshuikou.study.profile import cache_path, load_or_build_latency_model
from autoshuikou.study.run import Run
from autoshuikou.study.samplers import make_sampler
from autoshuikou.study.storage import (
    check_joinable,
    existing_storage,
    make_storage,
    open_study,
)
from autoshuikou.study.students import (
    StudentStore,
)
from autoshuikou.study.summary import build_summary, plot_front
from autoshuikou.study.workers import (
    WORKER_ATTR,
)
from autoshuikou.tasks import Task, load_task, task_for
from autoshuikou.util import read_json, write_json

# A plan is rejected before fine-tuning only when predicted > budget * (1 + margin), the
# margin being the latency model's own 90th-percentile cross-validated error on this
# machine (at least this): so a plan that would fit is rarely thrown away.
REJECT_MARGIN = 0.10
# A model less accurate than this (90th-percentile error) would need so wide a margin that it
# rejects little, and wrongly: it only records its predictions then.
MAX_TRUSTED_P90 = 0.25


@dataclass
class SearchResult:
    run_dir: Path
    summary: dict[str, Any]

    @property
    def feasible(self) -> bool:
        return bool(self.summary["pareto"])

    @property
    def pareto(self) -> list[dict[str, Any]]:
        return list(self.summary["pareto"])


FixedPlans = Callable[[BoundSpace], dict[str, Plan]]


def search(
    task: Task | str | None = None,
    config: SearchConfig | None = None,
    progress: Progress | None = None,
    fixed_plans: FixedPlans | None = None,
    **settings: Any,
) -> SearchResult:
    """Find the Pareto-optimal compressed models of ``task`` under a latency budget.

    ``task`` is a Task, or a spec that overrides ``config.task``; ``settings`` override
    fields of ``config`` (default ``SearchConfig()``), so ``search(task, budget="60%")``
    works as the docs show (docs/own-model.md).

    Running it again with the same settings resumes the study under ``out/<study_name>``;
    workers started with the same ``storage`` and ``study_name`` share one study, and
    ``trials`` is their common total. With ``predict``, a latency model learned on this
    machine (built on first use, cached) rejects plans predicted to miss the budget before
    they are fine-tuned.

    ``fixed_plans`` makes plans (label -> Plan) from the bound space, once its rounding is
    measured; they run first and are never rejected by prediction: baselines for
    comparisons. Without ``final_remeasure`` the front keeps its search-time latencies
    (labelled so). ``warm_start`` begins the study with the uniform plans (same prune ratio
    everywhere, fp32 and int8), so the sampler starts from the classic baselines instead of
    from nothing; plans predicted over budget among them are rejected as any other.
    ``energy_objective`` adds energy per inference (minimized) as a fourth objective; only
    where the machine has readable energy counters. ``fidelity="predict"``
    measures each sampled plan's latency untrained and predicts its trained metric from
    cheap signals (``study.predictor``); ``"screen"`` scores it after half an epoch instead
    (``study.screening``); both train fully only the plans that could join the front.
    ``"full"`` trains every plan; ``"auto"`` (the default) is ``"predict"`` where the model
    has BatchNorm and ``"screen"`` where it has none (``study.fidelity``). ``device``
    is where fine-tuning runs ("auto": CUDA when available).
    ``refine`` front models (None: the space's ``refine.models``) are then trained again
    with ``refine_epochs`` (None: the space's ``refine.epochs``; see ``study.refine``).
    """
    started = time.monotonic()
    config = replace(config or SearchConfig(), **settings)
    run = _prepare(task, config, progress or Progress(), fixed_plans, started)
    study, ctx = _open(run)
    # From here on the context holds the study creator's reference latency and budget.
    run = replace(run, ctx=ctx)
    record_settings(run.config, run.ctx.task, run.name, run.ctx.run_dir, run.from_python)
    try:
        stopped_early = run_trials(run, study, objective)
        run.progress.end()
    except KeyboardInterrupt:
        run.progress.end()
        # What finished is a run: show, verify and export work on it (no re-measuring:
        # the user asked to stop). A rerun resumes and writes the full summary.
        _finish(run, study, "interrupted", measure_again=False)
        raise
    return _finish(run, study, stopped_early)


def _prepare(
    task: Task | str | None,
    config: SearchConfig,
    progress: Progress,
    fixed_plans: FixedPlans | None,
    started: float,
) -> Run:
    """Check what can be checked before any work (the settings, the storage, an existing
    study's fingerprint), then measure the baseline, resolve the budget and refuse what no
    plan can meet, then load the latency model. Nothing of the run is written before the
    checks that need no measurement have passed, and nothing but the baseline before the
    rest have: a refused run leaves every existing file as it was."""
    budget = parse_budget(config.budget)
    writable_folder(Path(config.out), "--out")
    check_energy_objective(config.energy_objective)
    from_python = isinstance(task, Task)
    task, config = _task(task, config)
    name = config.study_name or f"{task.name}-{budget.slug}"
    device = resolve_device(config.device)
    ctx, identity = bind_context(
        task,
        config.space,
        Path(config.out) / name,
        config.seed,
        config.threads,
        config.measure_seconds,
        progress,
        config.runtime,
    )
    fingerprint = study_fingerprint(config, identity, ctx.space)
    existing = existing_storage(config.storage, ctx.run_dir)  # None: no study there yet
    if existing is not None:
        check_joinable(existing, name, fingerprint)
    check_reachable_metric(task, config.min_accuracy)
    ctx = measure_baseline(ctx, identity, progress)
    setup = {"baseline": round(time.monotonic() - started, 1)}
    b = ctx.baseline
    fixed = {
        label: p.to_dict() for label, p in (fixed_plans(ctx.space) if fixed_plans else {}).items()
    }
    fingerprint["fixed_plans"] = sorted(fixed)
    ctx = replace(
        ctx,
        device=device,
        teacher_cache=(
            TeacherCache(config.teacher_cache_mb * 2**20) if config.teacher_cache_mb > 0 else None
        ),
        budget_ms=budget.resolve_ms(b.latency_ms),
        min_metric=parse_min_metric(config.min_accuracy, b.metric),
    )
    progress.line(
        f"baseline: {task.metric_name} {b.metric:.4f}, {b.latency_ms:.3f} ms (spread {b.latency_spread:.0%}), "
        f"{b.size_bytes / 1024:.0f} KiB; int8 format {b.int8_format.name}; "
        f"budget {ctx.budget_ms:.3f} ms; fastest reachable {b.fastest_latency_ms:.3f} ms"
    )
    check_reachable_budget(ctx, config.budget)
    fidelity = _fidelity(config.fidelity, ctx, progress)
    latency_model, margin = _latency_model(ctx, config.predict, fidelity, progress, setup)
    storage = existing or make_storage(config.storage, ctx.run_dir)
    objectives = objectives_for(config.energy_objective)
    if device != "cpu":
        progress.line(f"fine-tuning on {device}; latency is timed in {config.runtime} on the CPU")
    return Run(
        config,
        ctx,
        identity,
        name,
        objectives,
        fixed,
        latency_model,
        margin,
        progress,
        started,
        setup,
        fidelity,
        StudentStore() if config.reuse_students else None,
        storage,
        fingerprint,
        from_python,
        collapse=CollapseLine.of(task, b.metric),
    )


def _task(task: Task | str | None, config: SearchConfig) -> tuple[Task, SearchConfig]:
    """The task to search (a spec overrides the config's task and model), and the config
    that names it."""
    if isinstance(task, str):
        return load_task(task), replace(config, task=task, model=None)
    return (task_for(config) if task is None else task), config


def _fidelity(name: str, ctx: RunContext, progress: Progress) -> Fidelity:
    """The fidelity ``--fidelity`` names, "auto" resolved for the teacher (and said why)."""
    fidelity = fidelity_for(name, ctx.teacher)
    if name == AUTO and fidelity.name == Screening.name:
        progress.line(
            "fidelity: screen (the model has no BatchNorm, so the predictor's signal "
            "would be its untrained score, which hardly ranks trained models; plans are "
            "scored after half an epoch instead)"
        )
    return fidelity


def _latency_model(
    ctx: RunContext, predict: bool, fidelity: Fidelity, progress: Progress, setup: dict[str, float]
) -> tuple[LatencyModel | None, float | None]:
    """With ``predict``, the latency model learned on this machine (built on first use,
    cached; what building it cost goes to ``setup``), and the margin over the budget beyond
    which it rejects a plan (None: it rejects none, too inaccurate)."""
    latency_model = None
    if predict:
        latency_model = load_or_build_latency_model(ctx, progress)
        # What building it cost, charged to every run that uses it (cached or not), so
        # that strategies compare by what they would cost on a fresh machine.
        cached = cache_path(ctx)
        setup["profiling"] = (
            float(read_json(cached).get("seconds", 0.0)) if cached.exists() else 0.0
        )
    margin = max(REJECT_MARGIN, latency_model.holdout_p90) if latency_model else None
    if latency_model is not None and latency_model.holdout_p90 > MAX_TRUSTED_P90:
        margin = None  # predictions are still recorded beside the measurements
        progress.line(
            f"the latency model's 90th-percentile error is {latency_model.holdout_p90:.0%} "
            f"(over {MAX_TRUSTED_P90:.0%}): it rejects no plans"
            + (
                "; each plan's untrained artifact is timed instead"
                if fidelity.times_untrained
                else ""
            )
        )
    if margin is not None:
        progress.line(
            f"plans predicted above {ctx.budget_ms * (1 + margin):.3f} ms (budget + {margin:.0%}, "
            "the latency model's 90th-percentile error, at least 10%) are rejected before fine-tuning"
        )
    return latency_model, margin


def _open(run: Run) -> tuple[optuna.Study, RunContext]:
    """Create or join the study; the context with the creator's baseline latency and
    budget, which hold on every worker."""
    config, ctx = run.config, run.ctx
    sampler = make_sampler(config.sampler, config.seed)
    # The creator's reference latency and budget hold for every worker, so all trials'
    # latencies (ratio to the local baseline x the reference) share one scale.
    shared = {"baseline_latency_ms": ctx.baseline.latency_ms, "budget_ms": ctx.budget_ms}
    warm = warm_start_params(ctx.space) if config.warm_start else {}
    study = open_study(
        run.storage,
        ctx.run_dir,
        run.name,
        run.fingerprint,
        sampler,
        shared,
        run.fixed,
        warm,
        run.objectives,
    )
    reference = replace(ctx.baseline, latency_ms=study.user_attrs["baseline_latency_ms"])
    return study, replace(ctx.with_baseline(reference), budget_ms=study.user_attrs["budget_ms"])


def _finish(
    run: Run, study: optuna.Study, stopped_early: str | None, measure_again: bool = True
) -> SearchResult:
    """Re-measure the front (unless told not to), write summary.json and front.png."""
    config, ctx = run.config, run.ctx
    measure_again = measure_again and config.final_remeasure
    # A front model that ran on another machine with its own --out has no files here: it
    # keeps its search-time record, from the study.
    on_front = front(study)
    here = [t for t in on_front if (ctx.trials_dir / f"{t.number:04d}").is_dir()]
    elsewhere = [t for t in on_front if t not in here]
    candidates = [t.number for t in here]
    if candidates and measure_again:
        run.progress.line(
            f"re-measuring the {len(candidates)} Pareto models against the baseline "
            f"({REMEASURE_MIN_WINDOWS} to {REMEASURE_MAX_WINDOWS} timing windows each)"
        )
    remeasure_started = time.monotonic()
    if candidates and measure_again:
        # Rounds until every model's ratio settles: at most REMEASURE_MAX_WINDOWS.
        with run.progress.steps("re-measuring the front", REMEASURE_MAX_WINDOWS) as tick:
            models = remeasure(ctx, candidates, tick)
    else:
        models = [search_time_record(t) for t in here]
    models += [
        search_time_record(t, ran_on=str(t.user_attrs.get(WORKER_ATTR, "another worker")))
        for t in elsewhere
    ]
    summary = build_summary(
        study, ctx, models, config.budget, time.monotonic() - run.started, run.setup_seconds
    )
    summary["time"]["remeasure_seconds"] = round(time.monotonic() - remeasure_started, 1)
    summary["front_remeasured"] = measure_again
    summary["stopped_early"] = stopped_early
    summary["reject_margin"] = run.margin
    summary["fidelity"] = run.fidelity.name  # "auto" resolved: how plans were decided
    write_json(ctx.run_dir / "summary.json", summary)
    plot_front(study, summary, ctx.run_dir / "front.png", ctx.run_dir)
    return SearchResult(run_dir=ctx.run_dir, summary=summary)
