"""The runtime registry: every registered runtime builds, runs and describes each family's
model; a runtime defined in this file alone runs a search (adding one touches no package file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_task
from detection_task import make_detection_task
from encoder_task import make_encoder_task

from autoshuikou import load, search
from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.errors import UserError
from autoshuikou.families import CLASSIFICATION, FAMILIES, call, to_feed
from autoshuikou.measure.runtime import RuntimeSettings, open_runner
from autoshuikou.runtimes import get_runtime, register_runtime, runtime_names
from autoshuikou.runtimes.onnxruntime import OnnxRuntime
from autoshuikou.tasks import Task, validate_task
from autoshuikou.util import read_json

LAYERS = ["stem.0", "conv1", "conv2", "head"]
TINY = {
    "classification": make_tiny_task,
    "encoder": make_encoder_task,
    "detection": make_detection_task,
}


@pytest.mark.parametrize("name", runtime_names())
def test_each_runtime_builds_fp32_and_per_layer_int8(
    name: str, tiny_task: Task, tmp_path: Path
) -> None:
    runtime = get_runtime(name)
    calibration = calibration_batches(tiny_task.train_data)
    x = torch.randn(3, 1, 8, 8)  # any batch size
    with torch.no_grad():
        expected = tiny_task.model(x).numpy()
    fp32, int8 = tmp_path / f"fp32{runtime.suffix}", tmp_path / f"int8{runtime.suffix}"
    fmt = runtime.int8_formats[0]
    runtime.build(
        tiny_task.model, tiny_task.example_input, [], calibration, fmt, fp32, CLASSIFICATION
    )
    runtime.build(
        tiny_task.model,
        tiny_task.example_input,
        LAYERS[1:3],
        calibration,
        fmt,
        int8,
        CLASSIFICATION,
    )
    settings = RuntimeSettings(runtime=name)
    with open_runner(fp32, settings) as run_fp32, open_runner(int8, settings) as run_int8:
        np.testing.assert_allclose(run_fp32(x.numpy())[0], expected, rtol=1e-4, atol=1e-4)
        (quantized,) = run_int8(x.numpy())  # every output: a classifier has one
    assert not np.allclose(quantized, expected, rtol=1e-6, atol=1e-6)  # really int8
    assert np.abs(quantized - expected).max() < 0.5 * np.abs(expected).max()
    assert int8.stat().st_size < fp32.stat().st_size


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("name", runtime_names())
def test_each_runtime_runs_every_family_as_pytorch_does(
    name: str, family: str, tmp_path: Path
) -> None:
    task = validate_task(TINY[family](), f"tiny {family} task")
    runtime = get_runtime(name)
    path = tmp_path / f"m{runtime.suffix}"
    runtime.build(task.model, task.inputs, [], [], runtime.int8_formats[0], path, task.family_impl)
    inputs, _ = next(task.batches("val_data"))
    with open_runner(path, RuntimeSettings(runtime=name)) as run:
        outputs = run(to_feed(inputs))
    with torch.no_grad():
        expected = call(task.model, inputs)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    assert len(outputs) == len(task.family_impl.outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    # What the runtime says of its file: counts (where its format has a graph), tensors.
    counts = runtime.counts(path, to_feed(task.inputs))
    assert counts is None or (counts[0] > 0 and counts[1] > 0)
    ins, outs = runtime.tensors(path)
    assert not ins or [i["name"] for i in ins] == list(task.inputs)
    assert not outs or len(outs) == len(expected)
    assert path.name in runtime.run_snippet(path.name, 1, '"input": batch')


def test_torch_int8_runs_in_quantized_kernels(tiny_task: Task, tmp_path: Path) -> None:
    runtime = get_runtime("torch")
    path = tmp_path / "m.pt"
    calibration = calibration_batches(tiny_task.train_data)
    runtime.build(
        tiny_task.model,
        tiny_task.example_input,
        ["conv1"],
        calibration,
        runtime.int8_formats[0],
        path,
        CLASSIFICATION,
    )
    graph = str(torch.jit.load(str(path)).graph)
    assert "quantized::conv2d" in graph  # conv1 in PyTorch's int8 kernel
    assert "aten::conv2d" in graph or "aten::_convolution" in graph  # the others stay fp32
    assert torch.get_num_threads() >= 1


def test_torch_runner_restores_the_thread_count(tiny_task: Task, tmp_path: Path) -> None:
    runtime = get_runtime("torch")
    path = tmp_path / "m.pt"
    runtime.build(
        tiny_task.model,
        tiny_task.example_input,
        [],
        [],
        runtime.int8_formats[0],
        path,
        CLASSIFICATION,
    )
    before = torch.get_num_threads()
    with open_runner(path, RuntimeSettings(threads=1, runtime="torch")) as run:
        assert torch.get_num_threads() == 1
        run(np.zeros((1, 1, 8, 8), np.float32))
    assert torch.get_num_threads() == before  # training keeps its own threads


def test_unknown_runtime_is_a_user_error_naming_the_registered_ones() -> None:
    with pytest.raises(UserError, match="unknown runtime") as error:
        get_runtime("tensorrt")
    assert all(name in error.value.hint for name in runtime_names())


class BasicOnnxRuntime(OnnxRuntime):
    """A new runtime in this file only: ONNX Runtime with basic graph optimisation."""

    name = "onnxruntime-basic"
    graph_optimization = "ORT_ENABLE_BASIC"


@pytest.mark.slow
def test_a_runtime_added_in_one_module_runs_a_search(
    tiny_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from autoshuikou import runtimes

    monkeypatch.setattr(runtimes, "_RUNTIMES", dict(runtimes._RUNTIMES))  # undone after
    register_runtime(BasicOnnxRuntime.name, BasicOnnxRuntime)  # the one line a runtime adds
    assert BasicOnnxRuntime.name in runtime_names()
    result = search(
        tiny_task,
        refine=0,
        budget="300%",
        trials=3,
        runtime=BasicOnnxRuntime.name,
        out=tmp_path,
        study_name="t",
        measure_seconds=0.1,
        predict=False,
    )
    summary = result.summary
    assert summary["runtime"]["runtime"] == BasicOnnxRuntime.name
    assert summary["runtime"]["graph_optimization"] == "ORT_ENABLE_BASIC"
    assert result.pareto
    x = tiny_task.example_input.numpy()
    for point in result.pareto:
        folder = (tmp_path / "t" / point["path"]).parent
        metrics = read_json(folder / "metrics.json")
        assert metrics["runtime"]["runtime"] == BasicOnnxRuntime.name
        with load(folder) as model:  # loaded and run in the new runtime, by its recorded name
            assert tuple(model(x).shape) == (1, 4)


@pytest.mark.slow
def test_search_with_the_torch_runtime(tiny_task: Task, tmp_path: Path) -> None:
    result = search(
        tiny_task,
        refine=0,
        trials=3,
        out=tmp_path,
        study_name="t",
        budget="300%",
        measure_seconds=0.1,
        predict=False,
        runtime="torch",
    )
    summary = result.summary
    assert summary["runtime"]["runtime"] == "torch"
    assert summary["baseline"]["path"] == "baseline/model.pt"
    assert summary["int8_format"].startswith("fx-")
    assert result.pareto and all(p["path"].endswith("/model.pt") for p in result.pareto)
    for point in result.pareto:
        metrics = read_json((tmp_path / "t" / point["path"]).parent / "metrics.json")
        assert metrics["runtime"]["runtime"] == "torch" and metrics["macs"] > 0
    # The budget and latencies refer to this runtime: the same study in another is refused.
    with pytest.raises(UserError, match="different setup"):
        search(
            tiny_task,
            refine=0,
            trials=3,
            out=tmp_path,
            study_name="t",
            budget="300%",
            measure_seconds=0.1,
            predict=False,
        )
