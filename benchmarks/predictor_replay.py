"""Replay the accuracy predictor's decisions on recorded studies, with other features or
thresholds: which plans it would not have trained, the seconds that saves, and the
hypervolume the study would have lost.

    python benchmarks/predictor_replay.py runs/cmp13-digits runs/cmp13-resnet18 runs/cmp13-bbc

For each folder written by `autoshuikou compare`, the studies of --strategy (default
tpe-warm) are replayed trial by trial in their order: a plan is decided out when a
feasible trained trial at least as fast and small beats its prediction plus SIGMAS standard
errors plus 1% of the baseline metric (``study.predictor``'s rule and fit), the fit
learning only from the plans the replay trained. Feature sets: ``signal`` (the product's:
the untrained student's score and the epochs) and ``signal+macs`` (and the log of the
plan's MACs relative to the largest trained model). A replay cannot follow the sampler,
which would have drawn other plans after a different decision; plans the run itself decided
out have no trained metric and stay out. Prints a line per folder, feature set and SIGMAS.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from autoshuikou.compare.metrics import hypervolume
from autoshuikou.study.pareto import best_beating
from autoshuikou.study.predictor import (
    EPOCHS_ATTR,
    MIN_FIT,
    SIGMAS,
    SIGNAL_ATTR,
    fit_least_squares,
)
from autoshuikou.study.screening import TOLERANCE
from autoshuikou.study.storage import journal_storage

REFERENCE = (0.5, 0.9)  # as `compare` at a 50% budget: (latency ratio, metric retained)
FEATURES = ("signal", "signal+macs")


@dataclass(frozen=True)
class Trained:
    """A trial the run trained, as the replay needs it."""

    signal: float | None  # None: trained without one (the references)
    anchor: bool  # the references and warm-start plans: always trained
    epochs: float
    macs: float
    metric: float
    retained: float
    latency_ratio: float
    latency_ms: float
    size_bytes: int
    feasible: bool
    seconds_saved: float  # training, building and measuring: what not training it saves


def trained_trials(study: optuna.Study) -> list[Trained]:
    found = []
    for t in sorted(study.trials, key=lambda t: t.number):
        a = t.user_attrs
        if "metric" not in a or "latency_ratio" not in a:
            continue
        anchor = any(a.get(k) is not None for k in ("reference", "fixed", "warm_start"))
        seconds = a.get("seconds") or {}
        found.append(
            Trained(
                signal=a.get(SIGNAL_ATTR),
                anchor=anchor,
                epochs=a.get(EPOCHS_ATTR, 0.0),
                macs=a["macs"],
                metric=a["metric"],
                retained=a["metric_retained"],
                latency_ratio=a["latency_ratio"],
                latency_ms=a["latency_ms"],
                size_bytes=a["size_bytes"],
                feasible=bool(a.get("feasible")),
                seconds_saved=sum(
                    seconds.get(k, 0.0) for k in ("training", "building", "measuring")
                ),
            )
        )
    return found


def _metric(t: Trained) -> float:
    return t.metric


def features(t: Trained, kind: str, largest_macs: float) -> np.ndarray:
    assert t.signal is not None
    row = [1.0, t.signal, t.epochs]
    if kind == "signal+macs":
        row.append(math.log(t.macs / largest_macs))
    return np.array(row)


def replay(
    trials: list[Trained], kind: str, sigmas: float, baseline_metric: float
) -> dict[str, float]:
    largest = max(t.macs for t in trials)
    kept: list[Trained] = []
    out: list[Trained] = []
    for t in trials:
        learned = [k for k in kept if k.signal is not None]
        decided_out = False
        if not t.anchor and t.signal is not None and len(learned) >= MIN_FIT:
            fit = fit_least_squares(
                np.array([features(k, kind, largest) for k in learned]),
                np.array([k.metric for k in learned]),
            )
            prediction = None if fit is None else fit.predict_features(features(t, kind, largest))
            if prediction is not None:
                bar = prediction[0] + sigmas * prediction[1] + TOLERANCE * baseline_metric
                feasible = [k for k in learned if k.feasible]
                beaten = best_beating(t.latency_ms, t.size_bytes, bar, feasible, _metric)
                decided_out = beaten is not None
        (out if decided_out else kept).append(t)

    def front(ts: list[Trained]) -> float:
        return hypervolume([(t.latency_ratio, t.retained) for t in ts if t.feasible], REFERENCE)

    whole = front(trials)
    return {
        "decided_out": len(out),
        "seconds_saved": round(sum(t.seconds_saved for t in out), 1),
        "seconds_trained": round(sum(t.seconds_saved for t in trials), 1),
        "hypervolume_lost": round(1 - front(kept) / whole, 4) if whole else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--strategy", default="tpe-warm")
    parser.add_argument("--sigmas", default=f"{SIGMAS},0.5", help="comma-separated")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for folder in args.folders:
        studies = sorted(
            d for d in folder.glob(f"{args.strategy}-seed*") if (d / "summary.json").exists()
        )
        loaded = []
        for d in studies:
            study = optuna.load_study(study_name=d.name, storage=journal_storage(d))
            baseline = json.loads((d / "summary.json").read_text())["baseline"]["metric"]
            loaded.append((d.name, trained_trials(study), baseline))
        for kind in FEATURES:
            for sigmas in (float(s) for s in args.sigmas.split(",")):
                replays = [replay(ts, kind, sigmas, b) for _, ts, b in loaded]
                saved = sum(r["seconds_saved"] for r in replays)
                lost = ", ".join(f"{r['hypervolume_lost']:.1%}" for r in replays)
                trained = sum(r["seconds_trained"] for r in replays)
                print(
                    f"{folder} {kind} sigmas {sigmas}: decided out per study "
                    f"{[r['decided_out'] for r in replays]}, {saved:.0f} of {trained:.0f} s of "
                    f"training, building and measuring saved, hypervolume lost "
                    f"[{lost}]"
                )


if __name__ == "__main__":
    main()
