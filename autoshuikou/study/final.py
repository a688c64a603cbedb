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
from pathlib import Path
from typing import Any

from autoshuikou.measure.latency import REMEASURE_SECONDS, measure_ratios
from autoshuikou.study.context import RunContext
from autoshuikou.study.pareto import pareto_indices
from autoshuikou.util import read_json, write_json

NOISY_WINDOW_SPREAD = 0.15  # window ratios moving more than this mark the machine as noisy


def remeasure(ctx: RunContext, trials: list[int]) -> list[dict[str, Any]]:
    """Re-time the trials' models together (in turns, against the baseline); update each
    metrics.json; return the updated records.

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
        )
    records = []
    for folder, stats in zip(folders, all_stats, strict=True):
        metrics = read_json(folder / "metrics.json")
        metrics["final"] = {
            **stats.to_dict(),
            "latency_ms": stats.ratio * ctx.baseline.latency_ms,
            "feasible": stats.ratio * ctx.baseline.latency_ms <= ctx.budget_ms,
        }
        write_json(folder / "metrics.json", metrics)
        records.append(metrics)
    return records


def search_time_record(ctx: RunContext, number: int) -> dict[str, Any]:
    """A trial's record with its search-time timing as the final one, marked not re-measured."""
    metrics: dict[str, Any] = read_json(ctx.trials_dir / f"{number:04d}" / "metrics.json")
    metrics["final"] = {
        "ratio": metrics["latency_ratio"],
        "spread": metrics["latency_raw"]["spread"],
        "latency_ms": metrics["latency_ms"],
        "feasible": metrics["feasible"],
        "remeasured": False,
    }
    return metrics


def final_front(
    records: list[dict[str, Any]], with_energy: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(front, dropped): the Pareto set by re-measured latency, and models that left it."""
    feasible = [r for r in records if r["final"]["feasible"]]
    points = [
        (r["metric"], r["final"]["latency_ms"], float(r["size_bytes"]))
        + ((r["energy_mj"],) if with_energy else ())
        for r in feasible
    ]
    front = [feasible[i] for i in pareto_indices(points)]
    kept = {r["trial"] for r in front}
    return front, [r for r in records if r["trial"] not in kept]
