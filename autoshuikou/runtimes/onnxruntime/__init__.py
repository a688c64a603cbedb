"""ONNX Runtime on the CPU: ONNX export, per-layer static int8 (QDQ or QOperator form) or
dynamic int8; parameters and MACs counted on the ONNX graph itself.

The exporter (:mod:`.export`), the int8 build (:mod:`.quantize`) and the graph counts
(:mod:`.counts`) are imported when used: running a model needs neither PyTorch nor onnx.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from autoshuikou.runtimes._base import Int8Format, Runner, Runtime, TensorInfo

if TYPE_CHECKING:  # loading PyTorch is only needed to build, not to run
    import torch
    from torch import nn

    from autoshuikou.families import Feed, Inputs, ModelFamily

PROVIDER = "CPUExecutionProvider"

CANDIDATE_FORMATS: tuple[Int8Format, ...] = (
    *(
        Int8Format(fmt, act, pc)
        for fmt in ("QDQ", "QOperator")
        for act in ("u8", "s8")
        for pc in (True, False)
    ),
    # ONNX Runtime's dynamic MatMul kernels take u8 activations.
    Int8Format("dynamic", "u8", True),
    Int8Format("dynamic", "u8", False),
)


def open_session(
    path: Path, threads: int = 1, optimization: str = "ORT_ENABLE_ALL"
) -> ort.InferenceSession:
    """An ONNX Runtime session. Thread spinning is off: with it on, an idle session's
    threads keep spinning and steal the cores from the session being timed."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, optimization)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[PROVIDER])


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    suffix = ".onnx"
    graph_optimization = "ORT_ENABLE_ALL"  # an ort.GraphOptimizationLevel member's name

    @property
    def int8_formats(self) -> tuple[Int8Format, ...]:
        return CANDIDATE_FORMATS

    def describe(self) -> dict[str, object]:
        return {
            "runtime_version": ort.__version__,
            "provider": PROVIDER,
            "allow_spinning": False,
            "graph_optimization": self.graph_optimization,
        }

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
        from autoshuikou.runtimes.onnxruntime.export import export_onnx
        from autoshuikou.runtimes.onnxruntime.quantize import quantize

        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            layers = export_onnx(student, example, fp32, family)
            int8 = [layer for layer in int8_layers if layer in layers]
            quantize(fp32, out, int8, layers, calibration, fmt, family.int8_only_plan_layers)

    @contextmanager
    def open(self, path: Path, threads: int) -> Iterator[Runner]:
        session = open_session(path, threads, self.graph_optimization)
        name = session.get_inputs()[0].name

        def run(batch: Feed | np.ndarray) -> list[np.ndarray]:
            feed = batch if isinstance(batch, dict) else {name: batch}
            return [np.asarray(out) for out in session.run(None, feed)]

        yield run

    def counts(self, path: Path, example: Feed) -> tuple[int, int] | None:
        from autoshuikou.runtimes.onnxruntime.counts import graph_counts

        counts = graph_counts(path, example)
        return counts.params, counts.macs

    def tensors(self, path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph

        def describe(values: Sequence[onnx.ValueInfoProto]) -> list[TensorInfo]:
            return [
                {
                    "name": v.name,
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(
                        v.type.tensor_type.elem_type
                    ).name,
                    "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                }
                for v in values
            ]

        initializers = {i.name for i in graph.initializer}
        inputs = [v for v in graph.input if v.name not in initializers]
        return describe(inputs), describe(graph.output)

    def run_snippet(self, artifact: str, threads: int, feed: str) -> str:
        return f"""import onnxruntime as ort

options = ort.SessionOptions()
options.intra_op_num_threads = {threads}  # as measured
options.graph_optimization_level = ort.GraphOptimizationLevel.{self.graph_optimization}
session = ort.InferenceSession("{artifact}", options, providers=["{PROVIDER}"])
outputs = session.run(None, {{{feed}}})  # numpy arrays in, numpy arrays out"""
