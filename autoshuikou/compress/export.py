"""PyTorch -> ONNX, with Conv/Gemm nodes renamed to the PyTorch layer names.

Renaming lets plans, search spaces and ONNX Runtime's per-node int8 exclusion all speak
of ``layer2.conv1`` rather than ``/layer2/conv1/Conv``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from autoshuikou.util import atomic_write_bytes

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
OPSET = 17
LAYER_OPS = ("Conv", "Gemm", "MatMul")


def scope_to_module_name(node_name: str) -> str:
    """'/features/features.1/conv/conv.0/conv.0.0/Conv' -> 'features.1.conv.0.0'.

    The TorchScript exporter names each scope after the attribute, except that numbered
    children of containers are written as '<container>.<index>'.
    """
    parts = [p for p in node_name.split("/") if p][:-1]
    return ".".join(part.rsplit(".", 1)[-1] if "." in part else part for part in parts)


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: Path) -> list[str]:
    """Export ``model`` (eval mode, BatchNorm folded, dynamic batch) to ``path``.

    Returns the layer names (Conv/Linear modules) that became named ONNX nodes.
    """
    model = model.eval()
    modules = {
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Linear)
    }
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example_input,),
            buffer,  # type: ignore[arg-type]  # accepts a file object at run time
            dynamo=False,  # the TorchScript exporter folds BatchNorm and needs no onnxscript
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    graph = onnx.load_from_string(buffer.getvalue())
    named: list[str] = []
    for node in graph.graph.node:
        if node.op_type in LAYER_OPS:
            layer = scope_to_module_name(node.name)
            if layer in modules and layer not in named:
                node.name = layer
                named.append(layer)
    atomic_write_bytes(path, graph.SerializeToString())
    return named
