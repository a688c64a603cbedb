from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.compress.prune import prune
from autoshuikou.runtimes import Int8Format
from autoshuikou.runtimes.onnxruntime import CANDIDATE_FORMATS, open_session
from autoshuikou.runtimes.onnxruntime.counts import graph_counts
from autoshuikou.runtimes.onnxruntime.export import export_onnx, scope_to_module_name
from autoshuikou.runtimes.onnxruntime.quantize import quantize
from autoshuikou.tasks import Task


def _prefixes(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}


@pytest.mark.parametrize(
    ("scope", "module"),
    [
        # Sequential children: the container's scope, then '<container>.<index>'.
        ("/features/features.1/conv/conv.0/conv.0.0/Conv", "features.1.conv.0.0"),
        ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
        ("/fc/Gemm", "fc"),
        # A ModuleList attribute (Hugging Face's encoder.layer): '<attribute>.<index>' alone.
        (
            "/backbone/encoder/layer.0/attention/self/query/MatMul",
            "backbone.encoder.layer.0.attention.self.query",
        ),
    ],
)
def test_scope_names_map_to_modules(scope: str, module: str) -> None:
    assert scope_to_module_name(scope, _prefixes(module)) == module


def _weights_are_int8(model: onnx.ModelProto, layer: str) -> bool:
    inits = {t.name: t for t in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == layer)
    if node.op_type.startswith("QLinear"):
        return True
    weight = node.input[1]
    if weight in producers and producers[weight].op_type == "DequantizeLinear":
        return inits[producers[weight].input[0]].data_type == onnx.TensorProto.INT8
    return False


def test_export_names_layers_and_matches_torch(tiny_task: Task, tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    layers = export_onnx(tiny_task.model, tiny_task.example_input, path)
    assert layers == ["stem.0", "conv1", "conv2", "head"]
    session = open_session(path)
    x = torch.randn(3, 1, 8, 8)  # dynamic batch
    out = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = tiny_task.model(x).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


# Dynamic int8 covers MatMul/Gemm layers only (transformers): tests/test_families.py.
STATIC_FORMATS = [f for f in CANDIDATE_FORMATS if f.quant_format != "dynamic"]


@pytest.mark.parametrize("fmt", STATIC_FORMATS, ids=lambda f: f.name)
def test_per_layer_int8_excludes_fp32_layers(
    tiny_task: Task, tmp_path: Path, fmt: Int8Format
) -> None:
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    layers = export_onnx(tiny_task.model, tiny_task.example_input, fp32)
    cal = calibration_batches(tiny_task.train_data, 64)
    quantize(fp32, int8, ["conv1", "conv2"], layers, cal, fmt)
    model = onnx.load(str(int8))
    assert _weights_are_int8(model, "conv1") and _weights_are_int8(model, "conv2")
    assert not _weights_are_int8(model, "stem.0") and not _weights_are_int8(model, "head")
    # Real int8 storage: the file shrinks, and the int8 model still computes the same function.
    assert int8.stat().st_size < fp32.stat().st_size
    x = tiny_task.example_input.numpy()
    a = open_session(fp32).run(None, {"input": x})[0]
    b = open_session(int8).run(None, {"input": x})[0]
    assert np.argmax(a) == np.argmax(b)
    assert np.abs(a - b).max() < 0.25 * np.abs(a).max()


def test_no_int8_layer_copies_fp32(tiny_task: Task, tmp_path: Path) -> None:
    fp32, out = tmp_path / "fp32.onnx", tmp_path / "out.onnx"
    layers = export_onnx(tiny_task.model, tiny_task.example_input, fp32)
    quantize(fp32, out, [], layers, [], Int8Format())
    assert out.read_bytes() == fp32.read_bytes()


def test_graph_counts_match_hand_computation(tiny_task: Task, tmp_path: Path) -> None:
    student = prune(tiny_task.model, tiny_task.example_input, {"conv1": 0.5}, round_to=1)
    path = tmp_path / "s.onnx"
    export_onnx(student, tiny_task.example_input, path)
    # 8x8 input, padding 1: every conv outputs 8x8. conv1 keeps 16 of 32 channels.
    convs = [(1, 16), (16, 16), (16, 16)]  # (in, out) of stem, conv1, conv2
    macs = sum(cin * cout * 9 * 64 for cin, cout in convs) + 16 * 4
    params = sum(cin * cout * 9 + cout for cin, cout in convs) + 16 * 4 + 4  # BN folded into biases
    counts = graph_counts(path, (1, 1, 8, 8))
    assert (counts.macs, counts.params) == (macs, params)
    # Quantized weights still count as parameters of the same layers.
    int8 = tmp_path / "q.onnx"
    quantize(
        path,
        int8,
        ["stem.0", "conv1", "conv2", "head"],
        ["stem.0", "conv1", "conv2", "head"],
        calibration_batches(tiny_task.train_data, 32),
        Int8Format("QOperator", "u8", True),
    )
    assert graph_counts(int8, (1, 1, 8, 8)).macs == macs


def test_calibration_inputs_do_not_depend_on_what_ran_before(tiny_task: Task) -> None:
    dataset = tiny_task.train_data.dataset
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, generator=generator)
    first = calibration_batches(loader, samples=64)
    for _ in loader:  # training or another worker moved the shuffle on
        pass
    second = calibration_batches(loader, samples=64)
    assert all(np.array_equal(a["input"], b["input"]) for a, b in zip(first, second, strict=True))
