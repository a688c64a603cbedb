"""Replay the rung's decision with learning-rate conditions on who may stop a plan.

    python benchmarks/rung_rules.py runs/cmp21-bbc

For each study of --strategy (default tpe-warm) in a folder written by `autoshuikou
compare`, every plan the rung screened out is judged again against the trials trained
before it, as the rung saw them (their scores at the rung, latency and size), with the
same tolerance, but only trials whose sampled learning rate is at least FACTOR times the
plan's may stop it. FACTOR 0 is the rule as run (it must stop every plan again: a check
of the replay). Prints, per factor, the plans still stopped and those it would have
trained. `decided_out.py` says what those would have scored; the sampler would have drawn
other plans after other decisions, so this measures the decisions, not that path.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.study.screening import TOLERANCE, Screen, dominating, screened_trials
from autoshuikou.study.storage import journal_storage
from autoshuikou.util import read_json

LR = "distill:lr"


def screened_out(study: optuna.Study) -> list[FrozenTrial]:
    """The plans stopped at the rung (pruned with a metric there)."""
    return [
        t
        for t in study.trials
        if t.state == TrialState.PRUNED and "screen_metric" in t.user_attrs and LR in t.params
    ]


def still_stopped(study: optuna.Study, plan: FrozenTrial, factor: float, tolerance: float) -> bool:
    attrs = plan.user_attrs
    screen = Screen(
        attrs["screen_latency_ms"],
        attrs["screen_latency_ratio"],
        attrs["screen_size_bytes"],
        attrs["screen_metric"],
        0.0,
    )
    before = [
        t
        for t in study.trials
        if t.number < plan.number
        and t.state == TrialState.COMPLETE
        and t.params.get(LR, 0.0) >= factor * plan.params[LR]
    ]
    return dominating(screen, screened_trials(before), tolerance) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--strategy", default="tpe-warm")
    parser.add_argument("--factors", default="0,0.8,1", help="comma-separated FACTORs")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = read_json(args.compare_dir / "compare.json")
    factors = [float(f) for f in args.factors.split(",")]
    for s in report["studies"]:
        if s["strategy"] != args.strategy:
            continue
        name = f"{args.strategy}-seed{s['seed']}"
        study = optuna.load_study(study_name=name, storage=journal_storage(args.compare_dir / name))
        baseline = read_json(args.compare_dir / name / "summary.json")["baseline"]["metric"]
        plans = screened_out(study)
        for factor in factors:
            trained = [
                p.number
                for p in plans
                if not still_stopped(study, p, factor, TOLERANCE * float(baseline))
            ]
            line = {"run": name, "lr_factor": factor, "screened_out": len(plans)}
            print(
                json.dumps({**line, "still_stopped": len(plans) - len(trained), "trained": trained})
            )


if __name__ == "__main__":
    main()
