"""PyTorch on the CPU: a frozen TorchScript trace; int8 layers through FX graph-mode
quantization with the x86 backend (fbgemm/oneDNN int8 kernels), the rest fp32.

The artifact is a TorchScript file that `torch.jit.load` runs without the model's code.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autoshuikou.families import Feed, Inputs, ModelFamily
from autoshuikou.runtimes._base import Int8Format, Runner, Runtime
from autoshuikou.util import atomic_write_bytes

ENGINE = "x86"  # PyTorch's int8 CPU backend for x86: fbgemm or oneDNN kernels per op


def _quantize_fx(
    student: nn.Module,
    example: tuple[torch.Tensor, ...],
    int8_layers: Sequence[str],
    calibration: Sequence[Feed],
    fmt: Int8Format,
) -> nn.Module:
    from torch.ao.quantization import QConfig, QConfigMapping, get_default_qconfig
    from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = ENGINE
    qconfig = get_default_qconfig(ENGINE)
    if not fmt.per_channel:
        qconfig = QConfig(
            activation=HistogramObserver.with_args(reduce_range=False),
            weight=MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
        )
    # Everything int8 except the layers the plan keeps fp32 (as ONNX Runtime's exclusion).
    mapping = QConfigMapping().set_global(qconfig)
    int8 = set(int8_layers)
    for name, module in student.named_modules():
        if isinstance(module, nn.Conv2d | nn.Conv1d | nn.Linear) and name not in int8:
            mapping.set_module_name(name, None)
    prepared = prepare_fx(copy.deepcopy(student).eval(), mapping, example)
    with torch.no_grad():
        for batch in calibration:
            prepared(*(torch.from_numpy(a) for a in batch.values()))
    return convert_fx(prepared)


class TorchRuntime(Runtime):
    name = "torch"
    suffix = ".pt"

    @property
    def int8_formats(self) -> tuple[Int8Format, ...]:
        return (
            Int8Format("FX", "u8", per_channel=True),
            Int8Format("FX", "u8", per_channel=False),
        )

    def describe(self) -> dict[str, object]:
        return {
            "runtime_version": torch.__version__,
            "provider": f"cpu, int8 engine {ENGINE}",
            "form": "frozen TorchScript trace",
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
        args = tuple(example.values()) if isinstance(example, dict) else (example,)
        model = (
            _quantize_fx(student, args, int8_layers, calibration, fmt)
            if int8_layers
            else copy.deepcopy(student).eval()
        )
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(model, args).eval())
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        atomic_write_bytes(out, buffer.getvalue())

    @contextmanager
    def open(self, path: Path, threads: int) -> Iterator[Runner]:
        # Thread count and int8 engine are process-wide in PyTorch: set them for the
        # measurement and restore them after, so training keeps its own.
        saved = torch.get_num_threads(), torch.backends.quantized.engine
        torch.set_num_threads(threads)
        torch.backends.quantized.engine = ENGINE
        module = torch.jit.load(str(path)).eval()

        def run(batch: Feed | np.ndarray) -> list[np.ndarray]:
            arrays = list(batch.values()) if isinstance(batch, dict) else [batch]
            with torch.inference_mode():
                out = module(*(torch.from_numpy(a) for a in arrays))
            outs = out if isinstance(out, tuple | list) else (out,)
            return [o.numpy() for o in outs]

        try:
            yield run
        finally:
            torch.set_num_threads(saved[0])
            torch.backends.quantized.engine = saved[1]

    def run_snippet(self, artifact: str, threads: int, feed: str) -> str:
        return f"""import torch

model = torch.jit.load("{artifact}")
torch.set_num_threads({threads})
outputs = model(batch)"""
