"""Fine-tuning on an accelerator: the search's distillation of one plan on each device.

    python benchmarks/device_speedup.py                                   # cpu, and cuda if present
    python benchmarks/device_speedup.py --tasks digits-detect --devices cpu,cuda --epochs 3

For each task: every channel group pruned 50% (L2 magnitude, round_to 8, fp32: the uniform
50% plan), then ``compress.distill.distill`` for --epochs on each device with seed 0, the
student scored in PyTorch afterwards (same plan, same data order: the scores should agree
to within the devices' float differences). Prints one JSON line per task and device: the
first epoch (it pays CUDA's start-up: kernels, allocator) and the median later epoch in
seconds, the metric, and the speed-up of the median epoch against the first device.
CPU training uses torch's default thread count (all cores), as the search does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import channel_groups, prune
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.plan import DistillSettings
from autoshuikou.tasks import load_task

TASKS = "digits,benchmarks/tasks.py:resnet18_digits,digits-detect"


def settings_for(family: str, epochs: int) -> DistillSettings:
    """The warm-start settings of the family's default space (detection: lr 3e-3, alpha 0.2)."""
    if family == "detection":
        return DistillSettings(epochs=epochs, lr=3e-3, temperature=1.0, alpha=0.2)
    return DistillSettings(epochs=epochs, lr=1e-3, temperature=4.0, alpha=0.9)


def time_epochs(task_spec: str, device: str, epochs: int) -> dict[str, object]:
    task = load_task(task_spec)
    groups = channel_groups(task.model, task.example_input, task.family)
    student = prune(
        task.model,
        task.example_input,
        {g.name: 0.5 for g in groups},
        round_to=8,
        family=task.family,
    )
    starts: list[float] = []
    started = time.perf_counter()
    distill(
        student,
        task.model,
        task,
        settings_for(task.family, epochs),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=TASKS, help="comma-separated task specs")
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--devices", default=default_devices, help="first one is the reference")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    machine = {
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    print(json.dumps({"machine": machine}), flush=True)
    for spec in args.tasks.split(","):
        reference: float | None = None
        for device in args.devices.split(","):
            row = time_epochs(spec, device, args.epochs)
            epoch_s = float(row["epoch_s"])  # type: ignore[arg-type]
            reference = reference or epoch_s
            row["speedup"] = round(reference / epoch_s, 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
