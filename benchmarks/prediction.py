"""Benchmark: a tight-budget search with and without latency prediction, same seed and trials.

    python benchmarks/prediction.py [--budget 35%] [--trials 30] [--seed 0] [--space FILE]

Runs the default task twice in fresh study folders (the teacher cache is shared, and the
latency model is built beforehand by `autoshuikou profile`, whose time is reported apart:
it is paid once per machine and task). Prints best feasible metric and wall time of each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(cmd, check=False)
    return time.monotonic() - started


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
            results[mode] = (wall, best, summary)
    print(f"\nprofile (once per machine and task): {profile_s:.0f} s")
    for mode, (wall, best, s) in results.items():
        print(
            f"{mode:>10}: wall {wall:.0f} s, best feasible metric {best}, trained {s['trials_complete']}, "
            f"rejected {s['trials_rejected_by_prediction']}, feasible {s['trials_feasible']}"
        )
    ratio = results["predict"][0] / results["no-predict"][0]
    print(f"wall-time ratio predict / no-predict: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
