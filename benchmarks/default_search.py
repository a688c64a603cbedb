"""Benchmark: the README's main job, timed from a cold cache, then re-verified.

    python benchmarks/default_search.py [--budget 50%] [--out /tmp/autoshuikou-bench]

Runs `autoshuikou search --budget B` on the default task with the default trial count in
a fresh cache (so the teacher's training is included in the wall time), then
`autoshuikou verify` in a fresh process, and prints the figures docs/benchmarks.md records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--out", default="/tmp/autoshuikou-bench")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "AUTOSHUIKOU_CACHE": str(out / "cache")}
    cli = [sys.executable, "-m", "autoshuikou"]

    started = time.monotonic()
    search = subprocess.run(
        [*cli, "search", "--budget", args.budget, "--out", str(out / "runs")], env=env
    )
    wall = time.monotonic() - started
    run_dir = next((out / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    verify = subprocess.run([*cli, "verify", str(run_dir)], env=env)

    base = summary["baseline"]
    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"search exit {search.returncode}, verify exit {verify.returncode}"
    )
    print(
        f"wall time (teacher training included): {wall:.0f} s for {summary['trials_complete']} trials"
    )
    print(
        f"baseline: metric {base['metric']:.4f}, {base['latency_ms']:.3f} ms, {base['size_bytes'] / 1024:.0f} KiB"
    )
    print("| trial | metric | retained | latency ms | ratio to fp32 | size KiB | MMACs |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for p in summary["pareto"]:
        print(
            f"| {p['trial']} | {p['metric']:.4f} | {p['metric'] / base['metric']:.2%} | "
            f"{p['latency_ms']:.3f} | {p['latency_ratio']:.3f} | {p['size_bytes'] / 1024:.0f} | "
            f"{p['macs'] / 1e6:.2f} |"
        )
    return search.returncode or verify.returncode


if __name__ == "__main__":
    sys.exit(main())
