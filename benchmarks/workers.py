"""Benchmark: trials per minute with 1 and with 2 workers on one study (journal file).

    python benchmarks/workers.py [--trials 16] [--budget 50%]

Each configuration searches the default task in a fresh study folder, with the latency
model and teacher already cached (run `autoshuikou profile` first so neither is timed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time


def run_workers(count: int, trials: int, budget: str, out: str) -> float:
    cmd = [
        sys.executable,
        "-m",
        "autoshuikou",
        "search",
        "--budget",
        budget,
        "--trials",
        str(trials),
        "--out",
        out,
        "--study-name",
        f"workers-{count}",
    ]
    started = time.monotonic()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(count)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(
            f"a worker failed: {[p.stderr.read().decode()[-500:] for p in procs if p.stderr]}"
        )
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--budget", default="50%")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        one = run_workers(1, args.trials, args.budget, out)
        two = run_workers(2, args.trials, args.budget, out)
    print(
        f"{args.trials} trials: 1 worker {one:.0f} s ({args.trials / one * 60:.1f} trials/min), "
        f"2 workers {two:.0f} s ({args.trials / two * 60:.1f} trials/min), speed-up {one / two:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
