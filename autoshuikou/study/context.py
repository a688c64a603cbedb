"""Everything a trial needs, prepared once per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from autoshuikou.compress.quantize import Int8Format
from autoshuikou.measure.energy import EnergyCounter
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.space.bind import BoundSpace
from autoshuikou.tasks import Task


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


@dataclass
class RunContext:
    task: Task
    teacher: nn.Module
    space: BoundSpace
    settings: RuntimeSettings
    run_dir: Path
    calibration: list[np.ndarray]
    seed: int
    hardware: dict[str, object]
    budget_ms: float = float("inf")  # resolved once the baseline is known
    min_metric: float | None = None
    measure_seconds: float = 1.0
    energy: EnergyCounter | None = None  # None where the machine has no readable counter
    _baseline: BaselineInfo | None = None

    @property
    def baseline(self) -> BaselineInfo:
        if self._baseline is None:
            raise RuntimeError("the baseline has not been measured yet")
        return self._baseline

    @baseline.setter
    def baseline(self, info: BaselineInfo) -> None:
        self._baseline = info

    @property
    def example_input(self) -> np.ndarray:
        return self.task.example_input.float().numpy()

    @property
    def artifact_name(self) -> str:
        """The deployed file's name in the chosen runtime: model.onnx, model.pt, ..."""
        return f"model{self.settings.backend.suffix}"

    @property
    def trials_dir(self) -> Path:
        return self.run_dir / "trials"
