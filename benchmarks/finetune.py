"""Benchmark suite: what each ingredient of the fine-tuning buys, measured, not assumed.

    python benchmarks/finetune.py                        # the commands and their run times
    python benchmarks/finetune.py ingredients [--task digits] [--plans 8] [--feature LAYER]

The same plans, drawn from the task's space as the search draws them, are pruned and
fine-tuned once as sampled and once with each ingredient changed alone; the table gives
each variant's mean top-1 (or the task's metric) and its paired difference from the plan as
sampled. Scores are the PyTorch student's (no int8): the ingredients act on the training.

Results: docs/results/quality.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from _common import Command, main, table

DESCRIPTION = "What each fine-tuning ingredient buys on the same plans."
WARMUP = 0.1  # the warm-up variant's share of the steps (the encoder space's)


def add_ingredients(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="digits", help="a task name or file.py:function")
    parser.add_argument("--plans", type=int, default=8, help="plans drawn from the space")
    parser.add_argument("--seed", type=int, default=0, help="the plans' and training's seed")
    parser.add_argument(
        "--feature",
        default=None,
        help="a layer whose output the student learns to match (weight 1): adds the "
        "feature-distillation variant",
    )


def run_ingredients(args: argparse.Namespace) -> int:
    """Each plan trained as sampled (no warm-up, magnitude importance, BatchNorm as trained)
    and with one ingredient changed; the metric of each, and its paired difference."""
    import torch

    from autoshuikou.compress.batchnorm import recalibrate_batchnorm
    from autoshuikou.compress.distill import distill
    from autoshuikou.compress.prune import prune
    from autoshuikou.measure.accuracy import torch_metric
    from autoshuikou.plan import Plan
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.config import DEFAULTS
    from autoshuikou.study.prepare import bind_context
    from autoshuikou.tasks import load_task

    task = load_task(args.task)
    quiet = Progress(live=False)
    with tempfile.TemporaryDirectory() as tmp:
        ctx, _ = bind_context(
            task, None, Path(tmp) / "run", args.seed, DEFAULTS.threads, 0.1, quiet
        )
    # round_to: auto is decided with the baseline, per machine; 4 stands in for it here.
    ctx = replace(ctx, space=ctx.space.with_round_to(ctx.space.space.round_to or 4))
    plans = ctx.space.random_plans(args.plans, seed=args.seed)

    def trained(plan: Plan) -> torch.nn.Module:
        gradients = ctx.label_gradients() if plan.importance == "taylor" else None
        student = prune(ctx.teacher, ctx.inputs, plan.prune, plan.round_to, ctx.family, gradients)
        return distill(student, ctx.teacher, task, plan.distill, seed=args.seed)

    def as_sampled(plan: Plan) -> Plan:
        return replace(plan, importance="magnitude", distill=replace(plan.distill, warmup=0.0))

    variants: dict[str, Callable[[Plan], Plan]] = {
        f"warm-up {WARMUP:.0%}": lambda p: replace(p, distill=replace(p.distill, warmup=WARMUP)),
        "Taylor importance": lambda p: replace(p, importance="taylor"),
    }
    if args.feature:
        variants[f"feature KD ({args.feature})"] = lambda p: replace(
            p, distill=replace(p.distill, features={args.feature: 1.0})
        )
    teacher = torch_metric(ctx.teacher, task)
    scores: dict[str, list[float]] = {"as sampled": [], "BatchNorm recalibrated": []}
    scores.update({name: [] for name in variants})
    seconds: dict[str, float] = dict.fromkeys(scores, 0.0)
    for i, sampled in enumerate(plans):
        base = as_sampled(sampled)
        started = time.monotonic()
        student = trained(base)
        seconds["as sampled"] += time.monotonic() - started
        scores["as sampled"].append(torch_metric(student, task))
        started = time.monotonic()
        recalibrate_batchnorm(student, task, args.seed)
        seconds["BatchNorm recalibrated"] += time.monotonic() - started
        scores["BatchNorm recalibrated"].append(torch_metric(student, task))
        for name, change in variants.items():
            started = time.monotonic()
            scores[name].append(torch_metric(trained(change(base)), task))
            seconds[name] += time.monotonic() - started
        line = ", ".join(f"{k} {v[-1]:.4f}" for k, v in scores.items())
        print(f"plan {i} ({base.distill.epochs} epochs): {line}", flush=True)

    print(f"\nteacher: {task.metric_name} {teacher:.4f}; {len(plans)} plans, seed {args.seed}\n")
    rows = []
    for name, values in scores.items():
        deltas = [v - b for v, b in zip(values, scores["as sampled"], strict=True)]
        wins = sum(d > 0 for d in deltas)
        losses = sum(d < 0 for d in deltas)
        rows.append(
            (
                name,
                f"{statistics.mean(values):.4f}",
                f"{statistics.mean(values) / teacher:.2%}",
                f"{min(values):.4f}",
                "-" if name == "as sampled" else f"{statistics.mean(deltas):+.4f}",
                "-" if name == "as sampled" else f"{wins} / {losses}",
                f"{seconds[name]:.0f}",
            )
        )
    columns = ["variant", "mean", "of teacher", "worst", "mean change", "better / worse", "s"]
    print(table(columns, rows))
    return 0


COMMANDS = [
    Command(
        "ingredients",
        "warm-up, BatchNorm recalibration, Taylor importance (and feature KD) on the same plans",
        "3 min on digits",
        add_ingredients,
        run_ingredients,
    ),
]

if __name__ == "__main__":
    sys.exit(main("benchmarks/finetune.py", DESCRIPTION, COMMANDS))
