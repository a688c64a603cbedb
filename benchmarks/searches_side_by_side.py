"""Searches run outside `compare` (e.g. the no-code ResNet-50 case), side by side.

    python benchmarks/searches_side_by_side.py runs/resnet50-full runs/resnet50-digits-64px-30pct \
        runs/resnet50-screen --reference 0.30,0.90

For each `autoshuikou search` run folder: the fidelity, the trials trained and decided
out, the wall time as `compare` counts it (first trial started to last finished, plus the
latency profiling), the hypervolume of the feasible (latency ratio, metric retained) front
as searched and after the final re-measurement, and when the search first reached the
FIRST folder's final hypervolume as searched (seconds and share of that folder's wall
time). One JSON line per folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import optuna

from autoshuikou.compare.metrics import hypervolume
from autoshuikou.study.storage import journal_storage
from autoshuikou.util import read_json


def curve(
    run: Path, reference: tuple[float, float]
) -> tuple[dict[str, Any], list[tuple[float, float]]]:
    summary = read_json(run / "summary.json")
    study = optuna.load_study(study_name=None, storage=journal_storage(run))
    baseline = summary["baseline"]["metric"]
    profiling = float(summary["time"]["setup_seconds"].get("profiling", 0.0))
    done = [t for t in study.trials if t.datetime_complete is not None]
    start = min(t.datetime_start for t in done if t.datetime_start is not None)
    points: list[tuple[float, float]] = []
    seconds_hv = []
    for t in sorted(done, key=lambda t: t.datetime_complete):  # type: ignore[arg-type,return-value]
        a = t.user_attrs
        if "metric" in a and a.get("latency_ratio", float("inf")) < reference[0]:
            points.append((a["latency_ratio"], a["metric"] / baseline))
        assert t.datetime_complete is not None
        elapsed = (t.datetime_complete - start).total_seconds() + profiling
        seconds_hv.append((elapsed, hypervolume(points, reference)))
    final = hypervolume(
        [(p["latency_ratio"], p["metric_retained"]) for p in summary["pareto"]], reference
    )
    facts = {
        "run": str(run),
        "fidelity": summary.get("fidelity"),
        "trained": summary["time"]["trials_trained"],
        "decided_out": summary["time"]["trials_screened_out"],
        "wall_seconds": round(seconds_hv[-1][0], 1),
        "hypervolume_searched": round(seconds_hv[-1][1], 5),
        "hypervolume_remeasured": round(final, 5),
    }
    return facts, seconds_hv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reference", default="0.50,0.90", help="latency ratio,retained")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y = (float(v) for v in args.reference.split(","))
    target: tuple[float, float] | None = None  # (hypervolume, wall seconds) of the first
    for run in args.runs:
        facts, seconds_hv = curve(run, (x, y))
        if target is None:
            target = (seconds_hv[-1][1], seconds_hv[-1][0])
        reached = next((s for s, hv in seconds_hv if hv >= target[0]), None)
        facts["reaches_first_final_at"] = None if reached is None else round(reached, 1)
        facts["share"] = None if reached is None else round(reached / target[1], 3)
        print(json.dumps(facts))


if __name__ == "__main__":
    main()
