"""Per-layer int8 with ONNX Runtime static quantization.

Layers the plan keeps in fp32 are excluded by node name; the rest run in ONNX Runtime's
int8 kernels. Which int8 flavour is fast depends on the CPU, so the format is a parameter
chosen by measurement (see :mod:`autoshuikou.study.baseline`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from autoshuikou.compress.export import INPUT_NAME
from autoshuikou.util import atomic_write_bytes

CALIBRATION_SAMPLES = 256


@dataclass(frozen=True)
class Int8Format:
    """How ONNX Runtime stores and runs int8: graph form, activation sign, weight scales."""

    quant_format: str = "QDQ"  # "QDQ" (Q/DQ pairs, fused at load) or "QOperator" (QLinearConv)
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


CANDIDATE_FORMATS: tuple[Int8Format, ...] = tuple(
    Int8Format(fmt, act, pc)
    for fmt in ("QDQ", "QOperator")
    for act in ("u8", "s8")
    for pc in (True, False)
)


def calibration_batches(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], samples: int = CALIBRATION_SAMPLES
) -> list[np.ndarray]:
    """The first ``samples`` training inputs, as float32 arrays.

    A shuffling loader is reseeded first (its own generator, or the global one), so every
    run and worker calibrates on the same inputs and builds the same int8 model.
    """
    generator = getattr(batches, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(0)
    else:
        torch.manual_seed(0)
    out: list[np.ndarray] = []
    seen = 0
    for inputs, _ in batches:
        out.append(inputs[: samples - seen].detach().float().numpy())
        seen += len(out[-1])
        if seen >= samples:
            break
    return out


class _Reader(CalibrationDataReader):  # type: ignore[misc]
    def __init__(self, batches: Sequence[np.ndarray]) -> None:
        self._batches = batches
        self._iter: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize(
    fp32_path: Path,
    out_path: Path,
    int8_layers: Sequence[str],
    all_layers: Sequence[str],
    calibration: Sequence[np.ndarray],
    fmt: Int8Format,
) -> None:
    """Write ``out_path``: ``int8_layers`` in int8, every other layer of ``all_layers`` in fp32.

    With no int8 layer the fp32 model is copied unchanged.
    """
    if not int8_layers:
        atomic_write_bytes(out_path, fp32_path.read_bytes())
        return
    keep_fp32 = [name for name in all_layers if name not in set(int8_layers)]
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quantized = Path(tmp) / "quantized.onnx"
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs every node it skips
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(quantized),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ if fmt.quant_format == "QDQ" else QuantFormat.QOperator,
            activation_type=QuantType.QUInt8 if fmt.activations == "u8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=fmt.per_channel,
            nodes_to_exclude=keep_fp32,
        )
        model = onnx.load(str(quantized))
        for node in model.graph.node:  # QOperator form renames "conv1" to "conv1_quant"
            if node.name.endswith("_quant") and node.name[: -len("_quant")] in all_layers:
                node.name = node.name[: -len("_quant")]
        atomic_write_bytes(out_path, model.SerializeToString())
