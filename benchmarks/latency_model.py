"""Benchmark: how well the learned latency model predicts plans it has never seen.

    python benchmarks/latency_model.py [--task digits] [--probes 60] [--plans 30]
    python benchmarks/latency_model.py --task benchmarks/tasks.py:resnet18_64
    python benchmarks/latency_model.py --space search_spaces/deep_prune.yaml

Profiles the task (timed: that is the cost a first search pays), then draws fresh plans
(another seed; random as the sampler draws them, and covering every latency level),
builds each without fine-tuning, times it interleaved with the baseline exactly as a
search trial is timed (1 s) and as the final re-measure times it (median of 5-15
windows), and compares both with the prediction.
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
from autoshuikou.measure.latency import measure_interleaved, measure_ratio
from autoshuikou.measure.latency_model import absolute_percentage_errors, layer_macs
from autoshuikou.report.progress import Progress
from autoshuikou.study.profile import build_latency_model
from autoshuikou.study.search import prepare_context
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks import load_task


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="digits")
    parser.add_argument("--probes", type=int, default=None, help="default: as the search")
    parser.add_argument("--plans", type=int, default=30, help="unseen random plans")
    parser.add_argument(
        "--covering", type=int, default=10, help="unseen plans over the whole latency range"
    )
    parser.add_argument(
        "--space", default=None, help="search-space YAML (default: the shipped one)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        task = load_task(args.task)
        ctx, _ = prepare_context(task, args.space, Path(tmp) / "run", 0, 1, 1.0, Progress())
        started = time.monotonic()
        model = build_latency_model(ctx, args.probes, seed=0)
        profile_s = time.monotonic() - started
        # Unseen plans (other seeds than the probes'): drawn as the sampler draws them, and
        # spread over every latency level as tight budgets need.
        sets = {
            "random": ctx.space.random_plans(args.plans, seed=12345),
            "covering": ctx.space.covering_plans(args.covering, seed=12345),
        }
        results: dict[str, dict[str, list[float]]] = {}
        for name, plans in sets.items():
            r = results[name] = {"predicted": [], "one 1 s window": [], "median of windows": []}
            for plan in plans:
                student = prune(ctx.teacher, ctx.task.example_input, plan.prune, plan.round_to)
                macs = layer_macs(student, ctx.task.example_input)
                r["predicted"].append(model.predict_ratio(macs, plan))
                path = Path(tmp) / f"plan{ctx.settings.backend.suffix}"
                build_artifact(ctx, plan.without_training(), path)
                base = ctx.baseline.model_path
                # As a trial is timed (one 1 s window), and as the final re-measure times it
                # (median of 5-15 windows): the second is the steadier truth.
                candidate, reference = measure_interleaved(
                    [path, base], ctx.example_input, ctx.settings, seconds=1.0
                )
                r["one 1 s window"].append(candidate.median_ms / reference.median_ms)
                windows = measure_ratio(path, base, ctx.example_input, ctx.settings).ratio
                r["median of windows"].append(windows)
    print(
        f"task {ctx.task.name}: baseline {ctx.baseline.latency_ms:.3f} ms; model {model.kind}, "
        f"{model.probes} probes, profiling {profile_s:.0f} s; cross-validated on the probes "
        f"{model.holdout_mape:.1%} / {model.holdout_p90:.1%}"
    )
    for name, r in results.items():
        if not r["predicted"]:
            continue
        predicted = np.array(r["predicted"])
        for label in ("one 1 s window", "median of windows"):
            measured = np.array(r[label])
            errors = absolute_percentage_errors(predicted, measured)
            bias = np.median(predicted / measured - 1)
            print(
                f"{len(predicted)} unseen {name} plans vs {label}, ratio "
                f"{measured.min():.2f}..{measured.max():.2f}: median APE {np.median(errors):.1%}, "
                f"90th percentile {np.percentile(errors, 90):.1%}, max {errors.max():.1%}, "
                f"median signed error {bias:+.1%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
