"""How a pruned digits-detect student learns: the search's fine-tuning of one uniform plan
under several distillation settings, scored on the validation scenes in PyTorch.

    python benchmarks/detection_recipe.py                       # the table in docs/benchmarks.md
    python benchmarks/detection_recipe.py --ratio 0.5 --runs '[{"lr": 0.003, "alpha": 0.2}]'
    python benchmarks/detection_recipe.py --runs '[{"lr": 0.003, "alpha": 0.2, "groups": {"head": 0.75}}]'

Each run: every channel group pruned by --ratio, except the groups whose names start
with a key of the run's ``groups`` ({name prefix: ratio}) (round_to 8; channels ranked by the run's
``importance``, magnitude or taylor, as the search space's ``prune.importance``), fp32, then
``compress.distill.distill`` with the run's epochs (default 6), lr, alpha and optional
``features`` ({module: weight}), seed 0, on --device. Prints one JSON line per run (mAP, mAP@.5, seconds).
The teacher is the cached built-in one (trained on first use, about 9-12 minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import channel_groups, prune
from autoshuikou.plan import DistillSettings
from autoshuikou.study.context import taylor_gradients
from autoshuikou.tasks.digits_detect import (
    CANVAS,
    digits_detect_task,
    mean_average_precision,
    predict,
)

RUNS: list[dict[str, Any]] = [
    {"lr": 1e-3, "alpha": 0.9},  # classic KD: the warm start before the detection space's start:
    {"lr": 1e-3, "alpha": 0.3},
    {"lr": 2e-3, "alpha": 0.5},
    {"lr": 2e-3, "alpha": 0.5, "features": {"top_down": 1.0, "bottom_up": 1.0}},
    {"lr": 3e-3, "alpha": 0.2},
    {"lr": 3e-3, "alpha": 0.0},
    {"lr": 5e-3, "alpha": 0.3},
    {"lr": 3e-3, "alpha": 0.3, "epochs": 10},
    {"lr": 3e-3, "alpha": 0.2, "importance": "taylor"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=float, default=0.5, help="share of channels removed")
    parser.add_argument("--runs", type=json.loads, default=RUNS, help="JSON list of settings")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the student trains (cpu, cuda)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    task = digits_detect_task()
    teacher, example = task.model, task.example_input
    val_x = torch.cat([x for x, _ in task.val_data])
    val_t = torch.cat([t for _, t in task.val_data])
    names = [g.name for g in channel_groups(teacher, example, "detection")]
    scores = mean_average_precision(predict(teacher, val_x), val_t, CANVAS)
    print(json.dumps({"teacher": scores}), flush=True)
    gradients = None
    for run in args.runs:
        if run.get("importance") == "taylor" and gradients is None:
            gradients = taylor_gradients(task, seed=0)  # as a search with seed 0 takes them
        by_taylor = run.get("importance") == "taylor"
        ratios = {name: _ratio(name, args.ratio, run.get("groups", {})) for name in names}
        student = prune(
            teacher,
            example,
            ratios,
            round_to=8,
            family="detection",
            gradients=gradients if by_taylor else None,
        )
        settings = DistillSettings(
            epochs=run.get("epochs", 6),
            lr=run["lr"],
            temperature=1.0,  # unused by the detection loss
            alpha=run["alpha"],
            features=run.get("features", {}),
        )
        started = time.perf_counter()
        distill(student, teacher, task, settings, seed=0, device=args.device)
        seconds = time.perf_counter() - started
        scores = mean_average_precision(predict(student, val_x), val_t, CANVAS)
        row = {"ratio": args.ratio, **run, **{k: round(v, 4) for k, v in scores.items()}}
        print(json.dumps(row | {"seconds": round(seconds)}), flush=True)


def _ratio(group: str, default: float, groups: dict[str, float]) -> float:
    """The ratio of the first ``groups`` prefix ``group`` starts with, else ``default``."""
    return next((r for prefix, r in groups.items() if group.startswith(prefix)), default)


if __name__ == "__main__":
    main()
