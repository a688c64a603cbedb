"""Per-layer int8 with ONNX Runtime static or dynamic quantization.

Layers the plan keeps in fp32 are excluded by node name; the rest run in ONNX Runtime's
int8 kernels. Static forms (QDQ, QOperator) calibrate activation scales on training
inputs; the dynamic form stores int8 weights and quantizes activations at run time
(MatMul-heavy models such as transformers). Which flavour is fast depends on the CPU and
the model, so the format is a parameter chosen by measurement (see
:mod:`autoshuikou.study.baseline`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from autoshuikou.families import Feed
from autoshuikou.runtimes._base import Int8Format
from autoshuikou.util import atomic_write_bytes


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, batches: Sequence[Feed]) -> None:
        self._batches = batches
        self._iter: Iterator[Feed] = iter(batches)

    def get_next(self) -> Feed | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize(
    fp32_path: Path,
    out_path: Path,
    int8_layers: Sequence[str],
    all_layers: Sequence[str],
    calibration: Sequence[Feed],
    fmt: Int8Format,
    only_layers: bool = False,
) -> None:
    """Write ``out_path``: ``int8_layers`` in int8, every other layer of ``all_layers`` in fp32.

    Static forms also run the operators between int8 layers in int8 (a CNN's adds and
    pools) unless ``only_layers``: then exactly ``int8_layers`` are quantized (a
    transformer's softmax, LayerNorm and attention products lose too much in int8).
    With no int8 layer the fp32 model is copied unchanged.
    """
    if not int8_layers:
        atomic_write_bytes(out_path, fp32_path.read_bytes())
        return
    keep_fp32 = [name for name in all_layers if name not in set(int8_layers)]
    keep_fp32 += output_tail(onnx.load(str(fp32_path)))
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "quantized.onnx"
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs every node it skips
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        if fmt.quant_format == "dynamic":
            _quantize_dynamic(prepared, quantized, int8_layers, fmt)
            atomic_write_bytes(out_path, quantized.read_bytes())
            return
        quantize_static(
            str(prepared),
            str(quantized),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ if fmt.quant_format == "QDQ" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8 if fmt.activations == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=fmt.per_channel,
            **(
                {"nodes_to_quantize": list(int8_layers)}
                if only_layers
                else {"nodes_to_exclude": keep_fp32}
            ),
        )
        model = onnx.load(str(quantized))
        for node in model.graph.node:  # QOperator form renames "conv1" to "conv1_quant"
            if node.name.endswith("_quant") and node.name[: -len("_quant")] in all_layers:
                node.name = node.name[: -len("_quant")]
        atomic_write_bytes(out_path, model.SerializeToString())


# Operators that carry weights: the model's layers. What follows the last of them is output.
LAYER_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"})


def output_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the last layers and the graph's outputs (a detector's
    concat and transpose of its heads). Static int8 would give the assembled output one
    scale across box offsets and logits of very different ranges: on digits-detect that
    alone cost a quarter of the mAP@[.5:.95] (0.814 -> 0.61). They stay fp32."""
    producer = {out: node for node in model.graph.node for out in node.output}
    tail: dict[str, None] = {}
    todo = [o.name for o in model.graph.output]
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.op_type in LAYER_OPS or node.name in tail:
            continue
        tail[node.name] = None
        todo.extend(node.input)
    return list(tail)


def _quantize_dynamic(
    prepared: Path, quantized: Path, int8_layers: Sequence[str], fmt: Int8Format
) -> None:
    """Int8 weights for exactly the plan's int8 layers (Linears, embedding tables); everything
    else stays fp32 (the activation x activation MatMuls of attention too: no weights)."""
    quantize_dynamic(
        str(prepared),
        str(quantized),
        weight_type=QuantType.QInt8,
        per_channel=fmt.per_channel,
        nodes_to_quantize=list(int8_layers),
        op_types_to_quantize=["MatMul", "Gemm", "Gather"],
        # Needed on exporter graphs whose inferred element types are incomplete.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
