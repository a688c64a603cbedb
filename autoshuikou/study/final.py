"""The last step of a search: re-measure the Pareto models, longer and in fresh sessions.

One trial's timing lasts about a second and can land in a slow or fast phase of a shared
machine. Before results are reported, every feasible Pareto model is timed again against
the baseline over many separate windows, each ratio read off at the baseline's recorded
latency (the machine's slow phases raise small models' ratios: see
``measure.latency.ratio_at_reference_speed``); those ratios are what the summary reports
and what `autoshuikou verify` checks.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial

from autoshuikou.measure.latency import REMEASURE_SECONDS, measure_ratios
from autoshuikou.study.context import RunContext
from autoshuikou.study.objectives import Objective, point
from autoshuikou.study.pareto import pareto_indices
from autoshuikou.study.record import TrialRecord
from autoshuikou.util import read_json, write_json

NOISY_WINDOW_SPREAD = 0.15  # window ratios moving more than this mark the machine as noisy


@dataclass(frozen=True)
class FrontModel:
    """A model of the search's front: its record, and its final timing (as metrics.json's
    "final" holds it: re-measured, or the search's own)."""

    trial: int
    record: TrialRecord
    ratio: float
    spread: float
    latency_ms: float
    feasible: bool
    ran_on: str | None = None  # another worker's host:pid: its files are in that one's --out

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> FrontModel:
        final = metrics["final"]
        return cls(
            trial=metrics["trial"],
            record=TrialRecord.from_metrics(metrics),
            ratio=final["ratio"],
            spread=final["spread"],
            latency_ms=final["latency_ms"],
            feasible=final["feasible"],
        )


def remeasure(
    ctx: RunContext, trials: list[int], tick: Callable[[], None] = lambda: None
) -> list[FrontModel]:
    """Re-time the trials' models together (in turns, against the baseline); update each
    metrics.json; return the models with their new timing.

    The models are timed from copies: another worker may meanwhile delete a model that its
    newer trial dominates. A model already gone is dropped (it is off the front).
    """
    folders, copies = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in (ctx.trials_dir / f"{number:04d}" for number in trials):
            copy = Path(tmp) / f"{folder.name}{Path(ctx.artifact_name).suffix}"
            try:
                shutil.copyfile(folder / ctx.artifact_name, copy)
            except FileNotFoundError:
                continue
            folders.append(folder)
            copies.append(copy)
        # Windows a quarter of a trial's timing, at most REMEASURE_SECONDS: short runs stay short.
        seconds = min(REMEASURE_SECONDS, ctx.measure_seconds / 4)
        all_stats = measure_ratios(
            copies,
            ctx.baseline.model_path,
            ctx.example_input,
            ctx.settings,
            seconds,
            at_reference_ms=ctx.baseline.latency_ms,
            tick=tick,
        )
    models = []
    for folder, stats in zip(folders, all_stats, strict=True):
        metrics = read_json(folder / "metrics.json")
        metrics["final"] = {
            **stats.to_dict(),
            "latency_ms": stats.ratio * ctx.baseline.latency_ms,
            "feasible": stats.ratio * ctx.baseline.latency_ms <= ctx.budget_ms,
        }
        write_json(folder / "metrics.json", metrics)
        models.append(FrontModel.from_metrics(metrics))
    return models


def search_time_record(trial: FrozenTrial, ran_on: str | None = None) -> FrontModel:
    """A trial's record, from the study, with its search-time timing as the final one."""
    record = TrialRecord.from_trial(trial)
    return FrontModel(
        trial=trial.number,
        record=record,
        ratio=record.latency_ratio,
        spread=record.latency_spread,
        latency_ms=record.latency_ms,
        feasible=record.feasible,
        ran_on=ran_on,
    )


def final_front(
    models: list[FrontModel], objectives: tuple[Objective, ...]
) -> tuple[list[FrontModel], list[FrontModel]]:
    """(front, dropped): the Pareto set by final latency, and models that left it."""
    feasible = [m for m in models if m.feasible]
    points = [point(replace(m.record, latency_ms=m.latency_ms), objectives) for m in feasible]
    front = [feasible[i] for i in pareto_indices(points)]
    kept = {m.trial for m in front}
    return front, [m for m in models if m.trial not in kept]
