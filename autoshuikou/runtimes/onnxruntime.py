"""ONNX Runtime on the CPU: ONNX export, per-layer static int8 (QDQ or QOperator form)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from autoshuikou.measure.runtime import PROVIDER, RuntimeSettings, open_session
from autoshuikou.runtimes import Runner

if TYPE_CHECKING:  # loading PyTorch is only needed to build, not to run
    import torch
    from torch import nn

    from autoshuikou.compress.quantize import Int8Format
    from autoshuikou.families import Feed, Inputs


class OnnxRuntime:
    name = "onnxruntime"
    suffix = ".onnx"

    @property
    def int8_formats(self) -> tuple[Int8Format, ...]:
        from autoshuikou.compress.quantize import CANDIDATE_FORMATS

        return CANDIDATE_FORMATS

    def describe(self) -> dict[str, object]:
        return {
            "runtime_version": ort.__version__,
            "provider": PROVIDER,
            "allow_spinning": False,
            "graph_optimization": "ORT_ENABLE_ALL",
        }

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
        from autoshuikou.compress.export import export_onnx
        from autoshuikou.compress.quantize import quantize
        from autoshuikou.families import get_family

        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            layers = export_onnx(student, example, fp32, family)
            int8 = [layer for layer in int8_layers if layer in layers]
            only_layers = get_family(family).int8_only_layers
            quantize(fp32, out, int8, layers, calibration, fmt, only_layers)

    @contextmanager
    def open(self, path: Path, threads: int) -> Iterator[Runner]:
        session = open_session(path, RuntimeSettings(threads=threads))
        name = session.get_inputs()[0].name

        def run(batch: Feed | np.ndarray) -> list[np.ndarray]:
            feed = batch if isinstance(batch, dict) else {name: batch}
            return [np.asarray(out) for out in session.run(None, feed)]

        yield run
