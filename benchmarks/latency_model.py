"""Benchmark: how well the learned latency model predicts plans it has never seen.

    python benchmarks/latency_model.py [--task digits] [--probes 60] [--plans 30]
    python benchmarks/latency_model.py --task benchmarks/tasks.py:resnet18_64

Profiles the task (timed: that is the cost a first search pays), then draws fresh random
plans (another seed), builds each without fine-tuning, times it interleaved with the
baseline exactly as a search trial is timed (1 s), and compares with the prediction.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # so "benchmarks/tasks.py:..." imports

from autoshuikou.compress.prune import prune
from autoshuikou.measure.latency_model import absolute_percentage_errors, layer_macs
from autoshuikou.report.progress import Progress
from autoshuikou.study.profile import build_latency_model, measure_probes, probe_plans
from autoshuikou.study.search import prepare_context
from autoshuikou.tasks import load_task


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="digits")
    parser.add_argument("--probes", type=int, default=60)
    parser.add_argument("--plans", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        task = load_task(args.task)
        ctx, _ = prepare_context(task, None, Path(tmp) / "run", 0, 1, 1.0, Progress())
        started = time.monotonic()
        model = build_latency_model(ctx, args.probes, seed=0)
        profile_s = time.monotonic() - started
        rows = measure_probes(ctx, probe_plans(ctx, args.plans, seed=12345), seconds=1.0)
    predicted = np.array(
        [
            model.predict_ratio(
                layer_macs(
                    prune(ctx.teacher, ctx.task.example_input, r["plan"].prune, r["plan"].round_to),
                    ctx.task.example_input,
                ),
                r["plan"],
            )
            for r in rows
        ]
    )
    measured = np.array([r["ratio"] for r in rows])
    errors = absolute_percentage_errors(predicted, measured)
    print(
        f"task {ctx.task.name}: baseline {ctx.baseline.latency_ms:.3f} ms; model {model.kind}, "
        f"{model.probes} probes, profiling {profile_s:.0f} s"
    )
    print(
        f"{len(rows)} unseen random plans, ratio to fp32 {measured.min():.2f}..{measured.max():.2f}: "
        f"median APE {np.median(errors):.1%}, 90th percentile {np.percentile(errors, 90):.1%}, "
        f"max {errors.max():.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
