"""The search: wires task -> space -> baseline -> Optuna study -> Pareto front -> run files."""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages import fail_stale_trials
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from autoshuikou import __version__
from autoshuikou.compress.export import export_onnx
from autoshuikou.compress.prune import channel_groups, prune
from autoshuikou.compress.quantize import calibration_batches
from autoshuikou.errors import UserError
from autoshuikou.interrupt import raise_if_interrupted
from autoshuikou.measure.energy import find_energy_counter
from autoshuikou.measure.fingerprint import hardware_fingerprint
from autoshuikou.measure.latency import REMEASURE_MAX_WINDOWS, REMEASURE_MIN_WINDOWS
from autoshuikou.measure.latency_model import layer_macs
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.plan import Plan
from autoshuikou.report.plots import plot_search_front
from autoshuikou.report.progress import Progress
from autoshuikou.runtimes import DEFAULT_RUNTIME, get_runtime
from autoshuikou.space.bind import BoundSpace, bind_space, warm_start_params
from autoshuikou.space.schema import load_space
from autoshuikou.study.baseline import model_digest, prepare_baseline
from autoshuikou.study.budget import parse_budget
from autoshuikou.study.context import RunContext
from autoshuikou.study.final import (
    NOISY_WINDOW_SPREAD,
    final_front,
    remeasure,
    search_time_record,
)
from autoshuikou.study.pareto import Point, is_feasible, pareto_indices
from autoshuikou.study.profile import load_or_build_latency_model
from autoshuikou.study.samplers import DEFAULT_SAMPLER, make_sampler
from autoshuikou.study.storage import (
    DIRECTIONS,
    ENERGY_DIRECTIONS,
    WORKER,
    fail_orphaned_trials,
    make_storage,
    open_study,
    recover_dead_local_workers,
    reservation_lock,
)
from autoshuikou.study.trial import run_trial
from autoshuikou.tasks import Task, load_task
from autoshuikou.util import file_lock, write_json

FLOOR_MARGIN = 0.9  # timing noise allowance when comparing a budget with the fastest plan
MAX_CONSECUTIVE_FAILURES = 3
DEFAULT_TRIALS = 30
# A plan is rejected before fine-tuning only when predicted > budget * (1 + margin), the
# margin being the latency model's own 90th-percentile cross-validated error on this
# machine (at least this): so a plan that would fit is rarely thrown away.
REJECT_MARGIN = 0.10
# Trials that count towards --trials: trained and measured. A plan rejected by prediction
# costs well under a second, so it does not use up the count (a tight budget would otherwise
# train fewer models than asked); MAX_REJECTED_IN_A_ROW stops a search that finds nothing else.
COUNTED = (TrialState.COMPLETE,)
MAX_REJECTED_IN_A_ROW = 50


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


def layer_names(task: Task) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return export_onnx(task.model, task.inputs, Path(tmp) / "probe.onnx", task.family)


def bind_task_space(task: Task, space: str | Path | None) -> BoundSpace:
    teacher = task.model.eval()
    groups = channel_groups(teacher, task.inputs, task.family)
    modules = [name for name, _ in teacher.named_modules()]
    loaded = load_space(space, task.family_impl.default_space)
    return bind_space(loaded, groups, layer_names(task), modules)


def _attrs(trial: FrozenTrial) -> dict[str, Any]:
    return dict(trial.user_attrs)


def _point(trial: FrozenTrial, with_energy: bool) -> Point:
    a = trial.user_attrs
    point = (a["metric"], a["latency_ms"], a["size_bytes"])
    return (*point, a["energy_mj"]) if with_energy else point


def has_energy_objective(study: optuna.Study) -> bool:
    return len(study.directions) == len(ENERGY_DIRECTIONS)


def front(study: optuna.Study) -> list[FrozenTrial]:
    with_energy = has_energy_objective(study)
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t)]
    return [feasible[i] for i in pareto_indices([_point(t, with_energy) for t in feasible])]


def _best_text(study: optuna.Study) -> str:
    best = max(front(study), key=lambda t: t.user_attrs["metric"], default=None)
    if best is None:
        return "none feasible yet"
    return f"metric {best.user_attrs['metric']:.4f} @ {best.user_attrs['latency_ms']:.3f} ms (trial {best.number})"


def prune_artifacts(study: optuna.Study, run_dir: Path, artifact_name: str) -> None:
    """Delete model files of trials that can never be on the front: infeasible or dominated.

    Dominance is permanent, so nothing deleted is needed later; plans and metrics stay.
    """
    keep = {t.number for t in front(study)}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.number not in keep:
            (run_dir / "trials" / f"{trial.number:04d}" / artifact_name).unlink(missing_ok=True)


def _summary_point(record: dict[str, Any], artifact_name: str) -> dict[str, Any]:
    final = record["final"]
    return {
        "trial": record["trial"],
        "path": f"trials/{record['trial']:04d}/{artifact_name}",
        "metric": record["metric"],
        "metric_retained": record["metric_retained"],
        "latency_ms": final["latency_ms"],
        "latency_ratio": final["ratio"],
        "ratio_spread": final["spread"],
        "latency_ms_search": record["latency_ms"],
        "speedup": 1 / final["ratio"],
        "size_bytes": record["size_bytes"],
        "macs": record["macs"],
        "params": record["params"],
        "peak_memory_mb": record["peak_memory_mb"],
        "model_sha256": record["model_sha256"],
        **({"energy_mj": record["energy_mj"]} if "energy_mj" in record else {}),
    }


def build_summary(
    study: optuna.Study,
    ctx: RunContext,
    records: list[dict[str, Any]],
    budget_text: str,
    wall_s: float,
) -> dict[str, Any]:
    """The run's summary from the study and the re-measured front (no I/O)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    b = ctx.baseline
    energy_objective = has_energy_objective(study)
    front_records, dropped = final_front(records, energy_objective)
    spreads = [r["final"]["spread"] for r in records]
    closest = sorted(
        (t for t in complete if not is_feasible(t)), key=lambda t: t.user_attrs["latency_ms"]
    )[:3]
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
        "trials_rejected_by_prediction": len(
            study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        ),
        "trials_feasible": sum(1 for t in complete if is_feasible(t)),
        "wall_seconds_this_run": round(wall_s, 1),
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
            (_summary_point(r, ctx.artifact_name) for r in front_records),
            key=lambda p: p["latency_ms"],
        ),
        "dropped_on_remeasure": [
            {
                "trial": r["trial"],
                "latency_ms_search": r["latency_ms"],
                "latency_ms_final": r["final"]["latency_ms"],
                "feasible_final": r["final"]["feasible"],
            }
            for r in dropped
        ],
        "closest": [{"trial": t.number, **_attrs(t)} for t in closest],
        "hardware": ctx.hardware,
        "runtime": ctx.settings.to_dict(),
        "energy": {
            "available": ctx.energy is not None,
            "source": find_energy_counter()[1],
            "objective": energy_objective,
        },
    }


def _plot_front(study: optuna.Study, summary: dict[str, Any], path: Path) -> None:
    measured = [
        ((t.user_attrs["latency_ratio"], t.user_attrs["metric_retained"]), is_feasible(t))
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ]
    front_points = [(p["latency_ratio"], p["metric_retained"]) for p in summary["pareto"]]
    budget_ratio = summary["budget_ms"] / summary["baseline"]["latency_ms"]
    title = f"{summary['study_name']}: {len(measured)} trials measured"
    plot_search_front(path, measured, front_points, budget_ratio, title)


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
    ctx = RunContext(
        task=task,
        teacher=task.model.eval(),
        space=bind_task_space(task, space),
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
    progress.line(
        f"measuring the fp32 baseline and int8 formats in {runtime} on this machine -> {run_dir}/baseline"
    )
    with file_lock(run_dir / ".baseline.lock"):  # workers starting together measure it once
        ctx.baseline = prepare_baseline(ctx, identity)
    return ctx, identity


def search(
    task: Task | str | None = None,
    budget: str = "50%",
    trials: int = DEFAULT_TRIALS,
    space: str | Path | None = None,
    out: str | Path = "runs",
    study_name: str | None = None,
    seed: int = 0,
    threads: int = 1,
    timeout: float | None = None,
    min_accuracy: str | float | None = None,
    measure_seconds: float = 1.0,
    predict: bool = True,
    storage: str | None = None,
    progress: Progress | None = None,
    sampler: str = DEFAULT_SAMPLER,
    fixed_plans: Callable[[BoundSpace], dict[str, Plan]] | None = None,
    final_remeasure: bool = True,
    runtime: str = DEFAULT_RUNTIME,
    warm_start: bool = True,
    energy_objective: bool = False,
) -> SearchResult:
    """Find the Pareto-optimal compressed models of ``task`` under a latency ``budget``.

    Running it again with the same arguments resumes the study under ``out/<study_name>``;
    workers started with the same ``storage`` and ``study_name`` share one study, and
    ``trials`` is their common total. With ``predict``, a latency model learned on this machine (built on first use, cached)
    rejects plans predicted to miss the budget before they are fine-tuned.

    ``sampler`` names the strategy (see ``study.samplers``). ``fixed_plans`` makes plans
    (label -> Plan) from the bound space, once its rounding is measured; they run first and
    are never rejected by prediction: baselines for comparisons. Without
    ``final_remeasure`` the front keeps its search-time latencies (labelled so). ``runtime``
    runs and times the artifacts (see ``autoshuikou.runtimes``); the budget refers to it.
    ``warm_start`` begins the study with the uniform plans (same prune ratio everywhere,
    fp32 and int8), so the sampler starts from the classic baselines instead of from
    nothing; plans predicted over budget among them are rejected as any other.
    ``energy_objective`` adds energy per inference (minimized) as a fourth objective; only
    where the machine has readable energy counters.
    """
    started = time.monotonic()
    progress = progress or Progress()
    parsed_budget = parse_budget(budget)
    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}", "e.g. --trials 30")
    if energy_objective:
        counter, why = find_energy_counter()
        if counter is None:
            raise UserError(
                f"energy cannot be an objective on this machine: {why}",
                "drop --energy-objective (energy needs readable Linux powercap/RAPL counters, "
                "usually root on bare metal)",
            )
    if not isinstance(task, Task):
        task = load_task(task)
    name = study_name or f"{task.name}-{parsed_budget.slug}"
    run_dir = Path(out) / name
    ctx, identity = prepare_context(
        task, space, run_dir, seed, threads, measure_seconds, progress, runtime
    )
    b = ctx.baseline
    bound = ctx.space
    fixed = {label: p.to_dict() for label, p in (fixed_plans(bound) if fixed_plans else {}).items()}
    ctx.budget_ms = parsed_budget.resolve_ms(b.latency_ms)
    ctx.min_metric = parse_min_metric(min_accuracy, b.metric)
    progress.line(
        f"baseline: {task.metric_name} {b.metric:.4f}, {b.latency_ms:.3f} ms (spread {b.latency_spread:.0%}), "
        f"{b.size_bytes / 1024:.0f} KiB; int8 format {b.int8_format.name}; "
        f"budget {ctx.budget_ms:.3f} ms; fastest reachable {b.fastest_latency_ms:.3f} ms"
    )
    if ctx.budget_ms < b.fastest_latency_ms * FLOOR_MARGIN:
        raise UserError(
            f"the budget {ctx.budget_ms:.3f} ms ({budget}) is below the fastest model this search space "
            f"can produce: {b.fastest_latency_ms:.3f} ms measured here (every group pruned to its "
            "maximum, every allowed layer int8)",
            f"raise --budget to at least {b.fastest_latency_ms:.3f}ms, or allow more pruning in the space",
        )
    latency_model = load_or_build_latency_model(ctx, progress.line) if predict else None
    margin = max(REJECT_MARGIN, latency_model.holdout_p90) if latency_model else None
    if latency_model and margin is not None:
        progress.line(
            f"plans predicted above {ctx.budget_ms * (1 + margin):.3f} ms (budget + {margin:.0%}, "
            "the latency model's 90th-percentile error, at least 10%) are rejected before fine-tuning"
        )
    fingerprint = {
        **identity,
        "space_sha256": hashlib.sha256(bound.space.text.encode()).hexdigest()[:16],
        "budget": parsed_budget.text,
        "min_accuracy": None if min_accuracy is None else str(min_accuracy),
        "sampler": sampler,
        "fixed_plans": sorted(fixed),
        "warm_start": warm_start,
    }
    study_sampler = make_sampler(sampler, seed)
    study_storage = make_storage(storage, run_dir)
    # The creator's reference latency and budget hold for every worker, so all trials'
    # latencies (ratio to the local baseline x the reference) share one scale.
    shared = {"baseline_latency_ms": b.latency_ms, "budget_ms": ctx.budget_ms}
    warm = warm_start_params(bound) if warm_start else {}
    directions = ENERGY_DIRECTIONS if energy_objective else DIRECTIONS
    study = open_study(
        study_storage, run_dir, name, fingerprint, study_sampler, shared, fixed, warm, directions
    )
    ctx.baseline = b = replace(b, latency_ms=study.user_attrs["baseline_latency_ms"])
    ctx.budget_ms = study.user_attrs["budget_ms"]

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        reference = trial.user_attrs.get("reference")
        fixed_plan = trial.user_attrs.get("plan")
        if reference:
            plan = bound.reference_plan(reference)
        elif fixed_plan:
            plan = Plan.from_dict(fixed_plan)
        else:
            plan = bound.suggest(trial)
        predicted = None
        if latency_model is not None:
            student = prune(ctx.teacher, ctx.inputs, plan.prune, plan.round_to, ctx.family)
            predicted = (
                latency_model.predict_ratio(layer_macs(student, ctx.inputs), plan) * b.latency_ms
            )
            trial.set_user_attr("latency_predicted_ms", predicted)
            exempt = reference or fixed_plan  # baselines are always measured
            assert margin is not None
            if not exempt and predicted > ctx.budget_ms * (1 + margin):
                # Recorded as infeasible, so the sampler learns to avoid the region.
                reason = (
                    f"predicted {predicted:.3f} ms > budget {ctx.budget_ms:.3f} ms + {margin:.0%}"
                )
                trial.set_user_attr("rejected", reason)
                trial.set_constraint("latency", predicted - ctx.budget_ms)
                folder = ctx.trials_dir / f"{trial.number:04d}"
                write_json(folder / "plan.json", plan.to_dict())
                write_json(
                    folder / "metrics.json",
                    {
                        "trial": trial.number,
                        "rejected": reason,
                        "latency_predicted_ms": predicted,
                        "budget_ms": ctx.budget_ms,
                    },
                )
                raise optuna.TrialPruned(trial.user_attrs["rejected"])
        try:
            extra = {} if predicted is None else {"latency_predicted_ms": predicted}
            metrics = run_trial(
                ctx, trial.number, plan, lambda s: progress.stage(trial.number, s), extra
            )
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        for key in (
            "metric",
            "latency_ms",
            "latency_ratio",
            "size_bytes",
            "macs",
            "params",
            "peak_memory_mb",
            "feasible",
            "speedup",
            "metric_retained",
            "trial_seconds",
        ):
            trial.set_user_attr(key, metrics[key])
        trial.set_user_attr("latency_spread", metrics["latency_raw"]["spread"])
        trial.set_user_attr("model_sha256", metrics["model_sha256"])
        if "energy_mj" in metrics:
            trial.set_user_attr("energy_mj", metrics["energy_mj"])
        if predicted is not None:
            trial.set_user_attr("prediction_error", predicted / metrics["latency_ms"] - 1)
        trial.set_constraint("latency", metrics["latency_ms"] - ctx.budget_ms)
        if ctx.min_metric is not None:
            trial.set_constraint("metric", ctx.min_metric - metrics["metric"])
        values = (metrics["metric"], metrics["latency_ms"], float(metrics["size_bytes"]))
        return (*values, metrics["energy_mj"]) if energy_objective else values

    failures = rejected_in_a_row = 0

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal failures, rejected_in_a_row
        failures = failures + 1 if trial.state == TrialState.FAIL else 0
        rejected_in_a_row = rejected_in_a_row + 1 if trial.state == TrialState.PRUNED else 0
        prune_artifacts(study, run_dir, ctx.artifact_name)
        progress.trial_done(trial.number, _attrs(trial), trial.state.name, _best_text(study))

    def run_one(trial: optuna.Trial) -> tuple[float, ...]:
        lock.release()  # the trial now exists as RUNNING: other workers count it
        trial.set_user_attr("worker", WORKER)
        return objective(trial)

    lock = reservation_lock(study_storage, run_dir, name)
    done = len(study.get_trials(deepcopy=False, states=COUNTED))
    progress.begin(trials, done)
    progress.line(
        f"study {name}: {done} of {trials} trials done"
        + ("" if done >= trials else "; running the rest")
    )
    waiting_since: float | None = None
    while (
        failures < MAX_CONSECUTIVE_FAILURES
        and rejected_in_a_row < MAX_REJECTED_IN_A_ROW
        and (timeout is None or time.monotonic() - started < timeout)
    ):
        raise_if_interrupted()
        lock.acquire()
        try:
            # Trials of workers that died are failed and queued again before counting.
            if is_heartbeat_enabled(study_storage):
                fail_stale_trials(study)
            else:
                recover_dead_local_workers(study)
            fail_orphaned_trials(study)
            finished = len(study.get_trials(deepcopy=False, states=COUNTED))
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if finished >= trials:
                break
            if finished + running < trials:
                waiting_since = None
                study.optimize(run_one, n_trials=1, catch=(Exception,), callbacks=[after_trial])
                continue
        finally:
            lock.release()
        # The rest are running on other workers: wait, in case one dies and its trial returns.
        if waiting_since is None:
            waiting_since = time.monotonic()
            progress.line(f"waiting for {running} trial(s) running on other workers")
        time.sleep(1.0)
    if failures >= MAX_CONSECUTIVE_FAILURES:
        last = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-1]
        raise UserError(
            f"{failures} trials in a row failed; the last: {last.user_attrs.get('error', 'unknown')}",
            "run with --verbose to see the traceback; the study is saved and resumes on rerun",
        )
    raise_if_interrupted()
    stopped_early = None
    if rejected_in_a_row >= MAX_REJECTED_IN_A_ROW:
        stopped_early = (
            f"{rejected_in_a_row} plans in a row were predicted over budget: the sampler finds "
            "little else in this space; raise --budget or allow more pruning"
        )
        progress.line(f"stopped early: {stopped_early}")
    candidates = [t.number for t in front(study)]
    if candidates and final_remeasure:
        progress.line(
            f"re-measuring the {len(candidates)} Pareto models against the baseline "
            f"({REMEASURE_MIN_WINDOWS} to {REMEASURE_MAX_WINDOWS} timing windows each)"
        )
    records = (
        remeasure(ctx, candidates)
        if final_remeasure
        else [search_time_record(ctx, number) for number in candidates]
    )
    summary = build_summary(study, ctx, records, budget, time.monotonic() - started)
    summary["front_remeasured"] = final_remeasure
    summary["stopped_early"] = stopped_early
    summary["reject_margin"] = margin
    write_json(run_dir / "summary.json", summary)
    _plot_front(study, summary, run_dir / "front.png")
    return SearchResult(run_dir=run_dir, summary=summary)
