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

import optuna

from autoshuikou.compare.metrics import hypervolume
from autoshuikou.compare.run import StudyOutcome, read_outcome, seconds_to_reach
from autoshuikou.study.storage import journal_storage
from autoshuikou.util import read_json


def outcome(run: Path, reference: tuple[float, float]) -> tuple[StudyOutcome, dict[str, object]]:
    """The search in ``run`` read as `compare` reads a study, and its summary's facts."""
    summary = read_json(run / "summary.json")
    study = optuna.load_study(study_name=None, storage=journal_storage(run))
    profiling = float(summary["time"]["setup_seconds"].get("profiling", 0.0))
    read = read_outcome(study, run.name, 0, reference, setup_seconds=profiling)
    final = hypervolume(
        [(p["latency_ratio"], p["metric_retained"]) for p in summary["pareto"]], reference
    )
    facts = {
        "run": str(run),
        "fidelity": summary.get("fidelity"),
        "trained": summary["time"]["trials_trained"],
        "decided_out": summary["time"]["trials_screened_out"],
        "wall_seconds": round(read.total_seconds, 1),
        "hypervolume_searched": round(read.hypervolume, 5),
        "hypervolume_remeasured": round(final, 5),
    }
    return read, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--reference", default="0.50,0.90", help="latency ratio,retained")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y = (float(v) for v in args.reference.split(","))
    first: StudyOutcome | None = None
    for run in args.runs:
        read, facts = outcome(run, (x, y))
        first = first or read
        reached = seconds_to_reach(read, first.hypervolume)
        facts["reaches_first_final_at"] = None if reached is None else round(reached, 1)
        facts["share"] = None if reached is None else round(reached / first.total_seconds, 3)
        print(json.dumps(facts))


if __name__ == "__main__":
    main()
