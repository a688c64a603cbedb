"""The teacher cache: how much fine-tuning time does skipping the teacher's forward pass save?

    python benchmarks/teacher_cache.py                                  # digits, 8 plans
    python benchmarks/teacher_cache.py --task benchmarks/tasks.py:resnet18_digits

For ``--plans`` plans drawn at random from the task's search space, each plan's
distillation (its own epochs, seed 0) runs twice in a row: once without the cache (the
teacher at every step, as before issue 13's cache) and once with a cache that earlier plans
of this run filled (as a search's later trials find it). Prints a JSON line per plan (the
distillation seconds each way, the cached steps, whether the two students' weights are
bit-identical) and the summary: the total time with over without the cache.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import optuna
import torch

from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import prune
from autoshuikou.compress.teacher_cache import TeacherCache
from autoshuikou.report.progress import Progress
from autoshuikou.study.prepare import prepare_context
from autoshuikou.tasks import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--plans", type=int, default=8)
    args = parser.parse_args()
    task = load_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        ctx, _ = prepare_context(task, None, Path(tmp) / "run", 0, 1, 0.2, Progress())
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        cache = TeacherCache(2**30)
        totals = {"without": 0.0, "with": 0.0}
        for number in range(args.plans):
            plan = ctx.space.suggest(study.ask())
            if plan.distill.epochs <= 0:
                continue
            pruned = prune(ctx.teacher, ctx.inputs, plan.prune, plan.round_to, ctx.family)
            seconds, weights = {}, {}
            hits_before = cache.hits
            for label, used in (("without", None), ("with", cache)):
                student = copy.deepcopy(pruned)
                started = time.perf_counter()
                distill(student, ctx.teacher, task, plan.distill, seed=0, teacher_cache=used)
                seconds[label] = time.perf_counter() - started
                totals[label] += seconds[label]
                weights[label] = list(student.state_dict().values())
            identical = all(
                torch.equal(a, b) for a, b in zip(weights["without"], weights["with"], strict=True)
            )
            print(
                json.dumps(
                    {
                        "plan": number,
                        "epochs": plan.distill.epochs,
                        "seconds_without": round(seconds["without"], 2),
                        "seconds_with": round(seconds["with"], 2),
                        "steps_cached": cache.hits - hits_before,
                        "identical_weights": identical,
                    }
                ),
                flush=True,
            )
        print(
            json.dumps(
                {
                    "task": task.name,
                    "seconds_without": round(totals["without"], 1),
                    "seconds_with": round(totals["with"], 1),
                    "with_over_without": round(totals["with"] / totals["without"], 3),
                    "cache_mb": round(cache.bytes / 2**20, 2),
                }
            )
        )


if __name__ == "__main__":
    main()
