"""Benchmark: how repeatable one latency-ratio measurement is on this machine.

    python benchmarks/timing_noise.py [--task benchmarks/tasks.py:resnet18_64] [--plans 3] [--repeats 10]
    python benchmarks/timing_noise.py --task digits --states 60
    python benchmarks/timing_noise.py --task digits --plans 8 --remeasure 600 [--window 0.25 0.4]

Builds a few random plans (not fine-tuned) and times each against the baseline
``--repeats`` times in a row, as a search trial does (1 s, interleaved), printing the
coefficient of variation of the median ratio and of the 10th-percentile ratio. Then, for
the same plans, windows in one pair of runtime sessions vs a fresh pair per window: if
fresh sessions varied more, the noise would come from memory layout, not the machine.
No prediction can be scored more precisely than this noise.

``--states SECONDS`` instead times each plan in consecutive 0.25 s windows (one pair of
sessions) for that long and splits the windows by the baseline's speed in them (below or
above the midpoint of its 10th and 90th percentile): if the machine switches between speed
states, the ratio in each state and the share of windows in it show what that does to a
latency ratio.

``--remeasure SECONDS`` times the plans for that long as the final re-measurement and
`verify` do (windows of ``--window`` s, the plans taking turns against the baseline; with
several lengths the rounds alternate between them, so each sees the same machine), then
cuts each plan's windows into consecutive groups of n and compares the median ratio of
every two groups, as `verify` compares its re-measurement with the search's: for each n,
the share of comparisons more than 10% apart, for plain medians and for ratios read off at
one baseline time (as the final re-measurement and `verify` report them).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # so "benchmarks/tasks.py:..." imports

from autoshuikou.measure.latency import (
    REMEASURE_SECONDS,
    measure_interleaved,
    ratio_at_reference_speed,
)
from autoshuikou.measure.runtime import open_runner
from autoshuikou.report.progress import Progress
from autoshuikou.study.context import RunContext
from autoshuikou.study.prepare import prepare_context
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks import load_task


def window_medians(
    runners: Sequence[Callable[[np.ndarray], object]], x: np.ndarray, seconds: float = 1.0
) -> list[float]:
    """One window in blocks of 10, first run of each block dropped (as measure_interleaved):
    each runner's median time in ms."""
    samples: list[list[float]] = [[] for _ in runners]
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 3 or time.perf_counter() < deadline:
        for run, times in zip(runners, samples, strict=True):
            run(x)
            for _ in range(9):
                start = time.perf_counter()
                run(x)
                times.append(time.perf_counter() - start)
        rounds += 1
    return [float(np.median(times)) * 1e3 for times in samples]


def window_ratio(runners: Sequence[Callable[[np.ndarray], object]], x: np.ndarray) -> float:
    candidate, reference = window_medians(runners, x)
    return candidate / reference


def states(runners: Sequence[Callable[[np.ndarray], object]], x: np.ndarray, seconds: float) -> str:
    """Consecutive 0.25 s windows, split by the reference's speed in each."""
    rows = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rows.append(window_medians(runners, x, 0.25))
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
    return f"{len(rows)} windows, ratio {cv(ratio)}; " + "; ".join(parts)


def remeasure_drift(
    paths: Sequence[Path], ctx: RunContext, seconds: float, windows: Sequence[float]
) -> list[str]:
    """Round-robin windows for ``seconds``, the window lengths alternating by round; for n
    windows per group, how far two groups' medians of the same plan are apart."""
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
    lines = []
    table = np.array(rows)
    for window in windows:
        part = table[table[:, 0] == window]
        cand = [part[part[:, 1] == k, 2] for k in range(len(paths))]
        base = [part[part[:, 1] == k, 3] for k in range(len(paths))]
        reference = float(np.median(part[:, 3]))
        lines.append(f"{len(cand[0])} windows of {window} s per plan over {seconds:.0f} s")
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
                    lines.append(
                        f"  n={n:>2} {name:<10}: {len(d)} comparisons, median {np.median(d):.1%}, "
                        f"P90 {np.percentile(d, 90):.1%}, max {d.max():.1%}, "
                        f"beyond 10%: {np.mean(d > 0.10):.1%}"
                    )
    return lines


def cv(values: Sequence[float]) -> str:
    v = np.asarray(values)
    return f"CV {v.std() / v.mean():.1%} (range {v.min():.3f}..{v.max():.3f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="benchmarks/tasks.py:resnet18_64")
    parser.add_argument("--plans", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--states", type=float, default=0.0, help="seconds per plan (see above)")
    parser.add_argument("--remeasure", type=float, default=0.0, help="seconds in all (see above)")
    parser.add_argument("--window", type=float, nargs="+", default=[REMEASURE_SECONDS])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        task = load_task(args.task)
        ctx, _ = prepare_context(task, None, Path(tmp) / "run", 0, 1, 1.0, Progress())
        base = ctx.baseline.model_path
        if args.remeasure:
            paths = []
            for k, plan in enumerate(ctx.space.random_plans(args.plans, seed=12345)):
                paths.append(Path(tmp) / f"plan{k}{ctx.settings.backend.suffix}")
                build_artifact(ctx, plan.without_training(), paths[-1])
            print("\n".join(remeasure_drift(paths, ctx, args.remeasure, args.window)))
            return 0
        for k, plan in enumerate(ctx.space.random_plans(args.plans, seed=12345)):
            path = Path(tmp) / f"plan{k}{ctx.settings.backend.suffix}"
            build_artifact(ctx, plan.without_training(), path)
            if args.states:
                with ExitStack() as stack:
                    runners = [
                        stack.enter_context(open_runner(p, ctx.settings)) for p in (path, base)
                    ]
                    print(
                        f"plan {k}: {states(runners, ctx.example_input, args.states)}", flush=True
                    )
                continue
            medians, p10s = [], []
            for _ in range(args.repeats):
                c, r = measure_interleaved([path, base], ctx.example_input, ctx.settings, 1.0)
                medians.append(c.median_ms / r.median_ms)
                p10s.append(c.p10_ms / r.p10_ms)
            same, fresh = [], []
            with ExitStack() as stack:
                runners = [stack.enter_context(open_runner(p, ctx.settings)) for p in (path, base)]
                same = [window_ratio(runners, ctx.example_input) for _ in range(args.repeats)]
            for _ in range(args.repeats):
                with ExitStack() as stack:
                    runners = [
                        stack.enter_context(open_runner(p, ctx.settings)) for p in (path, base)
                    ]
                    fresh.append(window_ratio(runners, ctx.example_input))
            print(
                f"plan {k}: median ratio {cv(medians)}; p10 ratio {cv(p10s)}; "
                f"same sessions {cv(same)}; fresh sessions {cv(fresh)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
