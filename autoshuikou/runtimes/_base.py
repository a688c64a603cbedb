"""The runtime contract: everything the pipeline asks of a deployed model's format.

A runtime turns a pruned, fine-tuned PyTorch module into a deployable file (fp32, or with
chosen layers in int8), loads and runs that file, and says what the file holds (its
parameters and MACs, its inputs and outputs). Nothing outside ``runtimes/`` looks at the
file's format: it asks the runtime.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # PyTorch is not loaded to run a model (the memory probe's child process)
    import torch
    from torch import nn

    from autoshuikou.families import Feed, Inputs, ModelFamily

# A batch in (the named inputs, or one array for a single-input model), every output out.
Runner = Callable[["Feed | np.ndarray"], list[np.ndarray]]
# An input's or output's name, element type and shape (symbolic axes by name).
TensorInfo = dict[str, Any]


@dataclass(frozen=True)
class Int8Format:
    """How a runtime stores and runs int8: graph form, activation sign, weight scales."""

    # ONNX Runtime: "QDQ" (Q/DQ pairs, fused at load), "QOperator" (QLinearConv) or
    # "dynamic" (int8 weights, activations quantized at run time; MatMul/Gemm layers only).
    # PyTorch: "FX" (graph-mode quantization).
    quant_format: str = "QDQ"
    activations: str = "u8"  # "u8" or "s8"; weights are always s8
    per_channel: bool = True

    @property
    def name(self) -> str:
        return (
            f"{self.quant_format.lower()}-{self.activations}s8-{'pc' if self.per_channel else 'pt'}"
        )

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Int8Format:
        return cls(
            quant_format=str(data["quant_format"]),
            activations=str(data["activations"]),
            per_channel=bool(data["per_channel"]),
        )


class Runtime(ABC):
    name: ClassVar[str]
    suffix: ClassVar[str]  # the artifact's file suffix, e.g. ".onnx"

    @property
    @abstractmethod
    def int8_formats(self) -> tuple[Int8Format, ...]:
        """Candidates; the baseline step keeps the fastest accurate one on this machine."""

    @abstractmethod
    def describe(self) -> dict[str, object]:
        """Library version and execution provider, for fingerprints and records."""

    @abstractmethod
    def build(
        self,
        student: nn.Module,
        example: Inputs | torch.Tensor,
        int8_layers: Sequence[str],
        calibration: Sequence[Feed],
        fmt: Int8Format,
        out: Path,
        family: ModelFamily,
    ) -> None:
        """Write the deployable artifact: ``int8_layers`` in int8, every other layer fp32."""

    @abstractmethod
    def open(self, path: Path, threads: int) -> AbstractContextManager[Runner]:
        """Load the artifact; the runner is valid inside the context."""

    @abstractmethod
    def run_snippet(self, artifact: str, threads: int, feed: str) -> str:
        """Python lines that run ``artifact`` without autoshuikou, for an export's README
        (``feed``: the inputs as a dict literal's body)."""

    def counts(self, path: Path, example: Feed) -> tuple[int, int] | None:
        """(parameters, MACs for ``example``) counted on the artifact itself; None where its
        format has no graph to count on (then the traced PyTorch module's counts are kept)."""
        return None

    def tensors(self, path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
        """The artifact's inputs and outputs (name, dtype, shape); empty where its format
        does not say."""
        return [], []

    def layers(
        self, model: nn.Module, example: Inputs | torch.Tensor, family: ModelFamily
    ) -> list[str]:
        """The layers a plan may set to int8 or fp32, by PyTorch module name. Plans and
        spaces name the layers as the ONNX export does, whatever the runtime, so one space
        serves every runtime; a runtime that can quantize other layers overrides this."""
        from autoshuikou.runtimes.onnxruntime.export import export_onnx

        with tempfile.TemporaryDirectory() as tmp:
            return export_onnx(model, example, Path(tmp) / "layers.onnx", family)
