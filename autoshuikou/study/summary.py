"""After the trials: the run's summary (from the study and the re-measured front) and its plot."""

from __future__ import annotations

from math import nan
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.measure.energy import find_energy_counter
from autoshuikou.report.plots import plot_search_front
from autoshuikou.study.context import RunContext
from autoshuikou.study.final import (
    NOISY_WINDOW_SPREAD,
    FrontModel,
    final_front,
)
from autoshuikou.study.front import counted, screened
from autoshuikou.study.objectives import (
    ENERGY,
    study_objectives,
)
from autoshuikou.study.pareto import is_feasible
from autoshuikou.study.record import TrialRecord
from autoshuikou.study.refine import (
    REFINE_ATTR,
)
from autoshuikou.study.trial import PHASES
from autoshuikou.util import read_json


def summary_point(model: FrontModel, artifact_name: str) -> dict[str, Any]:
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
        **(
            {"metric_before_refine": r.metric_before_refine}
            if r.metric_before_refine is not None
            else {}
        ),
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
    unmet, closest = unmet_constraint(complete, ctx)
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
        "trials_screened_out": sum(counted(t) and "collapsed" not in t.user_attrs for t in pruned),
        "trials_collapsed": sum("collapsed" in t.user_attrs for t in pruned),
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
            (summary_point(m, ctx.artifact_name) for m in front_models),
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


def unmet_constraint(
    complete: list[FrozenTrial], ctx: RunContext
) -> tuple[str | None, list[FrozenTrial]]:
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
    trained = screened_out = collapsed = refined = 0
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
        stopped = t.state == TrialState.PRUNED and counted(t)
        collapsed += stopped and "collapsed" in t.user_attrs
        screened_out += stopped and "collapsed" not in t.user_attrs
    return {
        "setup_seconds": setup_seconds or {},
        "trial_seconds": {k: round(v, 1) for k, v in phases.items()},
        "trials_trained": trained,
        "trials_screened_out": screened_out,
        "trials_collapsed": collapsed,  # stopped after their first epoch (study.collapse)
        "trials_refined": refined,
        "refine_seconds": round(refine_seconds, 1),
    }


def plot_front(study: optuna.Study, summary: dict[str, Any], path: Path, run_dir: Path) -> None:
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
    labels = [p["trial"] for p in summary["pareto"]]
    plot_search_front(
        path, measured, front_points, budget_ratio, title, labels, int8_reference(run_dir)
    )


def int8_reference(run_dir: Path) -> tuple[float, float] | None:
    """The whole-model int8 build in the chosen format, as the baseline measured it
    (latency ratio, metric retained); None where the run has no such record."""
    formats = run_dir / "baseline" / "int8_formats.json"
    baseline = run_dir / "baseline" / "metrics.json"
    if not formats.is_file() or not baseline.is_file():
        return None
    chosen = [row for row in read_json(formats) if row.get("chosen")]
    metric = read_json(baseline)["metric"]
    if not chosen or not metric:
        return None
    return chosen[0]["latency_ratio_to_fp32"], chosen[0]["metric"] / metric
