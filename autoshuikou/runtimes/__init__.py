"""Runtimes that deploy the compressed model: one module each, registered here by name.

A runtime turns a pruned, fine-tuned PyTorch module into a deployable file (fp32 or with
chosen layers in int8) and runs that file. Everything else (timing, scoring, the budget)
goes through :func:`open_runner`, so adding OpenVINO or TensorRT is one new module here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from autoshuikou.errors import UserError

if TYPE_CHECKING:  # PyTorch is not loaded to run an ONNX model (the memory probe)
    import torch
    from torch import nn

    from autoshuikou.compress.quantize import Int8Format
    from autoshuikou.families import Feed, Inputs

# A batch in (the named inputs, or one array for a single-input model), every output out.
Runner = Callable[["Feed | np.ndarray"], list[np.ndarray]]
DEFAULT_RUNTIME = "onnxruntime"


class Runtime(Protocol):
    name: str
    suffix: str  # artifact file suffix, e.g. ".onnx"

    @property
    def int8_formats(self) -> tuple[Int8Format, ...]:
        """Candidates; the baseline step keeps the fastest accurate one on this machine."""
        ...

    def describe(self) -> dict[str, object]:
        """Library version and execution provider, for fingerprints and records."""
        ...

    def build(
        self,
        student: nn.Module,
        example: Inputs | torch.Tensor,
        int8_layers: Sequence[str],
        calibration: Sequence[Feed],
        fmt: Int8Format,
        out: Path,
        family: str = "classification",
    ) -> None:
        """Write the deployable artifact: ``int8_layers`` in int8, every other layer fp32."""
        ...

    def open(self, path: Path, threads: int) -> AbstractContextManager[Runner]:
        """Load the artifact; the runner is valid inside the context."""
        ...


def get_runtime(name: str) -> Runtime:
    if name == "onnxruntime":
        from autoshuikou.runtimes.onnxruntime import OnnxRuntime

        return OnnxRuntime()
    if name == "torch":
        from autoshuikou.runtimes.torchscript import TorchRuntime

        return TorchRuntime()
    raise UserError(f"unknown runtime {name!r}", "use --runtime onnxruntime (default) or torch")


RUNTIMES = ("onnxruntime", "torch")
