"""PyTorch -> ONNX, with Conv/Gemm/MatMul nodes (and embedding-table Gathers) renamed to
the PyTorch layer names.

Renaming lets plans, search spaces and ONNX Runtime's per-node int8 exclusion all speak
of ``layer2.conv1`` rather than ``/layer2/conv1/Conv``. An embedding table is a layer
too: in a small transformer it is half the file, and int8 stores it in a quarter. Input and output names come from
the model family (``input`` -> ``logits`` for classifiers).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Collection
from pathlib import Path

import onnx
import torch
from torch import nn

from autoshuikou.families import CLASSIFICATION, Inputs, ModelFamily
from autoshuikou.util import atomic_write_bytes

OPSET = 17
LAYER_OPS = ("Conv", "Gemm", "MatMul", "Gather")
LAYER_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear, nn.Embedding)


def scope_to_module_name(node_name: str, modules: Collection[str]) -> str:
    """'/features/features.1/conv/conv.0/conv.0.0/Conv' -> 'features.1.conv.0.0';
    '/backbone/encoder/layer.0/attention/self/query/MatMul' -> 'backbone.encoder.layer.0...'.

    The TorchScript exporter names each scope after the attribute, except that numbered
    children are written '<container>.<index>' (with the container's scope before it for a
    Sequential, without it for a ModuleList attribute). Each scope is resolved against the
    model's real module names, so both spellings map to the module.
    """
    name = ""
    for part in [p for p in node_name.split("/") if p][:-1]:
        for candidate in (part, part.rsplit(".", 1)[-1]):
            full = f"{name}.{candidate}" if name else candidate
            if full in modules:
                name = full
                break
    return name


def export_onnx(
    model: nn.Module,
    example: Inputs | torch.Tensor,
    path: Path,
    family: ModelFamily = CLASSIFICATION,
) -> list[str]:
    """Export ``model`` (eval mode, BatchNorm folded, dynamic batch) to ``path``.

    Returns the layer names (Conv/Linear/Embedding modules) that became named ONNX nodes.
    """
    spec = family
    inputs = example if isinstance(example, dict) else spec.named_inputs(example)
    model = model.eval()
    all_modules = {name for name, _ in model.named_modules()}
    layers = {name for name, m in model.named_modules() if isinstance(m, LAYER_TYPES)}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            tuple(inputs.values()),
            buffer,  # type: ignore[arg-type]  # accepts a file object at run time
            dynamo=False,  # the TorchScript exporter folds BatchNorm and needs no onnxscript
            opset_version=OPSET,
            input_names=list(inputs),
            output_names=list(spec.outputs),
            dynamic_axes=spec.dynamic_axes(),
        )
    graph = onnx.load_from_string(buffer.getvalue())
    named: list[str] = []
    for node in graph.graph.node:
        if node.op_type in LAYER_OPS:
            layer = scope_to_module_name(node.name, all_modules)
            if layer in layers and layer not in named:
                node.name = layer
                named.append(layer)
    atomic_write_bytes(path, graph.SerializeToString())
    return named
