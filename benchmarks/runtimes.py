"""Benchmark suite: runtimes and their int8 forms on this machine, and fine-tuning on a GPU.

    python benchmarks/runtimes.py                       # the commands and their run times
    python benchmarks/runtimes.py formats [--task digits]
    python benchmarks/runtimes.py device [--tasks ...] [--devices cpu,cuda] [--epochs 3]

Results: docs/results/runtimes.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import Command, main, table

if TYPE_CHECKING:
    from autoshuikou.plan import DistillSettings

DESCRIPTION = "Runtimes and int8 forms measured per machine; fine-tuning on an accelerator."


# -- formats: what each runtime measures for one task (was benchmarks/runtimes.py) ----------


def add_formats(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="digits")


def run_formats(args: argparse.Namespace) -> int:
    """For ONNX Runtime and PyTorch in turn: the fp32 baseline's latency, every int8 format's
    latency relative to fp32 (and which one the search would use), the channel rounding the
    machine picked, and the fastest model the default space reaches. Each runtime is measured
    in a fresh run folder, as a first search there would."""
    from autoshuikou.report.progress import Progress
    from autoshuikou.runtimes import runtime_names
    from autoshuikou.study.prepare import prepare_context
    from autoshuikou.tasks import load_task
    from autoshuikou.util import read_json

    task = load_task(args.task)
    summary, details = [], []
    for runtime in runtime_names():
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            started = time.monotonic()
            ctx, _ = prepare_context(task, None, run, 0, 1, 1.0, Progress(), runtime)
            seconds = time.monotonic() - started
            b = ctx.baseline
            formats = read_json(run / "baseline" / "int8_formats.json")
            rounding = read_json(run / "baseline" / "round_to.json")
        chosen = next((f["name"] for f in formats if f["chosen"]), None)
        summary.append(
            (
                runtime,
                f"{b.latency_ms:.3f} ms (spread {b.latency_spread:.0%})",
                chosen,
                ctx.space.round_to,
                f"{b.fastest_latency_ms / b.latency_ms:.2f}x",
                f"{seconds:.0f} s",
            )
        )
        for f in formats:
            details.append(
                (
                    runtime,
                    f"int8 {f['name']}",
                    f"{f['latency_ratio_to_fp32']:.2f}x fp32, metric {f['metric']:.4f}",
                    "chosen" if f["chosen"] else "",
                )
            )
        for r in rounding:
            details.append(
                (
                    runtime,
                    f"round_to {r['round_to']}",
                    f"excess latency {r['excess_latency']:+.3f}",
                    "chosen" if r["chosen"] else "",
                )
            )
    print()
    print(
        table(
            [
                "runtime",
                "fp32 baseline",
                "int8 format chosen",
                "round_to",
                "fastest plan",
                "baseline step",
            ],
            summary,
        )
    )
    print()
    print(table(["runtime", "choice", "measured", ""], details))
    return 0


# -- device: the search's distillation of one plan on each device (was device_speedup.py) ---

DEVICE_TASKS = "digits,benchmarks/tasks.py:resnet18_digits,digits-detect"


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", default=DEVICE_TASKS, help="comma-separated task specs")
    parser.add_argument(
        "--devices",
        default=None,
        help="first one is the reference (default: cpu, and cuda if present)",
    )
    parser.add_argument("--epochs", type=int, default=3)


def _distill_settings(family: str, epochs: int) -> DistillSettings:
    """The warm-start settings of the family's default space (detection: lr 3e-3, alpha 0.2)."""
    from autoshuikou.plan import DistillSettings

    if family == "detection":
        return DistillSettings(epochs=epochs, lr=3e-3, temperature=1.0, alpha=0.2)
    return DistillSettings(epochs=epochs, lr=1e-3, temperature=4.0, alpha=0.9)


def _time_epochs(task_spec: str, device: str, epochs: int) -> dict[str, object]:
    import torch

    from autoshuikou.compress.distill import distill
    from autoshuikou.compress.prune import channel_groups, prune
    from autoshuikou.measure.accuracy import torch_metric
    from autoshuikou.tasks import load_task

    task = load_task(task_spec)
    groups = channel_groups(task.model, task.example_input, task.family_impl)
    student = prune(
        task.model,
        task.example_input,
        {g.name: 0.5 for g in groups},
        round_to=8,
        family=task.family_impl,
    )
    starts: list[float] = []
    started = time.perf_counter()
    distill(
        student,
        task.model,
        task,
        _distill_settings(task.family, epochs),
        seed=0,
        device=device,
        on_epoch=lambda _i, _n: starts.append(time.perf_counter()),
    )
    if device == "cuda":
        torch.cuda.synchronize()
    ended = time.perf_counter()
    durations = [b - a for a, b in zip(starts, [*starts[1:], ended], strict=True)]
    return {
        "task": task.name,
        "device": device,
        "epochs": epochs,
        "first_epoch_s": round(durations[0], 3),
        "epoch_s": round(statistics.median(durations[1:] or durations), 3),
        "total_s": round(ended - started, 2),
        "metric": round(torch_metric(student, task), 4),
    }


def run_device(args: argparse.Namespace) -> int:
    """Every channel group pruned 50% (L2 magnitude, round_to 8, fp32: the uniform 50% plan),
    then ``compress.distill.distill`` for --epochs on each device with seed 0, the student
    scored in PyTorch afterwards (same plan, same data order: the scores should agree to
    within the devices' float differences). Per task and device: the first epoch (it pays
    CUDA's start-up) and the median later epoch in seconds, the metric, and the speed-up of
    the median epoch against the first device. CPU training uses torch's default thread
    count (all cores), as the search does."""
    import torch

    devices = args.devices or ("cpu,cuda" if torch.cuda.is_available() else "cpu")
    print(f"cpu threads {torch.get_num_threads()}", flush=True)
    rows = []
    for spec in args.tasks.split(","):
        reference: float | None = None
        for device in devices.split(","):
            row = _time_epochs(spec, device, args.epochs)
            epoch_s = float(row["epoch_s"])  # type: ignore[arg-type]
            reference = reference or epoch_s
            row["speedup"] = round(reference / epoch_s, 2)
            print(json.dumps(row), flush=True)
            rows.append(
                (
                    row["task"],
                    device,
                    row["first_epoch_s"],
                    row["epoch_s"],
                    f"{row['speedup']}x",
                    row["metric"],
                )
            )
    print()
    print(table(["task", "device", "first epoch s", "s / epoch", "speed-up", "metric"], rows))
    return 0


COMMANDS = [
    Command(
        "formats",
        "each runtime's fp32 baseline, int8 formats and channel rounding on this machine",
        "2 min",
        add_formats,
        run_formats,
    ),
    Command(
        "device",
        "fine-tuning one plan on the CPU and on CUDA where there is one (3 tasks)",
        "5 min",
        add_device,
        run_device,
    ),
]

if __name__ == "__main__":
    sys.exit(main("benchmarks/runtimes.py", DESCRIPTION, COMMANDS))
