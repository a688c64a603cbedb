"""Benchmark suite: how true a latency is on this machine.

    python benchmarks/latency_truth.py                  # the commands and their run times
    python benchmarks/latency_truth.py noise [--task digits] [--states 60 | --remeasure 600]
    python benchmarks/latency_truth.py model [--task digits] [--probe-windows 1 3]
    python benchmarks/latency_truth.py fronts runs/<compare folder> --task digits

Results: docs/results/latency-truth.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from _common import Command, main, table

if TYPE_CHECKING:
    from autoshuikou.study.context import RunContext

DESCRIPTION = "Timing noise, the latency model, and fronts re-timed together."


# -- noise: how repeatable one latency-ratio measurement is (was timing_noise.py) ----------


def add_noise(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="benchmarks/tasks.py:resnet18_64")
    parser.add_argument("--plans", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument(
        "--states",
        type=float,
        default=0.0,
        help="seconds per plan: consecutive 0.25 s windows split by the baseline's speed",
    )
    parser.add_argument(
        "--remeasure",
        type=float,
        default=0.0,
        help="seconds in all: windows as the final re-measurement takes them, compared in groups of n",
    )
    parser.add_argument(
        "--window",
        type=float,
        nargs="+",
        default=None,
        help="window lengths for --remeasure (default: the product's)",
    )


def _window_medians(
    runners: Sequence[Callable[[Any], object]], x: Any, seconds: float = 1.0
) -> list[float]:
    """One window timed as measure_interleaved times it (blocks of 10, the first run of
    each dropped): each runner's median time in ms."""
    from autoshuikou.measure.latency import interleaved_samples

    samples = interleaved_samples(runners, x, seconds)
    return [float(np.median(times)) * 1e3 for times in samples]


def _window_ratio(runners: Sequence[Callable[[Any], object]], x: Any) -> float:
    candidate, reference = _window_medians(runners, x)
    return candidate / reference


def _cv(values: Sequence[float]) -> str:
    v = np.asarray(values)
    return f"CV {v.std() / v.mean():.1%} (range {v.min():.3f}..{v.max():.3f})"


def _states(runners: Sequence[Callable[[Any], object]], x: Any, seconds: float) -> str:
    """Consecutive 0.25 s windows, split by the reference's speed in each."""
    rows = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows.append(_window_medians(runners, x, 0.25))
    candidate, reference = np.array(rows).T
    ratio = candidate / reference
    split = np.mean(np.percentile(reference, [10, 90]))
    parts = []
    for name, mask in (("fast", reference < split), ("slow", reference >= split)):
        if mask.any():
            parts.append(
                f"{name} {mask.mean():.0%} of windows: baseline {np.median(reference[mask]):.3f} ms, "
                f"candidate {np.median(candidate[mask]):.3f} ms, ratio {np.median(ratio[mask]):.3f} "
                f"(CV {ratio[mask].std() / ratio[mask].mean():.1%})"
            )
    return f"{len(rows)} windows, ratio {_cv(ratio)}; " + "; ".join(parts)


def _remeasure_drift(
    paths: Sequence[Path], ctx: RunContext, seconds: float, windows: Sequence[float]
) -> list[tuple[object, ...]]:
    """Round-robin windows for ``seconds``, the window lengths alternating by round; for n
    windows per group, how far two groups' medians of the same plan are apart."""
    from autoshuikou.measure.latency import measure_interleaved, ratio_at_reference_speed

    rows = []  # (window length, plan, candidate ms, baseline ms)
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        window = windows[rounds % len(windows)]
        for k, path in enumerate(paths):
            timed, baseline = measure_interleaved(
                [path, ctx.baseline.model_path], ctx.example_input, ctx.settings, window
            )
            rows.append((window, k, timed.median_ms, baseline.median_ms))
        rounds += 1
    found: list[tuple[object, ...]] = []
    table_ = np.array(rows)
    for window in windows:
        part = table_[table_[:, 0] == window]
        cand = [part[part[:, 1] == k, 2] for k in range(len(paths))]
        base = [part[part[:, 1] == k, 3] for k in range(len(paths))]
        reference = float(np.median(part[:, 3]))
        print(f"{len(cand[0])} windows of {window} s per plan over {seconds:.0f} s", flush=True)
        for n in (5, 10, 15, 20, 30):
            groups = range(len(cand[0]) // n)
            # Median ratio per group; and read off at one baseline time, as the product does
            # (measure.latency.ratio_at_reference_speed, gamma fitted per plan and group).
            plain, normalized = [], []
            for g in groups:
                c = [x[g * n : (g + 1) * n] for x in cand]
                b = [x[g * n : (g + 1) * n] for x in base]
                plain.append([np.median(ci / bi) for ci, bi in zip(c, b, strict=True)])
                normalized.append(
                    [
                        ratio_at_reference_speed(ci / bi, bi, reference)[0]
                        for ci, bi in zip(c, b, strict=True)
                    ]
                )
            for name, medians in (("median", plain), ("read off", normalized)):
                d = np.abs(
                    [
                        medians[j][k] / medians[i][k] - 1
                        for k in range(len(paths))
                        for i in groups
                        for j in groups
                        if j > i
                    ]
                )
                if len(d):
                    found.append(
                        (
                            f"{window} s",
                            n,
                            name,
                            len(d),
                            f"{np.median(d):.1%}",
                            f"{np.percentile(d, 90):.1%}",
                            f"{d.max():.1%}",
                            f"{np.mean(d > 0.10):.1%}",
                        )
                    )
    return found


def run_noise(args: argparse.Namespace) -> int:
    """Builds a few random plans (not fine-tuned) and times each against the baseline
    --repeats times in a row, as a search trial does (1 s, interleaved): the coefficient of
    variation of the median ratio and of the 10th-percentile ratio; then, for the same plans,
    windows in one pair of runtime sessions vs a fresh pair per window (if fresh sessions
    varied more, the noise would come from memory layout, not the machine). No prediction
    can be scored more precisely than this noise. --states and --remeasure: see --help."""
    from autoshuikou.measure.latency import REMEASURE_SECONDS as product_window
    from autoshuikou.measure.latency import measure_interleaved
    from autoshuikou.measure.runtime import open_runner
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.prepare import prepare_context
    from autoshuikou.study.trial import build_artifact
    from autoshuikou.tasks import load_task

    windows = args.window or [product_window]
    with tempfile.TemporaryDirectory() as tmp:
        task = load_task(args.task)
        ctx, _ = prepare_context(task, None, Path(tmp) / "run", 0, 1, 1.0, Progress())
        base = ctx.baseline.model_path
        if args.remeasure:
            paths = []
            for k, plan in enumerate(ctx.space.random_plans(args.plans, seed=12345)):
                paths.append(Path(tmp) / f"plan{k}{ctx.settings.backend.suffix}")
                build_artifact(ctx, plan.without_training(), paths[-1])
            rows = _remeasure_drift(paths, ctx, args.remeasure, windows)
            print()
            print(
                table(
                    [
                        "windows",
                        "n",
                        "estimator",
                        "comparisons",
                        "median",
                        "P90",
                        "max",
                        "more than 10% apart",
                    ],
                    rows,
                )
            )
            return 0
        found: list[tuple[object, ...]] = []
        for k, plan in enumerate(ctx.space.random_plans(args.plans, seed=12345)):
            path = Path(tmp) / f"plan{k}{ctx.settings.backend.suffix}"
            build_artifact(ctx, plan.without_training(), path)
            if args.states:
                with ExitStack() as stack:
                    runners = [
                        stack.enter_context(open_runner(p, ctx.settings)) for p in (path, base)
                    ]
                    found.append((k, _states(runners, ctx.example_input, args.states)))
                print(f"plan {k}: {found[-1][1]}", flush=True)
                continue
            medians, p10s = [], []
            for _ in range(args.repeats):
                c, r = measure_interleaved([path, base], ctx.example_input, ctx.settings, 1.0)
                medians.append(c.median_ms / r.median_ms)
                p10s.append(c.p10_ms / r.p10_ms)
            same, fresh = [], []
            with ExitStack() as stack:
                runners = [stack.enter_context(open_runner(p, ctx.settings)) for p in (path, base)]
                same = [_window_ratio(runners, ctx.example_input) for _ in range(args.repeats)]
            for _ in range(args.repeats):
                with ExitStack() as stack:
                    runners = [
                        stack.enter_context(open_runner(p, ctx.settings)) for p in (path, base)
                    ]
                    fresh.append(_window_ratio(runners, ctx.example_input))
            found.append((k, _cv(medians), _cv(p10s), _cv(same), _cv(fresh)))
            print(
                f"plan {k}: median ratio {found[-1][1]}; p10 ratio {found[-1][2]}; "
                f"same sessions {found[-1][3]}; fresh sessions {found[-1][4]}",
                flush=True,
            )
    print()
    if args.states:
        print(table(["plan", f"{args.states:.0f} s of 0.25 s windows"], found))
    else:
        print(
            table(
                [
                    "plan",
                    f"median ratio, {args.repeats} x 1 s",
                    "10th-percentile ratio",
                    "same sessions",
                    "fresh sessions",
                ],
                found,
            )
        )
    return 0


# -- model: the latency model on unseen plans (was latency_model.py) -----------------------


def add_model(parser: argparse.ArgumentParser) -> None:
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
        default=None,
        help="windows per probe (default: the profiler's); several values fit one model "
        "each, scored on the same plans",
    )
    parser.add_argument(
        "--space", default=None, help="search-space YAML (default: the shipped one)"
    )


def run_model(args: argparse.Namespace) -> int:
    """Profiles the task (timed: that is the cost a first search pays), then draws fresh
    plans (another seed; random as the sampler draws them, and covering every latency level),
    builds each without fine-tuning, times it interleaved with the baseline exactly as a
    search trial is timed (1 s) and as the final re-measure times it (20-40 windows, all plans
    taking turns), and compares both with the prediction."""
    from autoshuikou.compress.prune import prune
    from autoshuikou.measure.latency import measure_interleaved, measure_ratios
    from autoshuikou.measure.latency_model import absolute_percentage_errors, layer_macs
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.prepare import prepare_context
    from autoshuikou.study.profile import PROBE_WINDOWS, build_latency_model
    from autoshuikou.study.trial import build_artifact
    from autoshuikou.tasks import load_task

    with tempfile.TemporaryDirectory() as tmp:
        task = load_task(args.task)
        ctx, _ = prepare_context(task, args.space, Path(tmp) / "run", 0, 1, 1.0, Progress())
        models, profile_s = {}, {}
        for windows in args.probe_windows or [PROBE_WINDOWS]:
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
        timed = iter(
            measure_ratios(
                paths,
                base,
                ctx.example_input,
                ctx.settings,
                at_reference_ms=ctx.baseline.latency_ms,
            )
        )
        for r in results.values():
            r["median of windows"] = [next(timed).ratio for _ in r["one 1 s window"]]
    print(f"\ntask {ctx.task.name}: baseline {ctx.baseline.latency_ms:.3f} ms")
    for name, r in results.items():
        if r["one 1 s window"]:
            # How far the two truths disagree bounds how well any prediction can score.
            gap = absolute_percentage_errors(
                np.array(r["one 1 s window"]), np.array(r["median of windows"])
            )
            print(
                f"{name} plans: one 1 s window vs median of windows differ by median "
                f"{np.median(gap):.1%}, 90th percentile {np.percentile(gap, 90):.1%}"
            )
    rows = []
    for windows, model in models.items():
        for name, r in results.items():
            predicted = np.array(r[f"predicted {windows}"])
            if not len(predicted):
                continue
            for label in ("one 1 s window", "median of windows"):
                measured = np.array(r[label])
                errors = absolute_percentage_errors(predicted, measured)
                bias = np.median(predicted / measured - 1)
                rows.append(
                    (
                        windows,
                        f"{model.kind} ({model.holdout_mape:.1%} / {model.holdout_p90:.1%})",
                        model.probes,
                        f"{profile_s[windows]:.0f} s",
                        f"{len(predicted)} {name}",
                        label,
                        f"{measured.min():.2f}..{measured.max():.2f}",
                        f"{np.median(errors):.1%} / {np.percentile(errors, 90):.1%}",
                        f"{errors.max():.1%}",
                        f"{bias:+.1%}",
                    )
                )
    print()
    print(
        table(
            [
                "probe windows",
                "chosen model (CV median / P90)",
                "probes",
                "profiling",
                "unseen plans",
                "truth",
                "ratio range",
                "APE median / P90",
                "max",
                "median signed error",
            ],
            rows,
        )
    )
    return 0


# -- fronts: a comparison's final fronts timed again together (was remeasured_fronts.py) ---


def add_fronts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("compare_dir", type=Path, help="a folder written by `autoshuikou compare`")
    parser.add_argument("--task", default="digits", help="the comparison's --task")
    parser.add_argument("--seconds", type=float, default=0.1, help="per timing window")


def run_fronts(args: argparse.Namespace) -> int:
    """`autoshuikou compare` reads each study's search-time timings; studies run minutes
    apart, and on a shared machine the ratio of the same int8 model to the fp32 baseline can
    move by tens of percent between such runs. This takes the final Pareto models of every
    study of the comparison and times them all in one measurement, taking turns against the
    saved baseline (``measure_ratios``, read off at the baseline's recorded latency, as
    `search` re-measures its front), then recomputes each study's final hypervolume with the
    comparison's reference point, with one-sided Mann-Whitney U p-values between
    strategies."""
    from autoshuikou.compare.metrics import greater_p_value, hypervolume
    from autoshuikou.families import to_feed
    from autoshuikou.measure.latency import measure_ratios
    from autoshuikou.measure.runtime import RuntimeSettings
    from autoshuikou.tasks import load_task
    from autoshuikou.util import read_json

    report = read_json(args.compare_dir / "compare.json")
    reference = report["hypervolume_reference"]
    ref_xy = (reference["latency_ratio"], reference["metric_retained"])
    baseline = report["baseline"]
    runtime = report["runtime"]
    settings = RuntimeSettings(threads=int(runtime["threads"]), runtime=str(runtime["runtime"]))
    example = to_feed(load_task(args.task).inputs)
    studies = [(s["strategy"], s["seed"], s["hypervolume"]) for s in report["studies"]]
    models: list[tuple[int, Path, float]] = []  # (study index, artifact, metric retained)
    with tempfile.TemporaryDirectory() as tmp:
        for index, (strategy, seed, _) in enumerate(studies):
            run = args.compare_dir / f"{strategy}-seed{seed}"
            for point in read_json(run / "summary.json")["pareto"]:
                copy = Path(tmp) / f"{index}-{point['trial']}{Path(point['path']).suffix}"
                shutil.copyfile(run / point["path"], copy)
                models.append((index, copy, float(point["metric_retained"])))
        saved = (args.compare_dir / f"{s}-seed{n}" / str(baseline["path"]) for s, n, _ in studies)
        base = next(path for path in saved if path.exists())  # one baseline, copied to each
        stats = measure_ratios(
            [path for _, path, _ in models],
            base,
            example,
            settings,
            args.seconds,
            at_reference_ms=float(baseline["latency_ms"]),
        )
    after: dict[str, list[float]] = {}
    before: dict[str, list[float]] = {}
    rows = []
    for index, (strategy, seed, searched) in enumerate(studies):
        points = [
            (s.ratio, retained)
            for (i, _, retained), s in zip(models, stats, strict=True)
            if i == index
        ]
        remeasured = hypervolume(points, ref_xy)
        after.setdefault(strategy, []).append(remeasured)
        before.setdefault(strategy, []).append(searched)
        rows.append((strategy, seed, len(points), f"{searched:.5f}", f"{remeasured:.5f}"))
        print(
            json.dumps(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "front_models": len(points),
                    "hypervolume_search_time": round(searched, 5),
                    "hypervolume_remeasured": round(remeasured, 5),
                }
            )
        )
    print()
    print(
        table(
            [
                "strategy",
                "seed",
                "front models",
                "hypervolume as searched",
                "fronts re-timed together",
            ],
            rows,
        )
    )
    print()
    print(
        table(
            ["strategy", "as searched (mean ± sd)", "re-timed together (mean ± sd)"],
            [
                (
                    name,
                    f"{statistics.mean(before[name]):.4f} ± {statistics.stdev(before[name]):.4f}",
                    f"{statistics.mean(after[name]):.4f} ± {statistics.stdev(after[name]):.4f}",
                )
                for name in after
            ],
        )
    )
    print()
    print(
        table(
            ["one-sided Mann-Whitney U", "as searched", "re-timed together"],
            [
                (
                    f"p ({a} > {b})",
                    greater_p_value(before[a], before[b]),
                    greater_p_value(after[a], after[b]),
                )
                for a, b in itertools.permutations(after, 2)
            ],
        )
    )
    return 0


COMMANDS = [
    Command(
        "noise",
        "how repeatable one latency ratio is: repeats, speed states (--states), windows (--remeasure)",
        "3 min (ResNet-18 at 64 px; --remeasure: its seconds)",
        add_noise,
        run_noise,
    ),
    Command(
        "model",
        "the latency model's error on unseen plans against one window and the re-measurement",
        "4 min (digits; ResNet-18 about 15 min)",
        add_model,
        run_model,
    ),
    Command(
        "fronts",
        "a comparison's final fronts timed again together, hypervolumes free of drift",
        "1-30 min (the number of front models)",
        add_fronts,
        run_fronts,
    ),
]

if __name__ == "__main__":
    sys.exit(main("benchmarks/latency_truth.py", DESCRIPTION, COMMANDS))
