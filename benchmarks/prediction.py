"""Benchmark: a tight-budget search with and without latency prediction, same seed and trials.

    python benchmarks/prediction.py [--budget 35%] [--trials 30] [--seeds 0 1 2] [--space FILE]

For each seed, runs the default task twice in fresh study folders (the teacher cache is shared, and the
latency model is built beforehand by `autoshuikou profile`, whose time is reported apart:
it is paid once per machine and task). Prints, for each mode, the best feasible metric
(as the search judged feasibility, and after the final re-measurement), the wall time, and
when (seconds after the command started) a trial first reached the best metric the search
without prediction found: the time a user waits for that model.
Both modes train --trials models; plans rejected by prediction come on top of them.
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
from typing import Any

import numpy as np
import optuna

from autoshuikou.study.pareto import is_feasible
from autoshuikou.study.record import TrialRecord
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
        if is_feasible(t) and t.datetime_complete and TrialRecord.from_trial(t).metric >= metric
    ]
    return min(times, default=None)


def prediction_errors(run_dir: Path) -> str:
    """|predicted / measured - 1| over the trained trials: the model's error where the
    sampler actually searched (the plans it decides about)."""
    study = optuna.load_study(study_name=run_dir.name, storage=journal_storage(run_dir))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    predicted = [TrialRecord.from_trial(t).prediction_error for t in complete]
    errors = [abs(e) for e in predicted if e is not None]
    if not errors:
        return "-"
    return f"{np.median(errors):.1%} / {np.percentile(errors, 90):.1%} over {len(errors)} trials"


def search_once(
    cli: list[str], out: Path, args: argparse.Namespace, seed: int, predict: bool
) -> dict[str, Any]:
    started = datetime.now()
    space = ["--space", args.space] if args.space else []
    cmd = [*cli, "search", "--budget", args.budget, "--trials", args.trials, "--seed", str(seed)]
    wall = run([*cmd, "--out", str(out), *space, *([] if predict else ["--no-predict"])])
    summary = json.loads(next(out.glob("*/summary.json")).read_text())
    run_dir = out / summary["study_name"]
    study = optuna.load_study(study_name=run_dir.name, storage=journal_storage(run_dir))
    feasible = [
        TrialRecord.from_trial(t).metric for t in study.get_trials(deepcopy=False) if is_feasible(t)
    ]
    return {
        "wall": wall,
        # As the search saw it (one 1 s timing per trial), the same test as the reach times.
        "best": max(feasible, default=None),
        # After the final re-measurement: a model near the budget line can leave the front.
        "best_final": max((p["metric"] for p in summary["pareto"]), default=None),
        "summary": summary,
        "run_dir": run_dir,
        "started": started,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="35%")
    parser.add_argument("--trials", default="30")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--space", default=None, help="search-space YAML (default: the shipped one)"
    )
    args = parser.parse_args()
    cli = [sys.executable, "-m", "autoshuikou"]
    fractions = []
    with tempfile.TemporaryDirectory() as tmp:
        space = ["--space", args.space] if args.space else []
        profile_s = run([*cli, "profile", "--out", tmp, *space])
        print(f"\nprofile (once per machine and task): {profile_s:.0f} s")
        for seed in args.seeds:
            on = search_once(cli, Path(tmp) / f"predict-{seed}", args, seed, predict=True)
            off = search_once(cli, Path(tmp) / f"no-predict-{seed}", args, seed, predict=False)
            target = off["best"]  # "at least the same best accuracy as without it"
            for mode, r in (("predict", on), ("no-predict", off)):
                s = r["summary"]
                reach = (
                    None if target is None else seconds_to_reach(r["run_dir"], target, r["started"])
                )
                r["reach"] = reach
                print(
                    f"seed {seed} {mode:>10}: wall {r['wall']:.0f} s, best feasible metric {r['best']} "
                    f"(after re-measurement {r['best_final']}), "
                    f"trained {s['trials_complete']}, rejected {s['trials_rejected_by_prediction']}, "
                    f"feasible {s['trials_feasible']}; first reached {target} after {reach} s"
                )
            print(
                f"seed {seed} prediction error on trained trials: {prediction_errors(on['run_dir'])}"
            )
            fraction = None if on["reach"] is None else on["reach"] / off["wall"]
            fractions.append(fraction)
            print(
                f"seed {seed}: with prediction, no-predict's best reached after "
                f"{'never' if fraction is None else f'{fraction:.0%}'} of no-predict's wall time "
                f"(whole run: {on['wall'] / off['wall']:.0%})"
            )
    reached = sorted(f for f in fractions if f is not None)
    print(
        f"\n{len(reached)} of {len(fractions)} seeds reached no-predict's best with prediction; "
        f"fractions of no-predict's wall time: {', '.join(f'{f:.0%}' for f in reached) or '-'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
