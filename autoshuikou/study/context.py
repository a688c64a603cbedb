"""Everything a trial needs, prepared once per run."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from autoshuikou.compress.prune import label_gradients
from autoshuikou.compress.teacher_cache import TeacherCache
from autoshuikou.families import Feed, Inputs, ModelFamily, to_feed
from autoshuikou.measure.energy import EnergyCounter
from autoshuikou.measure.memory import InputShapes, input_shapes
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.runtimes import Int8Format
from autoshuikou.space.bind import BoundSpace
from autoshuikou.tasks import Task

TAYLOR_BATCHES = 8  # training batches whose label-loss gradients rank channels (taylor)


def taylor_gradients(task: Task, seed: int) -> dict[str, torch.Tensor]:
    """The teacher's label-loss gradients for Taylor importance, on the first TAYLOR_BATCHES
    training batches in the order of ``seed`` (so every worker and every rebuild ranks the
    channels alike)."""
    generator = getattr(task.train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)
    batches = itertools.islice(task.batches("train_data"), TAYLOR_BATCHES)
    return label_gradients(task.model, batches, task.family_impl)


@dataclass(frozen=True)
class BaselineInfo:
    """The uncompressed fp32 artifact: the reference every trial is compared with."""

    model_path: Path
    metric: float
    latency_ms: float
    latency_spread: float
    size_bytes: int
    macs: int
    params: int
    int8_format: Int8Format
    fastest_latency_ms: float  # the most compressed plan in the space, measured


@dataclass(frozen=True)
class RunContext:
    """What every step of a run reads: frozen. It is built before the baseline is known;
    ``with_baseline`` and ``dataclasses.replace`` give the context of the next stage."""

    task: Task
    teacher: nn.Module
    space: BoundSpace
    settings: RuntimeSettings
    run_dir: Path
    calibration: list[Feed]
    seed: int
    hardware: dict[str, object]
    budget_ms: float = float("inf")  # resolved once the baseline is known
    min_metric: float | None = None
    measure_seconds: float = 1.0
    energy: EnergyCounter | None = None  # None where the machine has no readable counter
    device: str = "cpu"  # where fine-tuning runs; latency is always timed in the runtime
    teacher_cache: TeacherCache | None = None  # None: the teacher runs at every training step
    _baseline: BaselineInfo | None = None
    # Computed on first use, once per run: a cache, not a setting.
    _gradients: dict[str, dict[str, torch.Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def baseline(self) -> BaselineInfo:
        if self._baseline is None:
            raise RuntimeError("the baseline has not been measured yet")
        return self._baseline

    def with_baseline(self, info: BaselineInfo) -> RunContext:
        return replace(self, _baseline=info)

    @property
    def inputs(self) -> Inputs:
        """The deployed batch-1 example as named tensors (export, pruning, MAC counts)."""
        return self.task.inputs

    @property
    def example_input(self) -> Feed:
        """The same example as the runtime's feed: what latency is measured on."""
        return to_feed(self.task.inputs)

    @property
    def memory_shapes(self) -> InputShapes:
        """The example as the memory probe's child process rebuilds it."""
        shape = self.task.input_shape
        return shape if isinstance(shape, list) else input_shapes(dict(self.example_input))

    @property
    def family(self) -> ModelFamily:
        return self.task.family_impl

    @property
    def artifact_name(self) -> str:
        """The deployed file's name in the chosen runtime: model.onnx, model.pt, ..."""
        return f"model{self.settings.backend.suffix}"

    def label_gradients(self) -> dict[str, torch.Tensor]:
        """:func:`taylor_gradients` of the run's task and seed, computed once per run."""
        if "taylor" not in self._gradients:
            self._gradients["taylor"] = taylor_gradients(self.task, self.seed)
        return self._gradients["taylor"]

    @property
    def trials_dir(self) -> Path:
        return self.run_dir / "trials"
