"""Benchmark: how well the learned latency model predicts plans it has never seen.

    python benchmarks/latency_model.py [--task digits] [--probes 60] [--plans 30]
    python benchmarks/latency_model.py --task benchmarks/tasks.py:resnet18_64
    python benchmarks/latency_model.py --space search_spaces/deep_prune.yaml
    python benchmarks/latency_model.py --probe-windows 1 3   # one model per probe timing

Profiles the task (timed: that is the cost a first search pays), then draws fresh plans
(another seed; random as the sampler draws them, and covering every latency level),
builds each without fine-tuning, times it interleaved with the baseline exactly as a
search trial is timed (1 s) and as the final re-measure times it (median of 20-40
windows, all plans taking turns), and compares both with the prediction.
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
from autoshuikou.measure.latency import measure_interleaved, measure_ratios
from autoshuikou.measure.latency_model import absolute_percentage_errors, layer_macs
from autoshuikou.report.progress import Progress
from autoshuikou.study.prepare import prepare_context
from autoshuikou.study.profile import PROBE_WINDOWS, build_latency_model
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
        "--probe-windows",
        type=int,
        nargs="+",
        default=[PROBE_WINDOWS],
        help="windows per probe; several values fit one model each, scored on the same plans",
    )
    parser.add_argument(
        "--space", default=None, help="search-space YAML (default: the shipped one)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        task = load_task(args.task)
        ctx, _ = prepare_context(task, args.space, Path(tmp) / "run", 0, 1, 1.0, Progress())
        models, profile_s = {}, {}
        for windows in args.probe_windows:
            started = time.monotonic()
            models[windows] = build_latency_model(ctx, args.probes, seed=0, windows=windows)
            profile_s[windows] = time.monotonic() - started
        # Unseen plans (other seeds than the probes'): drawn as the sampler draws them, and
        # spread over every latency level as tight budgets need.
        sets = {
            "random": ctx.space.random_plans(args.plans, seed=12345),
            "covering": ctx.space.covering_plans(args.covering, seed=12345),
        }
        results: dict[str, dict[str, list[float]]] = {}
        base = ctx.baseline.model_path
        paths: list[Path] = []
        for name, plans in sets.items():
            r = results[name] = {"one 1 s window": [], "median of windows": []}
            for windows in models:
                r[f"predicted {windows}"] = []
            for plan in plans:
                student = prune(ctx.teacher, ctx.task.example_input, plan.prune, plan.round_to)
                macs = layer_macs(student, ctx.task.example_input)
                for windows, model in models.items():
                    r[f"predicted {windows}"].append(model.predict_ratio(macs, plan))
                path = Path(tmp) / f"plan{len(paths)}{ctx.settings.backend.suffix}"
                build_artifact(ctx, plan.without_training(), path)
                paths.append(path)
                # As a trial is timed: one 1 s window.
                candidate, reference = measure_interleaved(
                    [path, base], ctx.example_input, ctx.settings, seconds=1.0
                )
                r["one 1 s window"].append(candidate.median_ms / reference.median_ms)
        # The steadier truth, as the final re-measure times the front: 20-40 windows per plan,
        # all plans taking turns, so each plan's windows spread over the machine's speed states.
        windows = iter(
            measure_ratios(
                paths,
                base,
                ctx.example_input,
                ctx.settings,
                at_reference_ms=ctx.baseline.latency_ms,
            )
        )
        for r in results.values():
            r["median of windows"] = [next(windows).ratio for _ in r["one 1 s window"]]
    print(f"task {ctx.task.name}: baseline {ctx.baseline.latency_ms:.3f} ms")
    for name, r in results.items():
        if r["one 1 s window"]:
            # How far the two truths disagree bounds how well any prediction can score.
            gap = absolute_percentage_errors(
                np.array(r["one 1 s window"]), np.array(r["median of windows"])
            )
            print(
                f"  {name} plans: one 1 s window vs median of windows differ by median "
                f"{np.median(gap):.1%}, 90th percentile {np.percentile(gap, 90):.1%}"
            )
    for windows, model in models.items():
        print(
            f"probes timed in {windows} window(s) each: model {model.kind}, {model.probes} "
            f"probes, profiling {profile_s[windows]:.0f} s; cross-validated on the probes "
            f"{model.holdout_mape:.1%} / {model.holdout_p90:.1%}"
        )
        for name, r in results.items():
            predicted = np.array(r[f"predicted {windows}"])
            if not len(predicted):
                continue
            for label in ("one 1 s window", "median of windows"):
                measured = np.array(r[label])
                errors = absolute_percentage_errors(predicted, measured)
                bias = np.median(predicted / measured - 1)
                print(
                    f"  {len(predicted)} unseen {name} plans vs {label}, ratio "
                    f"{measured.min():.2f}..{measured.max():.2f}: median APE "
                    f"{np.median(errors):.1%}, 90th percentile {np.percentile(errors, 90):.1%}, "
                    f"max {errors.max():.1%}, median signed error {bias:+.1%}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
