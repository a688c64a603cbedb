"""Before the first trial: the task bound to its search space, the baseline, and the
checks that refuse a run before any work (``search._prepare`` runs them in order)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from autoshuikou import __version__
from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.compress.prune import (
    channel_groups,
    head_pruning_notes,
    output_layer_names,
)
from autoshuikou.errors import UserError
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.measure.energy import find_energy_counter
from autoshuikou.measure.fingerprint import hardware_fingerprint
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.report.progress import Progress
from autoshuikou.runtimes import DEFAULT_RUNTIME, get_runtime
from autoshuikou.space.bind import BoundSpace, bind_space
from autoshuikou.space.schema import load_space
from autoshuikou.study.baseline import model_digest, prepare_baseline
from autoshuikou.study.budget import parse_budget
from autoshuikou.study.config import SearchConfig, resolved_config, write_config
from autoshuikou.study.context import RunContext
from autoshuikou.study.storage import (
    STUDY_FORMAT,
)
from autoshuikou.tasks import Task
from autoshuikou.util import file_lock, write_json

FLOOR_MARGIN = 0.9  # timing noise allowance when comparing a budget with the fastest plan


def parse_min_metric(text: str | float | None, baseline_metric: float) -> float | None:
    """'0.97' is absolute; '99%' is relative to the baseline's metric."""
    if text is None:
        return None
    raw = str(text).strip()
    match = re.fullmatch(r"(\d+(?:\.\d*)?)(%?)", raw)
    if not match:
        raise UserError(
            f"cannot read --min-accuracy {raw!r}",
            'give an absolute value such as 0.97 or "99%" of the baseline',
        )
    value = float(match.group(1))
    return baseline_metric * value / 100 if match.group(2) else value


def layer_names(task: Task, runtime: str = DEFAULT_RUNTIME) -> list[str]:
    """The task model's layers that plans set to int8 or fp32 (``Runtime.layers``)."""
    return get_runtime(runtime).layers(task.model, task.inputs, task.family_impl)


def bind_task_space(
    task: Task, space: str | Path | None, runtime: str = DEFAULT_RUNTIME
) -> BoundSpace:
    teacher = task.model.eval()
    family = task.family_impl
    groups = channel_groups(teacher, task.inputs, family)
    modules = [name for name, _ in teacher.named_modules()]
    loaded = load_space(space, family.default_space)
    fp32 = family.fp32_layers(output_layer_names(teacher, task.inputs, family))
    return bind_space(loaded, groups, layer_names(task, runtime), modules, fp32)


def bind_context(
    task: Task,
    space: str | Path | None,
    run_dir: Path,
    seed: int,
    threads: int,
    measure_seconds: float,
    progress: Progress,
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[RunContext, dict[str, Any]]:
    """Load the task and bind the space; nothing is measured or written yet. Returns the
    context and the run's identity (task, model, input, hardware, version)."""
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}", "e.g. --threads 1")
    get_runtime(runtime)  # an unknown name is a user error before any work
    settings = RuntimeSettings(threads=threads, runtime=runtime)
    hardware = hardware_fingerprint(settings)
    energy, energy_note = find_energy_counter()
    progress.line(
        f"energy per inference: {energy_note}"
        if energy
        else f"energy per inference: unavailable on this machine, left out ({energy_note})"
    )
    for note in head_pruning_notes(task.model):
        progress.line(note)
    ctx = RunContext(
        task=task,
        teacher=task.model.eval(),
        space=bind_task_space(task, space, runtime),
        settings=settings,
        run_dir=run_dir,
        calibration=calibration_batches(
            task.train_data, task.family_impl.calibration_samples, task.family_impl
        ),
        seed=seed,
        hardware=hardware,
        measure_seconds=measure_seconds,
        energy=energy,
    )
    identity = {
        "task": task.name,
        "model": model_digest(task.model),
        "input_shape": task.input_shape,
        "hardware": hardware,
        "version": __version__,
    }
    return ctx, identity


def measure_baseline(ctx: RunContext, identity: dict[str, Any], progress: Progress) -> RunContext:
    """Measure (or reload) the baseline under ``ctx.run_dir``: ``ctx`` with its baseline."""
    progress.line(
        f"measuring the fp32 baseline and int8 formats in {ctx.settings.runtime} on this "
        f"machine -> {ctx.run_dir}/baseline"
    )
    with file_lock(ctx.run_dir / ".baseline.lock"):  # workers starting together measure it once
        return prepare_baseline(ctx, identity)


def prepare_context(
    task: Task,
    space: str | Path | None,
    run_dir: Path,
    seed: int,
    threads: int,
    measure_seconds: float,
    progress: Progress,
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[RunContext, dict[str, Any]]:
    """Load the task, bind the space and measure (or reload) the baseline under ``run_dir``."""
    ctx, identity = bind_context(
        task, space, run_dir, seed, threads, measure_seconds, progress, runtime
    )
    return measure_baseline(ctx, identity, progress), identity


def context_for(
    task: Task, config: SearchConfig, run_dir: Path, progress: Progress
) -> tuple[RunContext, dict[str, Any]]:
    """:func:`prepare_context` with the settings of ``config``."""
    return prepare_context(
        task,
        config.space,
        run_dir,
        config.seed,
        config.threads,
        config.measure_seconds,
        progress,
        config.runtime,
    )


def writable_folder(path: Path, flag: str) -> None:
    """Create ``path`` or fail with one message: before any work, not after the baseline."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"{flag} {path} cannot be created: {exc.strerror}", "give a folder you can write"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path} is not writable", "give a folder you can write")


def record_settings(
    config: SearchConfig, task: Task, name: str, run_dir: Path, from_python: bool
) -> None:
    """runs/<study>/config.yaml (rerun with --config) and, for a no-code task, data.json."""
    note = (
        "The Task was passed from Python: --config reruns it once --task names the "
        "function that makes it."
        if from_python
        else ""
    )
    values = resolved_config(config, name)
    if from_python:
        values["task"] = None
    write_config(run_dir, values, note)
    if task.provenance:
        write_json(run_dir / "data.json", task.provenance)


def resolve_device(device: str) -> str:
    """--device auto|cpu|cuda[:N] -> where fine-tuning runs."""

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {device}: this machine has no CUDA device PyTorch can use",
                "use --device auto (CUDA where available, else the CPU) or --device cpu",
            )
        return device
    raise UserError(f"unknown --device {device!r}", "give auto, cpu or cuda")


def study_fingerprint(
    config: SearchConfig, identity: dict[str, Any], space: BoundSpace
) -> dict[str, Any]:
    """What a study is for: every worker that joins it must have the same (the fixed plans'
    labels are added once the baseline's rounding is known)."""
    return {
        **identity,
        "format": STUDY_FORMAT,
        "space_sha256": hashlib.sha256(space.space.text.encode()).hexdigest()[:16],
        "budget": parse_budget(config.budget).text,
        "min_accuracy": None if config.min_accuracy is None else str(config.min_accuracy),
        "sampler": config.sampler,
        "warm_start": config.warm_start,
    }


def check_reachable_metric(task: Task, asked: str | float | None) -> None:
    """Refuse an accuracy floor above what the task's metric can reach, before any work.
    The teacher's own score (seconds) stands in for its artifact's (minutes, with the int8
    formats and roundings the baseline measures)."""
    top = task.metric_max
    if asked is None or top is None:
        return
    teacher = torch_metric(task.model, task)
    floor = parse_min_metric(asked, teacher)
    if floor is None or floor <= top:
        return
    share = f", {top / teacher:.1%} of the baseline's" if teacher > 0 else ""
    raise UserError(
        f"--min-accuracy {asked} asks for {task.metric_name} {floor:.4f}, above the most "
        f"it can reach ({top:g}); the uncompressed model scores {teacher:.4f}",
        f"give at most {top:g}{share} (e.g. --min-accuracy 99%)",
    )


def check_reachable_budget(ctx: RunContext, budget: str) -> None:
    """Refuse a budget below the fastest model the space can produce (measured with the
    baseline), before any trial."""
    fastest = ctx.baseline.fastest_latency_ms
    if ctx.budget_ms >= fastest * FLOOR_MARGIN:
        return
    raise UserError(
        f"the budget {ctx.budget_ms:.3f} ms ({budget}) is below the fastest model this search "
        f"space can produce: {fastest:.3f} ms measured here (every group pruned to its "
        "maximum, every allowed layer int8)",
        f"raise --budget to at least {fastest:.3f}ms, or allow more pruning in the space",
    )


def check_energy_objective(wanted: bool) -> None:
    """Refuse --energy-objective where the machine has no readable energy counter."""
    if not wanted:
        return
    counter, why = find_energy_counter()
    if counter is None:
        raise UserError(
            f"energy cannot be an objective on this machine: {why}",
            "drop --energy-objective (energy needs readable Linux powercap/RAPL counters, "
            "usually root on bare metal)",
        )
