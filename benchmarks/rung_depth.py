"""How early can the rung judge? Shorter rungs replayed on the plans a screening study trained.

    python benchmarks/rung_depth.py runs/cmp15-bbc/tpe-warm-seed0 --task bbc-minilm

The rung (``study.screening``) scores a plan's student after ``SCREEN_EPOCHS`` of its own
fine-tuning. For every plan the study trained fully (the references aside), this prunes the
teacher again, fine-tunes the student with the plan's own settings and the study's seed up
to each of ``--fractions`` of an epoch of its schedule (the same steps the search takes:
a rung that stops training there), and scores it in PyTorch as the rung does. It prints per
fraction: the seconds that took, the Spearman rank correlation of the scores with the
trained models' recorded metrics, and the screening rule replayed in the study's order
(each plan against the trained plans before it, scored at the same fraction; the uniform
plans are never screened out): how many plans it would have stopped, how many of those
are on the study's final front (lost), and the training they took. The replay sees only
the plans the study trained, and cannot follow the sampler, which would have drawn other
plans after other decisions: it is a case for a setting, not a result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import optuna
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import spearmanr

from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import prune
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.plan import Plan
from autoshuikou.study.front import front
from autoshuikou.study.screening import SCREEN_EPOCHS, TOLERANCE, Screen, Screened, dominating
from autoshuikou.study.storage import journal_storage
from autoshuikou.tasks import Task, load_task
from autoshuikou.util import read_json


class _Stop(Exception):
    pass


def score_at(task: Task, plan: Plan, fraction: float, seed: int) -> float:
    """The plan's student scored after ``fraction`` of an epoch of its own fine-tuning."""
    student = prune(task.model, task.inputs, plan.prune, plan.round_to, task.family)
    if plan.distill.epochs <= 0:  # never trained: the same model at every point
        return torch_metric(student, task)
    scores: list[float] = []

    def check(model: torch.nn.Module) -> None:
        scores.append(torch_metric(model, task))
        raise _Stop

    with contextlib.suppress(_Stop):  # the check stops training at the rung
        distill(student, task.model, task, plan.distill, seed=seed, rung=(fraction, check))
    return scores[0]


def replay(trials: list[FrozenTrial], scores: dict[int, float], baseline: float) -> list[int]:
    """The trials the screening rule would have stopped, in the study's order (a stopped
    plan is not trained, so later plans are not compared with it)."""
    stopped: list[int] = []
    seen: list[Screened] = []
    for t in trials:
        a = t.user_attrs
        screen = Screen(a["latency_ms"], a["latency_ratio"], a["size_bytes"], scores[t.number], 0)
        if "warm_start" not in a and dominating(screen, seen, TOLERANCE * baseline):
            stopped.append(t.number)
            continue
        if a["feasible"]:
            seen.append(Screened(t.number, a["latency_ms"], a["size_bytes"], scores[t.number]))
    return stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a search run folder (holds study.journal)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--fractions", default="0.125,0.25")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=None, storage=journal_storage(args.run))
    summary = read_json(args.run / "summary.json")
    seed = int(yaml.safe_load((args.run / "config.yaml").read_text())["seed"])
    task = load_task(args.task)
    trained = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "reference" not in t.user_attrs and "screen_metric" in t.user_attrs
    ]
    on_front = {t.number for t in front(study)}
    baseline = float(summary["baseline"]["metric"])
    plans = {
        t.number: Plan.from_dict(read_json(args.run / "trials" / f"{t.number:04d}" / "plan.json"))
        for t in trained
    }
    final = [t.user_attrs["metric"] for t in trained]
    fractions = [float(f) for f in args.fractions.split(",")]
    recorded = {t.number: float(t.user_attrs["screen_metric"]) for t in trained}
    results: dict[float, tuple[dict[int, float], float | None]] = {SCREEN_EPOCHS: (recorded, None)}
    for fraction in fractions:
        started = time.monotonic()
        scores = {n: score_at(task, p, fraction, seed) for n, p in plans.items()}
        results[fraction] = (scores, time.monotonic() - started)
    for fraction, (scores, seconds) in sorted(results.items()):
        stopped = replay(trained, scores, baseline)
        training = sum(t.user_attrs["seconds"]["training"] for t in trained if t.number in stopped)
        print(
            json.dumps(
                {
                    "run": str(args.run),
                    "fraction": fraction,
                    "plans": len(trained),
                    "seconds_to_score_all": None if seconds is None else round(seconds, 1),
                    "spearman_vs_trained": round(
                        float(spearmanr([scores[t.number] for t in trained], final)[0]), 3
                    ),
                    "would_stop": len(stopped),
                    "front_lost": sorted(set(stopped) & on_front),
                    "training_seconds_of_stopped": round(training, 1),
                }
            )
        )


if __name__ == "__main__":
    main()
