"""The search: wires task -> space -> baseline -> Optuna study -> Pareto front -> run files."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from math import nan
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.storages import BaseStorage, RDBStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from autoshuikou import __version__
from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.compress.distill import Rung
from autoshuikou.compress.prune import (
    channel_groups,
    head_pruning_notes,
    output_layer_names,
    prune,
)
from autoshuikou.compress.teacher_cache import TeacherCache
from autoshuikou.errors import UserError
from autoshuikou.interrupt import raise_if_interrupted
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.measure.energy import find_energy_counter
from autoshuikou.measure.fingerprint import hardware_fingerprint
from autoshuikou.measure.latency import REMEASURE_MAX_WINDOWS, REMEASURE_MIN_WINDOWS
from autoshuikou.measure.latency_model import LatencyModel, layer_macs
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.plan import Plan
from autoshuikou.report.plots import plot_search_front
from autoshuikou.report.progress import Progress
from autoshuikou.runtimes import DEFAULT_RUNTIME, get_runtime
from autoshuikou.space.bind import BoundSpace, bind_space, warm_start_params
from autoshuikou.space.schema import load_space
from autoshuikou.study.baseline import model_digest, prepare_baseline
from autoshuikou.study.budget import parse_budget
from autoshuikou.study.config import SearchConfig, resolved_config, write_config
from autoshuikou.study.context import RunContext
from autoshuikou.study.final import (
    NOISY_WINDOW_SPREAD,
    FrontModel,
    final_front,
    remeasure,
    search_time_record,
)
from autoshuikou.study.objectives import (
    ENERGY,
    Objective,
    objectives_for,
    point,
    study_objectives,
)
from autoshuikou.study.optuna_adapter import fail_trial
from autoshuikou.study.pareto import is_feasible, pareto_indices
from autoshuikou.study.predictor import (
    EPOCHS_ATTR,
    ERROR_ATTR,
    PREDICTED_ATTR,
    SIGMAS,
    SIGNAL_ATTR,
    beating,
    fit_predictor,
    has_batchnorm,
    judged_on_metric,
    observed_trials,
    recalibrated_metric,
)
from autoshuikou.study.profile import cache_path, load_or_build_latency_model
from autoshuikou.study.record import TRIAL_PLAN_ATTR, TrialRecord, TrialTags
from autoshuikou.study.refine import (
    PLAN_ATTR,
    REFINE_ATTR,
    Candidate,
    refine_targets,
    refined_plan,
    refinement_done,
    run_new_trial,
)
from autoshuikou.study.samplers import make_sampler
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
from autoshuikou.study.storage import (
    STUDY_FORMAT,
    ReservationLock,
    check_joinable,
    fail_orphaned_trials,
    make_storage,
    open_study,
    reservation_lock,
)
from autoshuikou.study.students import (
    STUDENT_FROM_ATTR,
    KeptStudent,
    StudentStore,
    student_key,
)
from autoshuikou.study.trial import PHASES, STUDENT_NAME, run_trial
from autoshuikou.study.workers import (
    GRACE_SECONDS,
    WORKER_ATTR,
    Heartbeat,
    StaleWatch,
    describe_running,
    fail_gone_workers,
    mark_running,
)
from autoshuikou.tasks import Task, load_task, task_for
from autoshuikou.util import file_lock, read_json, write_json

# A trial that fails on one of these stops the search at once, with the message for it.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
FLOOR_MARGIN = 0.9  # timing noise allowance when comparing a budget with the fastest plan
MAX_CONSECUTIVE_FAILURES = 3
# A plan is rejected before fine-tuning only when predicted > budget * (1 + margin), the
# margin being the latency model's own 90th-percentile cross-validated error on this
# machine (at least this): so a plan that would fit is rarely thrown away.
REJECT_MARGIN = 0.10
# A model less accurate than this (90th-percentile error) would need so wide a margin that it
# rejects little, and wrongly: it only records its predictions then.
MAX_TRUSTED_P90 = 0.25
# Trials that count towards --trials: trained and measured, or screened (fine-tuned briefly
# and scored). A plan rejected on latency alone (predicted, or measured untrained) costs
# seconds, so it does not use up the count (a tight budget would otherwise evaluate fewer
# plans than asked); MAX_REJECTED_IN_A_ROW stops a search that finds nothing else.
MAX_REJECTED_IN_A_ROW = 50


def counted(trial: FrozenTrial) -> bool:
    """Whether ``trial`` counts towards ``trials``: trained, or screened after training began
    (refined trials come after the count: see ``study.refine``)."""
    if REFINE_ATTR in trial.user_attrs:
        return False
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and screened(trial)
    )


def screened(trial: FrozenTrial) -> bool:
    """Whether the plan of ``trial`` was judged on its metric (at the rung, or predicted)."""
    return judged_on_metric(trial.user_attrs)


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if counted(t)]


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


def parse_min_metric(text: str | float | None, baseline_metric: float) -> float | None:
    """'0.97' is absolute; '99%' is relative to the baseline's metric."""
    if text is None:
        return None
    raw = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?)(%?)", raw)
    if not match:
        raise UserError(
            f"cannot read --min-accuracy {raw!r}",
            'give an absolute value such as 0.97 or "99%" of the baseline',
        )
    value = float(match.group(1))
    return baseline_metric * value / 100 if match.group(2) else value


def layer_names(task: Task, runtime: str = DEFAULT_RUNTIME) -> list[str]:
    """The task model's layers that plans set to int8 or fp32 (``Runtime.layers``)."""
    return get_runtime(runtime).layers(task.model, task.inputs, task.family)


def bind_task_space(
    task: Task, space: str | Path | None, runtime: str = DEFAULT_RUNTIME
) -> BoundSpace:
    teacher = task.model.eval()
    groups = channel_groups(teacher, task.inputs, task.family)
    modules = [name for name, _ in teacher.named_modules()]
    family = task.family_impl
    loaded = load_space(space, family.default_space)
    fp32 = [] if family.int8_outputs else output_layer_names(teacher, task.inputs, task.family)
    return bind_space(loaded, groups, layer_names(task, runtime), modules, fp32)


def front(
    study: optuna.Study, among: Callable[[FrozenTrial], bool] = lambda _t: True
) -> list[FrozenTrial]:
    """The Pareto set of the feasible trials (of those ``among`` accepts)."""
    objectives = study_objectives(study)
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t) and among(t)]
    return [feasible[i] for i in pareto_indices([point(t, objectives) for t in feasible])]


def _best_text(study: optuna.Study) -> str:
    best = max(front(study), key=lambda t: TrialRecord.from_trial(t).metric, default=None)
    if best is None:
        return "none feasible yet"
    record = TrialRecord.from_trial(best)
    return f"metric {record.metric:.4f} @ {record.latency_ms:.3f} ms (trial {best.number})"


def prune_artifacts(study: optuna.Study, run_dir: Path, artifact_name: str) -> None:
    """Delete model files of trials that can never be on the front: infeasible or dominated.

    Dominance is permanent, so nothing deleted is needed later; plans and metrics stay.
    """
    keep = {t.number for t in front(study)}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.number not in keep:
            folder = run_dir / "trials" / f"{trial.number:04d}"
            (folder / artifact_name).unlink(missing_ok=True)
            (folder / STUDENT_NAME).unlink(missing_ok=True)


def _summary_point(model: FrontModel, artifact_name: str) -> dict[str, Any]:
    r = model.record
    return {
        "trial": model.trial,
        # None: it ran on another machine with its own --out, which holds its files.
        "path": None if model.ran_on else f"trials/{model.trial:04d}/{artifact_name}",
        **({"ran_on": model.ran_on} if model.ran_on else {}),
        "metric": r.metric,
        "metric_retained": r.metric_retained,
        "latency_ms": model.latency_ms,
        "latency_ratio": model.ratio,
        "ratio_spread": model.spread,
        "latency_ms_search": r.latency_ms,
        "speedup": 1 / model.ratio,
        "size_bytes": r.size_bytes,
        "macs": r.macs,
        "params": r.params,
        "peak_memory_mb": r.peak_memory_mb,
        "model_sha256": r.model_sha256,
        **({"energy_mj": r.energy_mj} if r.energy_mj is not None else {}),
        **({"refined_from": r.refined_from} if r.refined_from is not None else {}),
    }


def build_summary(
    study: optuna.Study,
    ctx: RunContext,
    models: list[FrontModel],
    budget_text: str,
    wall_s: float,
    setup_seconds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The run's summary from the study and the re-measured front (no I/O)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    b = ctx.baseline
    objectives = study_objectives(study)
    front_models, dropped = final_front(models, objectives)
    spreads = [m.spread for m in models]
    unmet, closest = _unmet(complete, ctx)
    return {
        "study_name": study.study_name,
        "run_dir": str(ctx.run_dir),
        "task": ctx.task.name,
        "metric_name": ctx.task.metric_name,
        "budget": budget_text,
        "budget_ms": ctx.budget_ms,
        "min_metric": ctx.min_metric,
        "trials_complete": len(complete),
        "trials_failed": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        "trials_rejected_by_prediction": sum(
            "latency_predicted_ms" in t.user_attrs and "screen_latency_ms" not in t.user_attrs
            for t in pruned
        ),
        "trials_rejected_untrained": sum(
            "screen_latency_ms" in t.user_attrs and not screened(t) for t in pruned
        ),
        "trials_screened_out": sum(counted(t) for t in pruned),
        "trials_feasible": sum(1 for t in complete if is_feasible(t)),
        "wall_seconds_this_run": round(wall_s, 1),
        "time": time_breakdown(study, setup_seconds),
        "baseline": {
            "path": f"baseline/{ctx.artifact_name}",
            "metric": b.metric,
            "latency_ms": b.latency_ms,
            "latency_spread": b.latency_spread,
            "size_bytes": b.size_bytes,
            "macs": b.macs,
            "params": b.params,
        },
        "noisy_machine": bool(spreads) and float(np.median(spreads)) > NOISY_WINDOW_SPREAD,
        "ratio_spread_median": float(np.median(spreads)) if spreads else None,
        "int8_format": b.int8_format.name,
        "fastest_plan_latency_ms": b.fastest_latency_ms,
        "pareto": sorted(
            (_summary_point(m, ctx.artifact_name) for m in front_models),
            key=lambda p: p["latency_ms"],
        ),
        "dropped_on_remeasure": [
            {
                "trial": m.trial,
                "latency_ms_search": m.record.latency_ms,
                "latency_ms_final": m.latency_ms,
                "feasible_final": m.feasible,
            }
            for m in dropped
        ],
        # Which constraint no trial met ("latency", "min_accuracy", or both: "latency and
        # min_accuracy"; None when some trial met both), and the trials closest to meeting it,
        # with everything they store (tags too).
        "unmet": unmet,
        "closest": [{"trial": t.number, **t.user_attrs} for t in closest],
        "hardware": ctx.hardware,
        "runtime": ctx.settings.to_dict(),
        "energy": {
            "available": ctx.energy is not None,
            "source": find_energy_counter()[1],
            "objective": ENERGY in objectives,
        },
    }


def _unmet(complete: list[FrozenTrial], ctx: RunContext) -> tuple[str | None, list[FrozenTrial]]:
    """Which constraint kept the measured trials off the front, and the three closest:
    the fastest, or where the latency was met, the most accurate within it."""
    if any(is_feasible(t) for t in complete):
        return None, []
    records = {t.number: TrialRecord.from_trial(t) for t in complete}
    fast = [t for t in complete if records[t.number].latency_ms <= ctx.budget_ms]
    if fast and ctx.min_metric is not None:
        return "min_accuracy", sorted(fast, key=lambda t: -records[t.number].metric)[:3]
    accurate = ctx.min_metric is None or any(r.metric >= ctx.min_metric for r in records.values())
    closest = sorted(complete, key=lambda t: records[t.number].latency_ms)[:3]
    return ("latency" if accurate else "latency and min_accuracy"), closest


def time_breakdown(
    study: optuna.Study, setup_seconds: dict[str, float] | None = None
) -> dict[str, Any]:
    """Where the study's time went: this run's setup, and the trials' seconds by phase (all
    workers, all runs), with the trained and the screened-out trials counted apart."""
    phases = {phase: 0.0 for phase in PHASES}
    trained = screened_out = refined = 0
    refine_seconds = 0.0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        seconds = t.user_attrs.get("seconds", {})
        if REFINE_ATTR in t.user_attrs:
            refined += 1
            refine_seconds += sum(seconds.values())
            continue
        for phase, value in seconds.items():
            phases[phase] = phases.get(phase, 0.0) + value
        trained += t.state == TrialState.COMPLETE
        screened_out += t.state == TrialState.PRUNED and counted(t)
    return {
        "setup_seconds": setup_seconds or {},
        "trial_seconds": {k: round(v, 1) for k, v in phases.items()},
        "trials_trained": trained,
        "trials_screened_out": screened_out,
        "trials_refined": refined,
        "refine_seconds": round(refine_seconds, 1),
    }


def _plot_front(study: optuna.Study, summary: dict[str, Any], path: Path) -> None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    records = [(TrialRecord.from_trial(t), is_feasible(t)) for t in complete]
    # No retained share where the baseline scores 0: matplotlib leaves NaN out.
    measured = [
        ((r.latency_ratio, nan if r.metric_retained is None else r.metric_retained), ok)
        for r, ok in records
    ]
    front_points = [
        (p["latency_ratio"], nan if p["metric_retained"] is None else p["metric_retained"])
        for p in summary["pareto"]
    ]
    budget_ratio = summary["budget_ms"] / summary["baseline"]["latency_ms"]
    title = f"{summary['study_name']}: {len(measured)} trials measured"
    plot_search_front(path, measured, front_points, budget_ratio, title)


def bind_context(
    task: Task,
    space: str | Path | None,
    run_dir: Path,
    seed: int,
    threads: int,
    measure_seconds: float,
    progress: Progress,
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[RunContext, dict[str, Any]]:
    """Load the task and bind the space; nothing is measured or written yet. Returns the
    context and the run's identity (task, model, input, hardware, version)."""
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}", "e.g. --threads 1")
    get_runtime(runtime)  # an unknown name is a user error before any work
    settings = RuntimeSettings(threads=threads, runtime=runtime)
    hardware = hardware_fingerprint(settings)
    energy, energy_note = find_energy_counter()
    progress.line(
        f"energy per inference: {energy_note}"
        if energy
        else f"energy per inference: unavailable on this machine, left out ({energy_note})"
    )
    for note in head_pruning_notes(task.model):
        progress.line(note)
    ctx = RunContext(
        task=task,
        teacher=task.model.eval(),
        space=bind_task_space(task, space, runtime),
        settings=settings,
        run_dir=run_dir,
        calibration=calibration_batches(
            task.train_data, task.family_impl.calibration_samples, task.family_impl
        ),
        seed=seed,
        hardware=hardware,
        measure_seconds=measure_seconds,
        energy=energy,
    )
    identity = {
        "task": task.name,
        "model": model_digest(task.model),
        "input_shape": task.input_shape,
        "hardware": hardware,
        "version": __version__,
    }
    return ctx, identity


def measure_baseline(ctx: RunContext, identity: dict[str, Any], progress: Progress) -> None:
    """Measure (or reload) the baseline under ``ctx.run_dir``: ``ctx.baseline`` is set."""
    progress.line(
        f"measuring the fp32 baseline and int8 formats in {ctx.settings.runtime} on this "
        f"machine -> {ctx.run_dir}/baseline"
    )
    with file_lock(ctx.run_dir / ".baseline.lock"):  # workers starting together measure it once
        ctx.baseline = prepare_baseline(ctx, identity)


def prepare_context(
    task: Task,
    space: str | Path | None,
    run_dir: Path,
    seed: int,
    threads: int,
    measure_seconds: float,
    progress: Progress,
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[RunContext, dict[str, Any]]:
    """Load the task, bind the space and measure (or reload) the baseline under ``run_dir``."""
    ctx, identity = bind_context(
        task, space, run_dir, seed, threads, measure_seconds, progress, runtime
    )
    measure_baseline(ctx, identity, progress)
    return ctx, identity


def context_for(
    task: Task, config: SearchConfig, run_dir: Path, progress: Progress
) -> tuple[RunContext, dict[str, Any]]:
    """:func:`prepare_context` with the settings of ``config``."""
    return prepare_context(
        task,
        config.space,
        run_dir,
        config.seed,
        config.threads,
        config.measure_seconds,
        progress,
        config.runtime,
    )


FixedPlans = Callable[[BoundSpace], dict[str, Plan]]


@dataclass
class _Run:
    """What the steps of one search share."""

    config: SearchConfig
    ctx: RunContext
    identity: dict[str, Any]  # task, model, hardware, version: part of the study's fingerprint
    name: str
    objectives: tuple[Objective, ...]
    fixed: dict[str, dict[str, Any]]  # label -> Plan dict
    latency_model: LatencyModel | None
    margin: float | None  # predicted over budget x (1 + margin): rejected
    progress: Progress
    started: float
    setup_seconds: dict[str, float]  # baseline, latency profiling: before the first trial
    fidelity: str  # "predict", "screen" or "full": --fidelity with "auto" resolved
    students: StudentStore | None  # recent trained students (None: --config reuse_students off)
    storage: BaseStorage  # opened before any work: an unreachable one refuses the run first
    fingerprint: dict[str, Any]  # what the study is for: joiners must match it
    from_python: bool  # the Task came from Python (config.yaml cannot name it)
    watch: StaleWatch = field(default_factory=StaleWatch)  # heartbeats of other workers


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
    works as the README shows.

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
    has BatchNorm and ``"screen"`` where it has none (:func:`resolve_fidelity`). ``device``
    is where fine-tuning runs ("auto": CUDA when available).
    ``refine`` front models (None: the space's ``refine.models``) are then trained again
    with ``refine_epochs`` (None: the space's ``refine.epochs``; see ``study.refine``).
    """
    started = time.monotonic()
    config = replace(config or SearchConfig(), **settings)
    run = _prepare(task, config, progress or Progress(), fixed_plans, started)
    study = _open(run)
    _record_settings(run.config, run.ctx.task, run.name, run.ctx.run_dir, run.from_python)
    try:
        stopped_early = _run_trials(run, study)
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
) -> _Run:
    """Check what can be checked before any work (the settings, the storage, an existing
    study's fingerprint), then measure the baseline, resolve the budget and refuse what no
    plan can meet, then load the latency model. Nothing of the run is written before the
    checks that need no measurement have passed, and nothing but the baseline before the
    rest have: a refused run leaves every existing file as it was."""
    budget = parse_budget(config.budget)
    writable_folder(Path(config.out), "--out")
    if config.energy_objective:
        counter, why = find_energy_counter()
        if counter is None:
            raise UserError(
                f"energy cannot be an objective on this machine: {why}",
                "drop --energy-objective (energy needs readable Linux powercap/RAPL counters, "
                "usually root on bare metal)",
            )
    from_python = isinstance(task, Task)
    if isinstance(task, str):
        config = replace(config, task=task, model=None)
        task = load_task(task)
    elif task is None:
        task = task_for(config)
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
    storage = make_storage(config.storage, ctx.run_dir)
    fingerprint = study_fingerprint(config, identity, ctx.space)
    check_joinable(storage, name, fingerprint)
    measure_baseline(ctx, identity, progress)
    ctx.device = device
    if config.teacher_cache_mb > 0:
        ctx.teacher_cache = TeacherCache(config.teacher_cache_mb * 2**20)
    setup = {"baseline": round(time.monotonic() - started, 1)}
    b = ctx.baseline
    fixed = {
        label: p.to_dict() for label, p in (fixed_plans(ctx.space) if fixed_plans else {}).items()
    }
    fingerprint["fixed_plans"] = sorted(fixed)
    ctx.budget_ms = budget.resolve_ms(b.latency_ms)
    ctx.min_metric = parse_min_metric(config.min_accuracy, b.metric)
    check_reachable_metric(task, ctx.min_metric, config.min_accuracy, b.metric)
    progress.line(
        f"baseline: {task.metric_name} {b.metric:.4f}, {b.latency_ms:.3f} ms (spread {b.latency_spread:.0%}), "
        f"{b.size_bytes / 1024:.0f} KiB; int8 format {b.int8_format.name}; "
        f"budget {ctx.budget_ms:.3f} ms; fastest reachable {b.fastest_latency_ms:.3f} ms"
    )
    if ctx.budget_ms < b.fastest_latency_ms * FLOOR_MARGIN:
        raise UserError(
            f"the budget {ctx.budget_ms:.3f} ms ({config.budget}) is below the fastest model this search space "
            f"can produce: {b.fastest_latency_ms:.3f} ms measured here (every group pruned to its "
            "maximum, every allowed layer int8)",
            f"raise --budget to at least {b.fastest_latency_ms:.3f}ms, or allow more pruning in the space",
        )
    fidelity = resolve_fidelity(config.fidelity, ctx.teacher)
    if config.fidelity == "auto" and fidelity == "screen":
        progress.line(
            "fidelity: screen (the model has no BatchNorm, so the predictor's signal "
            "would be its untrained score, which hardly ranks trained models; plans are "
            "scored after half an epoch instead)"
        )
    latency_model = None
    if config.predict:
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
            + ("; each plan's untrained artifact is timed instead" if fidelity == "screen" else "")
        )
    if margin is not None:
        progress.line(
            f"plans predicted above {ctx.budget_ms * (1 + margin):.3f} ms (budget + {margin:.0%}, "
            "the latency model's 90th-percentile error, at least 10%) are rejected before fine-tuning"
        )
    objectives = objectives_for(config.energy_objective)
    if device != "cpu":
        progress.line(f"fine-tuning on {device}; latency is timed in {config.runtime} on the CPU")
    return _Run(
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
    )


def writable_folder(path: Path, flag: str) -> None:
    """Create ``path`` or fail with one message: before any work, not after the baseline."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{flag} {path} cannot be created: {exc.strerror}", "give a folder you can write"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable", "give a folder you can write")


def _record_settings(
    config: SearchConfig, task: Task, name: str, run_dir: Path, from_python: bool
) -> None:
    """runs/<study>/config.yaml (rerun with --config) and, for a no-code task, data.json."""
    note = (
        "The Task was passed from Python: --config reruns it once --task names the "
        "function that makes it."
        if from_python
        else ""
    )
    values = resolved_config(config, name)
    if from_python:
        values["task"] = None
    write_config(run_dir, values, note)
    if task.provenance:
        write_json(run_dir / "data.json", task.provenance)


def resolve_fidelity(fidelity: str, teacher: torch.nn.Module) -> str:
    """--fidelity with "auto" resolved: the predictor where ``teacher`` has BatchNorm, the
    rung where it has none. The predictor's signal is the score after adaptive BatchNorm;
    without BatchNorm it is the pruned model's untrained score, which ranked the trained
    encoders at Spearman 0.13 (docs/benchmarks.md, "The transformer task")."""
    if fidelity != "auto":
        return fidelity
    return "predict" if has_batchnorm(teacher) else "screen"


def resolve_device(device: str) -> str:
    """--device auto|cpu|cuda[:N] -> where fine-tuning runs."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {device}: this machine has no CUDA device PyTorch can use",
                "use --device auto (CUDA where available, else the CPU) or --device cpu",
            )
        return device
    raise UserError(f"unknown --device {device!r}", "give auto, cpu or cuda")


def study_fingerprint(
    config: SearchConfig, identity: dict[str, Any], space: BoundSpace
) -> dict[str, Any]:
    """What a study is for: every worker that joins it must have the same (the fixed plans'
    labels are added once the baseline's rounding is known)."""
    return {
        **identity,
        "format": STUDY_FORMAT,
        "space_sha256": hashlib.sha256(space.space.text.encode()).hexdigest()[:16],
        "budget": parse_budget(config.budget).text,
        "min_accuracy": None if config.min_accuracy is None else str(config.min_accuracy),
        "sampler": config.sampler,
        "warm_start": config.warm_start,
    }


def check_reachable_metric(
    task: Task, min_metric: float | None, asked: str | float | None, baseline_metric: float
) -> None:
    """Refuse an accuracy floor above what the task's metric can reach, before any work."""
    top = task.metric_max
    if min_metric is None or top is None or min_metric <= top:
        return
    share = f", {top / baseline_metric:.1%} of the baseline's" if baseline_metric > 0 else ""
    raise UserError(
        f"--min-accuracy {asked} asks for {task.metric_name} {min_metric:.4f}, above the most "
        f"it can reach ({top:g}); the uncompressed model scores {baseline_metric:.4f}",
        f"give at most {top:g}{share} (e.g. --min-accuracy 99%)",
    )


def _open(run: _Run) -> optuna.Study:
    """Create or join the study; the creator's baseline latency and budget then hold here."""
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
    ctx.baseline = replace(ctx.baseline, latency_ms=study.user_attrs["baseline_latency_ms"])
    ctx.budget_ms = study.user_attrs["budget_ms"]
    return study


def _plan(run: _Run, trial: optuna.Trial) -> tuple[Plan, bool]:
    """The trial's plan (a reference, a fixed plan, or the sampler's suggestion), and
    whether it is a baseline: those are always measured, never rejected by prediction."""
    attrs = trial.user_attrs
    if attrs.get("reference"):
        return run.ctx.space.reference_plan(attrs["reference"]), True
    if attrs.get(PLAN_ATTR):
        return Plan.from_dict(attrs[PLAN_ATTR]), True
    return run.ctx.space.suggest(trial), False


def _reject(
    run: _Run, trial: optuna.Trial, plan: Plan, reason: str, latency_ms: float, **facts: Any
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


def _predict(run: _Run, trial: optuna.Trial, plan: Plan, exempt: bool) -> float | None:
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
    _reject(run, trial, plan, reason, predicted, latency_predicted_ms=predicted)
    return None  # not reached: _reject raises


def _time_untrained(
    run: _Run, trial: optuna.Trial, plan: Plan, exempt_budget: bool
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
    _reject(run, trial, plan, reason, screen.latency_ms, **screen.to_attrs())
    return None  # not reached


def _rung(
    run: _Run, trial: optuna.Trial, untrained: Screen, anchor: bool, extra: dict[str, Any]
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


def _predicted(run: _Run, trial: optuna.Trial, plan: Plan, untrained: Screen) -> None:
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
    _reject(run, trial, plan, reason, untrained.latency_ms, **facts)


def _keep_student(students: StudentStore, key: str, trial: optuna.Trial, trials_dir: Path) -> None:
    """Keep the student ``trial`` just trained (read back from its folder) for a twin plan."""
    path = trials_dir / f"{trial.number:04d}" / STUDENT_NAME
    weights = torch.load(path, map_location="cpu", weights_only=True)
    students.put(key, KeptStudent(trial.number, weights, trial.user_attrs.get("screen_metric")))


def _objective(run: _Run, trial: optuna.Trial) -> tuple[float, ...]:
    """Build and measure the trial's plan; its record goes to the study, its files to trials/."""
    ctx = run.ctx
    plan, baseline = _plan(run, trial)
    trial.set_user_attr(TRIAL_PLAN_ATTR, plan.to_dict())  # in the study: any machine reads it
    predicted = _predict(run, trial, plan, exempt=baseline)
    # The uniform plans the study starts from are always trained once they fit the budget:
    # they are what later plans are screened against.
    anchor = baseline or "warm_start" in trial.user_attrs
    same_student = student_key(plan, ctx.seed, ctx.device)
    twin = run.students.get(same_student) if run.students is not None else None
    untrained = _time_untrained(run, trial, plan, exempt_budget=baseline)
    if untrained is not None and run.fidelity == "predict" and not anchor and twin is None:
        _predicted(run, trial, plan, untrained)
    extra: dict[str, Any] = {} if predicted is None else {"latency_predicted_ms": predicted}
    if twin is not None:  # its student is trained already: nothing to screen or predict
        extra[STUDENT_FROM_ATTR] = twin.trial
        trial.set_user_attr(STUDENT_FROM_ATTR, twin.trial)
        if twin.screen_metric is not None:  # the same student at the rung
            extra["screen_metric"] = twin.screen_metric
            trial.set_user_attr("screen_metric", twin.screen_metric)
    if REFINE_ATTR in trial.user_attrs:
        extra["refined_from"] = trial.user_attrs[REFINE_ATTR]
    if untrained is not None:
        extra.update(untrained.to_attrs())
    for key in (SIGNAL_ATTR, PREDICTED_ATTR, ERROR_ATTR):
        if key in trial.user_attrs:  # the predictor's view, beside what training gave
            extra[key] = trial.user_attrs[key]
    started = time.monotonic()
    try:
        metrics = run_trial(
            ctx,
            trial.number,
            plan,
            lambda s: run.progress.stage(trial.number, s),
            extra,
            _rung(run, trial, untrained, anchor, extra)
            if untrained and run.fidelity == "screen" and twin is None
            else None,
            # Timed before training: the trained artifact has the same graph (trial.py).
            untrained.timing if untrained is not None else None,
            twin.weights if twin is not None else None,
            untrained.student if untrained is not None else None,
        )
    except ScreenedOut as out:
        check = float(extra.get("screen_check_seconds", 0.0))
        trial.set_user_attr(
            "seconds",
            {
                "screening": round(out.screen.seconds + check, 2),
                "training": round(time.monotonic() - started - check, 2),
            },
        )
        _reject(run, trial, plan, out.reason, out.screen.latency_ms, **extra)
        raise  # not reached: _reject raises TrialPruned
    except Exception as exc:
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        raise
    record = TrialRecord.from_metrics(metrics)
    for key, value in record.to_attrs().items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("seconds", metrics["seconds"])
    if plan.distill.epochs <= 0:  # never trained: the same model at any point of training
        trial.set_user_attr("screen_metric", record.metric)
    elif run.students is not None and twin is None:
        _keep_student(run.students, same_student, trial, ctx.trials_dir)
    trial.set_constraint("latency", record.latency_ms - ctx.budget_ms)
    if ctx.min_metric is not None:
        trial.set_constraint("metric", ctx.min_metric - record.metric)
    return point(record, run.objectives)


def _recover_dead_workers(run: _Run, study: optuna.Study) -> None:
    """Fail and queue again the trials of workers that died, before counting."""
    storage = run.storage
    failed = fail_orphaned_trials(study, storage)
    if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None:
        fail_stale_trials(study)  # the database's clock judges its own heartbeats
    else:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        failed += fail_gone_workers(study, storage, run.watch, running)
    if failed:
        run.progress.line(f"trial(s) {failed} of gone workers failed; their plans run again")


def sweep_leftovers(study: optuna.Study, trials_dir: Path) -> list[str]:
    """Remove what killed trials left in ``trials_dir``: scratch folders (.NNNN.tmp,
    .NNNN.screen) of trials no longer running, and whole folders of failed trials (a worker
    killed between moving its files in place and recording the trial). Returns their names."""
    if not trials_dir.is_dir():
        return []
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    swept = []
    for folder in trials_dir.iterdir():
        match = re.fullmatch(r"\.?(\d+)(\.tmp|\.screen)?", folder.name)
        if match is None or not folder.is_dir():
            continue
        state = states.get(int(match.group(1)))
        scratch = match.group(2) is not None
        if (scratch and state != TrialState.RUNNING) or (not scratch and state == TrialState.FAIL):
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder.name)
    return swept


def _wait_or_give_up(run: _Run, running: list[FrozenTrial], since: float | None) -> float:
    """Wait a second for the trials other workers run; past ``wait_timeout`` give up with a
    message. Returns when the wait began."""
    config, now = run.config, time.monotonic()
    if since is None:
        run.progress.line(
            f"waiting for {len(running)} trial(s) running on other workers "
            f"({describe_running(running, run.watch)}); a worker whose heartbeat stops for "
            f"{GRACE_SECONDS} s is given up and its plan run here; waiting at most "
            f"{config.wait_timeout:.0f} s (--wait-timeout)"
        )
        since = now
    elif now - since > config.wait_timeout:
        raise UserError(
            f"gave up after waiting {config.wait_timeout:.0f} s for trial(s) still running "
            f"on other workers: {describe_running(running, run.watch)}",
            "they finish the study on their own; rerun later to write this run's summary, "
            "or give a longer --wait-timeout",
        )
    time.sleep(1.0)
    return since


def _run_trials(run: _Run, study: optuna.Study) -> str | None:
    """Run trials until the study holds ``trials`` counted ones (over all workers), the
    timeout passes, or too many fail or are rejected in a row; returns why it stopped early
    (None: it did not)."""
    config, progress = run.config, run.progress
    failures = rejected_in_a_row = 0

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal failures, rejected_in_a_row
        failures = failures + 1 if trial.state == TrialState.FAIL else 0
        rejected = trial.state == TrialState.PRUNED and not counted(trial)
        rejected_in_a_row = rejected_in_a_row + 1 if rejected else 0
        prune_artifacts(study, run.ctx.run_dir, run.ctx.artifact_name)
        progress.trial_done(
            trial.number, dict(trial.user_attrs), trial.state.name, _best_text(study)
        )

    def run_one(trial: optuna.Trial) -> tuple[float, ...]:
        mark_running(trial)  # tagged before other workers may judge it
        lock.release()  # the trial now exists as RUNNING: other workers count it
        try:
            with Heartbeat(trial, run.storage):
                return _objective(run, trial)
        except OSError as exc:
            if exc.errno in DISK_FULL:  # no later trial could write its files either
                disk_full.append(exc)
            raise

    disk_full: list[OSError] = []  # raised after the trial is recorded failed: one message

    lock = reservation_lock(run.storage, run.ctx.run_dir, run.name)
    lock.acquire()
    try:
        _recover_dead_workers(run, study)
        swept = sweep_leftovers(study, run.ctx.trials_dir)
    finally:
        lock.release()
    if swept:
        progress.line(f"removed what killed trials left behind: trials/{{{','.join(swept)}}}")
    done = len(counted_trials(study))
    progress.begin(config.trials, done)
    progress.line(
        f"study {run.name}: {done} of {config.trials} trials done"
        + ("" if done >= config.trials else "; running the rest")
    )
    waiting_since: float | None = None
    while (
        failures < MAX_CONSECUTIVE_FAILURES
        and rejected_in_a_row < MAX_REJECTED_IN_A_ROW
        and (config.timeout is None or time.monotonic() - run.started < config.timeout)
    ):
        raise_if_interrupted()
        lock.acquire()
        try:
            _recover_dead_workers(run, study)
            # One read for both counts: with two, a trial another worker finishes between
            # them is counted in neither, and one trial too many is started.
            trials = study.get_trials(deepcopy=False)
            finished = sum(counted(t) for t in trials)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if finished >= config.trials:
                break
            if finished + len(running) < config.trials:
                waiting_since = None
                study.optimize(run_one, n_trials=1, catch=(Exception,), callbacks=[after_trial])
                if disk_full:
                    raise disk_full[0]
                continue
        finally:
            lock.release()
        # The rest are running on other workers: wait, in case one dies and its trial returns.
        waiting_since = _wait_or_give_up(run, running, waiting_since)
    if failures >= MAX_CONSECUTIVE_FAILURES:
        last = TrialTags.from_trial(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-1])
        raise UserError(
            f"{failures} trials in a row failed; the last: {last.error or 'unknown'}",
            "run with --verbose to see the traceback; the study is saved and resumes on rerun",
        )
    raise_if_interrupted()
    if rejected_in_a_row < MAX_REJECTED_IN_A_ROW:
        _refine(run, study, lock, run_one, after_trial)
        return None
    reason = (
        f"{rejected_in_a_row} plans in a row were over the budget before training (predicted, "
        "or measured untrained): the sampler finds "
        "little else in this space; raise --budget or allow more pruning"
    )
    progress.line(f"stopped early: {reason}")
    return reason


def _refine_candidates(run: _Run, study: optuna.Study, epochs: int) -> list[Candidate]:
    """The feasible Pareto models of the search's own trials (no references, no refined
    trials) whose plan trains fewer than ``epochs`` epochs."""
    candidates = []
    for trial in front(study, lambda t: not {REFINE_ATTR, "reference"} & set(t.user_attrs)):
        plan = trial.user_attrs[TRIAL_PLAN_ATTR]  # in the study: it may have run elsewhere
        if int(plan["distill"]["epochs"]) < epochs:
            record = TrialRecord.from_trial(trial)
            candidates.append(Candidate(trial.number, record.metric, record.latency_ms))
    return candidates


def _refine(
    run: _Run,
    study: optuna.Study,
    lock: ReservationLock,
    run_one: Callable[[optuna.Trial], tuple[float, ...]],
    after_trial: Callable[[optuna.Study, FrozenTrial], None],
) -> None:
    """Train the front models ``refine_targets`` picks again with the refine epochs (the
    config's, else the space's), one new trial each (see ``study.refine``), until done or the timeout passes (as
    for trials, none starts after it); a rerun resumes where it stopped."""
    refine = run.ctx.space.space.refine
    models = refine.models if run.config.refine is None else run.config.refine
    epochs = refine.epochs if run.config.refine_epochs is None else run.config.refine_epochs
    timeout = run.config.timeout
    while models > 0 and (timeout is None or time.monotonic() - run.started < timeout):
        raise_if_interrupted()
        lock.acquire()
        try:
            trials = [t for t in study.get_trials(deepcopy=False) if REFINE_ATTR in t.user_attrs]
            for queued in (t for t in trials if t.state == TrialState.WAITING):
                # A dead worker's refinement queued again: it is run here, as a new trial.
                fail_trial(run.storage, study, queued.number)
            done = {t.user_attrs[REFINE_ATTR] for t in trials if refinement_done(t, epochs)}
            targets = refine_targets(_refine_candidates(run, study, epochs), models)
            todo = [n for n in targets if n not in done]
            if not todo:
                return
            original = study.get_trials(deepcopy=False)[todo[0]]  # a number is its index
            plan = refined_plan(Plan.from_dict(original.user_attrs[TRIAL_PLAN_ATTR]), epochs)
            run.progress.line(
                f"refining trial {todo[0]}: its plan again with {epochs} epochs "
                f"({len(targets) - len(todo) + 1} of {len(targets)})"
            )
            attrs = {PLAN_ATTR: plan.to_dict(), REFINE_ATTR: todo[0]}
            run_new_trial(study, run.storage, attrs, run_one, after_trial)  # releases the lock
        finally:
            lock.release()


def _finish(
    run: _Run, study: optuna.Study, stopped_early: str | None, measure_again: bool = True
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
    summary["fidelity"] = run.fidelity  # "auto" resolved: how plans were decided
    write_json(ctx.run_dir / "summary.json", summary)
    _plot_front(study, summary, ctx.run_dir / "front.png")
    return SearchResult(run_dir=ctx.run_dir, summary=summary)
