"""Parameters and MACs counted on the ONNX graph itself.

Counting on the graph (BatchNorm already folded, int8 weights behind DequantizeLinear or
inside QLinearConv) makes the numbers describe exactly the file that is deployed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from autoshuikou.runtimes.onnxruntime import PROVIDER

# op type -> (weight input index, bias input index or None)
_WEIGHTED_OPS: dict[str, tuple[int, int | None]] = {
    "Conv": (1, 2),
    "QLinearConv": (3, 8),
    "Gemm": (1, 2),
    "QGemm": (3, 6),
    "MatMul": (1, None),
    "QLinearMatMul": (3, None),
    # ONNX Runtime's dynamic int8 forms: weight at input 1, activations quantized at run time.
    "MatMulInteger": (1, None),
    "DynamicQuantizeMatMul": (1, 4),
    "MatMulIntegerToFloat": (1, 6),
}
# Weight tables read by index (token embeddings): parameters, no multiply-accumulates.
_TABLE_OPS = ("Gather",)


@dataclass(frozen=True)
class GraphCounts:
    params: int  # elements of Conv/Gemm/MatMul weights and biases
    macs: int  # multiply-accumulates of those layers for one batch-1 input


def _output_shapes(
    model: onnx.ModelProto, names: list[str], example: Sequence[int] | dict[str, np.ndarray]
) -> list[tuple[int, ...]]:
    """Run the graph once to read the named tensors' shapes.

    ONNX shape inference stops at ONNX Runtime's own int8 operators (QGemm, QLinearAdd),
    so the shapes are taken from a real execution instead.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=[PROVIDER])
    feed = (
        dict(example)
        if isinstance(example, dict)
        else {session.get_inputs()[0].name: np.zeros(list(example), dtype=np.float32)}
    )
    return [tuple(np.asarray(out).shape) for out in session.run(names, feed)]


def graph_counts(path: Path, example: Sequence[int] | dict[str, np.ndarray]) -> GraphCounts:
    """Count weighted layers' parameters and MACs for one input: the named example arrays,
    or zeros of one float input's shape."""
    model = onnx.load(str(path))
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}

    def weight_shape(name: str) -> list[int] | None:
        if name in inits:
            return inits[name]
        node = producers.get(name)
        if node is not None and node.op_type in ("DequantizeLinear", "Identity"):
            return weight_shape(node.input[0])
        return None

    layers = []
    params = 0
    for node in model.graph.node:
        if node.op_type in _TABLE_OPS:
            table = weight_shape(node.input[0])
            params += int(np.prod(table)) if table else 0
            continue
        if node.op_type not in _WEIGHTED_OPS:
            continue
        w_index, b_index = _WEIGHTED_OPS[node.op_type]
        weight = weight_shape(node.input[w_index]) if len(node.input) > w_index else None
        if weight is None:
            continue  # activation x activation product: no weights to count
        params += int(np.prod(weight))
        if b_index is not None and len(node.input) > b_index and node.input[b_index]:
            bias = weight_shape(node.input[b_index])
            params += int(np.prod(bias)) if bias else 0
        if node.op_type in ("Conv", "QLinearConv"):
            per_output = int(np.prod(weight[1:]))  # C_in / groups * kernel
        else:
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            per_output = weight[1] if trans_b else weight[0]
        layers.append((node.output[0], per_output))
    shapes = _output_shapes(model, [name for name, _ in layers], example)
    macs = sum(
        int(np.prod(shape)) * per_output
        for (_, per_output), shape in zip(layers, shapes, strict=True)
    )
    return GraphCounts(params=params, macs=macs)
