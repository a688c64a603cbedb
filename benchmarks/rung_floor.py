"""The least wall time a screening study could have taken: its floor at this rung.

    python benchmarks/rung_floor.py runs/cmp13-bbc

For each study of --strategy (default screening) in a folder written by `autoshuikou
compare`: the seconds of the trials that are always trained (the two references and the
uniform plans; trials rejected on latency too), plus, for every other counted trial, the
mean cost of a plan screened out at the rung in that study. That is the study's time had
the rung screened out every sampled plan (a front of the uniform plans alone), printed as
a share of the same seed's full-fidelity wall time (profiling included, as `compare`
counts it). Below 40% or not tells whether the issue-13 target is reachable at this rung.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.study.front import counted
from autoshuikou.study.storage import journal_storage
from autoshuikou.util import read_json


def _seconds(trial: FrozenTrial) -> float:
    return float(sum((trial.user_attrs.get("seconds") or {}).values()))


def floor(study: optuna.Study, trials: int) -> dict[str, float]:
    always = 0.0  # references, uniform plans, rejections: paid whatever the rung decides
    always_counted = 0
    screened_out: list[float] = []
    for t in study.trials:
        anchor = "reference" in t.user_attrs or "warm_start" in t.user_attrs
        if anchor or (t.state == TrialState.PRUNED and not counted(t)):
            always += _seconds(t)
            always_counted += int(anchor and counted(t))
        elif t.state == TrialState.PRUNED:
            screened_out.append(_seconds(t))
    per_plan = sum(screened_out) / len(screened_out)
    return {
        "always_trained_seconds": round(always, 1),
        "screened_out_plan_seconds": round(per_plan, 1),
        "floor_seconds": round(always + (trials - always_counted) * per_plan, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--strategy", default="screening")
    parser.add_argument("--against", default="full-fidelity")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = read_json(args.compare_dir / "compare.json")
    trials = int(report["setup"]["trials"])
    full = {
        s["seed"]: s["total_seconds"] for s in report["studies"] if s["strategy"] == args.against
    }
    for s in report["studies"]:
        if s["strategy"] != args.strategy:
            continue
        run = args.compare_dir / f"{args.strategy}-seed{s['seed']}"
        study = optuna.load_study(study_name=None, storage=journal_storage(run))
        result = floor(study, trials)
        share = result["floor_seconds"] / full[s["seed"]] if s["seed"] in full else None
        print(json.dumps({"seed": s["seed"], **result, f"share_of_{args.against}": share}))


if __name__ == "__main__":
    main()
