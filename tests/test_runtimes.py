"""The runtime switch: the same plan built and run by ONNX Runtime or PyTorch, end to end."""

from pathlib import Path

import numpy as np
import pytest
import torch

from autoshuikou import search
from autoshuikou.compress.quantize import calibration_batches
from autoshuikou.errors import UserError
from autoshuikou.measure.runtime import RuntimeSettings, open_runner
from autoshuikou.runtimes import RUNTIMES, get_runtime
from autoshuikou.tasks import Task
from autoshuikou.util import read_json

LAYERS = ["stem.0", "conv1", "conv2", "head"]


@pytest.mark.parametrize("name", RUNTIMES)
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
    runtime.build(tiny_task.model, tiny_task.example_input, [], calibration, fmt, fp32)
    runtime.build(tiny_task.model, tiny_task.example_input, LAYERS[1:3], calibration, fmt, int8)
    settings = RuntimeSettings(runtime=name)
    with open_runner(fp32, settings) as run_fp32, open_runner(int8, settings) as run_int8:
        np.testing.assert_allclose(run_fp32(x.numpy())[0], expected, rtol=1e-4, atol=1e-4)
        (quantized,) = run_int8(x.numpy())  # every output: a classifier has one
    assert not np.allclose(quantized, expected, rtol=1e-6, atol=1e-6)  # really int8
    assert np.abs(quantized - expected).max() < 0.5 * np.abs(expected).max()
    assert int8.stat().st_size < fp32.stat().st_size


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
    )
    graph = str(torch.jit.load(str(path)).graph)
    assert "quantized::conv2d" in graph  # conv1 in PyTorch's int8 kernel
    assert "aten::conv2d" in graph or "aten::_convolution" in graph  # the others stay fp32
    assert torch.get_num_threads() >= 1


def test_torch_runner_restores_the_thread_count(tiny_task: Task, tmp_path: Path) -> None:
    runtime = get_runtime("torch")
    path = tmp_path / "m.pt"
    runtime.build(tiny_task.model, tiny_task.example_input, [], [], runtime.int8_formats[0], path)
    before = torch.get_num_threads()
    with open_runner(path, RuntimeSettings(threads=1, runtime="torch")) as run:
        assert torch.get_num_threads() == 1
        run(np.zeros((1, 1, 8, 8), np.float32))
    assert torch.get_num_threads() == before  # training keeps its own threads


def test_unknown_runtime_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown runtime"):
        get_runtime("tensorrt")


@pytest.mark.slow
def test_search_with_the_torch_runtime(tiny_task: Task, tmp_path: Path) -> None:
    result = search(
        tiny_task,
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
            trials=3,
            out=tmp_path,
            study_name="t",
            budget="300%",
            measure_seconds=0.1,
            predict=False,
        )
