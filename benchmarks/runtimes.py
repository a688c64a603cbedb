"""Benchmark: what each runtime measures on this machine for one task.

    python benchmarks/runtimes.py [--task digits]

For ONNX Runtime and PyTorch in turn: the fp32 baseline's latency, every int8 format's
latency relative to fp32 (and which one the search would use), the channel rounding the
machine picked, and the fastest model the default space reaches. Each runtime is measured
in a fresh run folder, as a first search there would.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # so "benchmarks/tasks.py:..." imports

from autoshuikou.report.progress import Progress
from autoshuikou.runtimes import runtime_names
from autoshuikou.study.prepare import prepare_context
from autoshuikou.tasks import load_task
from autoshuikou.util import read_json


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="digits")
    args = parser.parse_args()
    task = load_task(args.task)
    for runtime in runtime_names():
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            started = time.monotonic()
            ctx, _ = prepare_context(task, None, run, 0, 1, 1.0, Progress(), runtime)
            seconds = time.monotonic() - started
            b = ctx.baseline
            formats = read_json(run / "baseline" / "int8_formats.json")
            rounding = read_json(run / "baseline" / "round_to.json")
        print(
            f"\n{runtime}: fp32 baseline {b.latency_ms:.3f} ms (spread {b.latency_spread:.0%}), "
            f"fastest plan {b.fastest_latency_ms / b.latency_ms:.2f}x, round_to {ctx.space.round_to}, "
            f"baseline step {seconds:.0f} s"
        )
        for f in formats:
            mark = " <- chosen" if f["chosen"] else ""
            print(
                f"  int8 {f['name']:<16} {f['latency_ratio_to_fp32']:.2f}x fp32, metric {f['metric']:.4f}{mark}"
            )
        for r in rounding:
            mark = " <- chosen" if r["chosen"] else ""
            print(f"  round_to {r['round_to']:>2}: excess latency {r['excess_latency']:+.3f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
