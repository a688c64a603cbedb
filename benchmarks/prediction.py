"""Benchmark: a tight-budget search with and without latency prediction, same seed and trials.

    python benchmarks/prediction.py [--budget 35%] [--trials 30] [--seed 0] [--space FILE]

Runs the default task twice in fresh study folders (the teacher cache is shared, and the
latency model is built beforehand by `autoshuikou profile`, whose time is reported apart:
it is paid once per machine and task). Prints, for each mode, the best feasible metric,
the wall time, and when (seconds after the command started) a trial first reached the
best metric both modes found: the time a user waits for that model.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna

from autoshuikou.study.pareto import is_feasible
from autoshuikou.study.storage import journal_storage


def run(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=False)
    return time.monotonic() - started


def seconds_to_reach(run_dir: Path, metric: float, started: datetime) -> float | None:
    """Seconds from ``started`` until a feasible trial first scored at least ``metric``."""
    study = optuna.load_study(study_name=run_dir.name, storage=journal_storage(run_dir))
    times = [
        (t.datetime_complete - started).total_seconds()
        for t in study.get_trials(deepcopy=False)
        if is_feasible(t) and t.datetime_complete and t.user_attrs["metric"] >= metric
    ]
    return min(times, default=None)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="35%")
    parser.add_argument("--trials", default="30")
    parser.add_argument("--seed", default="0")
    parser.add_argument(
        "--space", default=None, help="search-space YAML (default: the shipped one)"
    )
    args = parser.parse_args()
    cli = [sys.executable, "-m", "autoshuikou"]
    space = ["--space", args.space] if args.space else []
    with tempfile.TemporaryDirectory() as tmp:
        profile_s = run([*cli, "profile", "--out", tmp, *space])
        results = {}
        for mode in ("predict", "no-predict"):
            extra = ["--no-predict"] if mode == "no-predict" else []
            out = Path(tmp) / mode
            started = datetime.now()
            wall = run(
                [
                    *cli,
                    "search",
                    "--budget",
                    args.budget,
                    "--trials",
                    args.trials,
                    "--seed",
                    args.seed,
                    "--out",
                    str(out),
                    *space,
                    *extra,
                ]
            )
            summary = json.loads(next(out.glob("*/summary.json")).read_text())
            best = max((p["metric"] for p in summary["pareto"]), default=None)
            results[mode] = (wall, best, summary, out / summary["study_name"], started)
        target = results["no-predict"][1]  # "at least the same best accuracy as without it"
        print(f"\nprofile (once per machine and task): {profile_s:.0f} s")
        reach = {}
        for mode, (wall, best, s, run_dir, started) in results.items():
            reach[mode] = None if target is None else seconds_to_reach(run_dir, target, started)
            print(
                f"{mode:>10}: wall {wall:.0f} s, best feasible metric {best}, trained "
                f"{s['trials_complete']}, rejected {s['trials_rejected_by_prediction']}, "
                f"feasible {s['trials_feasible']}; reached {target} after {reach[mode]} s"
            )
    print(
        f"wall-time ratio predict / no-predict: {results['predict'][0] / results['no-predict'][0]:.2f}"
    )
    predict_reach = reach.get("predict")
    if predict_reach is not None:
        print(
            f"time to reach {target} with prediction / wall time without: "
            f"{predict_reach / results['no-predict'][0]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
