"""Replay the rung's decision with other rules for which trained trial may stop a plan.

    python benchmarks/rung_rules.py runs/cmp21-bbc

For each study of --strategy (default tpe-warm) in a folder written by `autoshuikou
compare`, every plan the rung screened out is judged again against the trials trained
before it, with the same tolerance, by two kinds of rule:

- per --factors: as the rung judged it (scores at the rung, latency and size), but only
  trials whose sampled learning rate is at least FACTOR times the plan's may stop it.
  FACTOR 0 is the rule as run: it must stop every plan again (a check of the replay).
- per --sigmas: the plan's trained metric predicted by least squares from the rung score,
  log learning rate and epochs of those trials (at least MIN_FIT of them), and the plan
  stopped only when one as fast and small beat that prediction plus SIGMAS residual
  standard deviations by the tolerance.

Prints, per rule, the plans still stopped and those it would have trained.
`decided_out.py` says what those would have scored; the sampler would have drawn other
plans after other decisions, so this measures the decisions, not that path.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.study.pareto import is_feasible
from autoshuikou.study.predictor import Observed, beating
from autoshuikou.study.screening import TOLERANCE, Screen, dominating, screened_trials
from autoshuikou.study.storage import journal_storage
from autoshuikou.util import read_json

LR = "distill:lr"
EPOCHS = "distill:epochs"
# Whether a plan screened out is still stopped: (study, plan, rule's value, tolerance).
Rule = Callable[[optuna.Study, FrozenTrial, float, float], bool]
MIN_FIT = 6  # trained trials before a fit is trusted; fewer: the plan is trained


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


def _features(t: FrozenTrial) -> list[float]:
    return [1.0, t.user_attrs["screen_metric"], math.log(t.params[LR]), t.params[EPOCHS]]


def fitted_stop(study: optuna.Study, plan: FrozenTrial, sigmas: float, tolerance: float) -> bool:
    before = [
        t
        for t in study.trials
        if t.number < plan.number
        and t.state == TrialState.COMPLETE
        and "screen_metric" in t.user_attrs
        and "metric" in t.user_attrs
        and LR in t.params
    ]
    if len(before) < MIN_FIT:
        return False
    x = np.array([_features(t) for t in before])
    y = np.array([t.user_attrs["metric"] for t in before])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    spread = float(np.sqrt(((y - x @ coef) ** 2).sum() / max(1, len(y) - x.shape[1])))
    predicted = float(np.array(_features(plan)) @ coef)
    trained = [
        Observed(
            t.number,
            t.user_attrs["screen_metric"],
            t.params[EPOCHS],
            t.user_attrs["metric"],
            t.user_attrs["latency_ms"],
            t.user_attrs["size_bytes"],
        )
        for t in before
        if is_feasible(t)
    ]
    attrs = plan.user_attrs
    beaten = beating(
        predicted + sigmas * spread,
        attrs["screen_latency_ms"],
        attrs["screen_size_bytes"],
        trained,
        tolerance,
    )
    return beaten is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--strategy", default="tpe-warm")
    parser.add_argument("--factors", default="0,0.8,1", help="comma-separated FACTORs")
    parser.add_argument("--sigmas", default="0,0.5,1", help="comma-separated SIGMAS")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = read_json(args.compare_dir / "compare.json")
    factors = [float(f) for f in args.factors.split(",")]
    sigmas = [float(f) for f in args.sigmas.split(",")]
    for s in report["studies"]:
        if s["strategy"] != args.strategy:
            continue
        name = f"{args.strategy}-seed{s['seed']}"
        study = optuna.load_study(study_name=name, storage=journal_storage(args.compare_dir / name))
        baseline = read_json(args.compare_dir / name / "summary.json")["baseline"]["metric"]
        plans = screened_out(study)
        tolerance = TOLERANCE * float(baseline)
        rules: list[tuple[str, Rule, list[float]]] = [
            ("lr_factor", still_stopped, factors),
            ("fitted_sigmas", fitted_stop, sigmas),
        ]
        for rule, stops, values in rules:
            for value in values:
                trained = [p.number for p in plans if not stops(study, p, value, tolerance)]
                line = {"run": name, rule: value, "screened_out": len(plans)}
                print(
                    json.dumps(
                        {**line, "still_stopped": len(plans) - len(trained), "trained": trained}
                    )
                )


if __name__ == "__main__":
    main()
