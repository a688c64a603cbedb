"""Timing a plan once: is a plan's untrained build as fast as its fine-tuned artifact?

    python benchmarks/untrained_timing.py                       # digits, 12 plans
    python benchmarks/untrained_timing.py --task benchmarks/tasks.py:resnet18_digits --plans 8

The search (``--fidelity predict`` or ``screen``) times each plan on its untrained build
before fine-tuning and keeps that latency for the trained model. This checks the premise
that weights do not change the latency: for ``--plans`` plans drawn at random from the
task's search space, it builds the untrained artifact, the fine-tuned one (the plan's own
distillation, seed 0) and a byte copy of the untrained one, then times all three with the
fp32 baseline interleaved in one measurement (so the machine's drift hits them alike). The
copy gives the noise floor: two timings of the very same file. Prints a JSON line per plan
and a summary: the difference of each model's ratio to the baseline, trained against
untrained, and copy against untrained (the same file).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import tempfile
from pathlib import Path

import optuna

from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.report.progress import Progress
from autoshuikou.study.prepare import prepare_context
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--plans", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per plan")
    args = parser.parse_args()
    task = load_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        ctx, _ = prepare_context(task, None, Path(tmp) / "run", 0, 1, args.seconds, Progress())
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        trained_diffs, noise = [], []
        for number in range(args.plans):
            plan = ctx.space.suggest(study.ask())
            if plan.distill.epochs <= 0:
                continue
            folder = Path(tmp) / f"plan{number}"
            folder.mkdir()
            untrained, trained, copy = (
                folder / f"{name}{ctx.settings.backend.suffix}"
                for name in ("untrained", "trained", "copy")
            )
            build_artifact(ctx, plan, untrained, epochs=0)
            build_artifact(ctx, plan, trained)
            shutil.copyfile(untrained, copy)
            stats = measure_interleaved(
                [untrained, trained, copy, ctx.baseline.model_path],
                ctx.example_input,
                ctx.settings,
                seconds=args.seconds,
            )
            u, t, c = (s.median_ms / stats[3].median_ms for s in stats[:3])
            trained_diffs.append(math.log(t / u))
            noise.append(math.log(c / u))
            print(
                json.dumps(
                    {
                        "plan": number,
                        "epochs": plan.distill.epochs,
                        "int8_layers": len(plan.int8_layers),
                        "ratio_untrained": round(u, 4),
                        "ratio_trained": round(t, 4),
                        "ratio_copy": round(c, 4),
                    }
                ),
                flush=True,
            )
            shutil.rmtree(folder)

    def describe(diffs: list[float]) -> dict[str, float]:
        return {
            "median_pct": round(100 * (math.exp(statistics.median(diffs)) - 1), 2),
            "mean_abs_pct": round(100 * statistics.mean(abs(d) for d in diffs), 2),
            "max_abs_pct": round(100 * max(abs(d) for d in diffs), 2),
        }

    print(
        json.dumps(
            {
                "task": args.task,
                "plans": len(trained_diffs),
                "trained_vs_untrained": describe(trained_diffs),
                "same_file_twice": describe(noise),
            }
        )
    )


if __name__ == "__main__":
    main()
