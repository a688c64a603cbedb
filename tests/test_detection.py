"""The detection family end to end on a tiny detector: a user's own file.py:function Task,
searched, its heads kept whole, mAP (and mAP@.5, post-processing time) recorded and
reproduced by verify."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch_pruning as tp
from detection_task import make_detection_task

from autoshuikou import search
from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.compress.prune import terminal_layers
from autoshuikou.measure.accuracy import artifact_scores
from autoshuikou.measure.runtime import RuntimeSettings, open_runner
from autoshuikou.report.verify import verify_run
from autoshuikou.runtimes.onnxruntime.quantize import output_tail
from autoshuikou.space.schema import load_space
from autoshuikou.study.prepare import bind_task_space, layer_names
from autoshuikou.tasks import digits_detect as dd
from autoshuikou.tasks import load_task
from autoshuikou.util import read_json

TASK_FILE = """
import sys
sys.path.insert(0, {tests!r})
from detection_task import make_detection_task


def make_task():
    return make_detection_task()
"""


def test_every_head_output_layer_is_protected() -> None:
    model = dd.DigitsDetector(width=0.25)
    graph = tp.DependencyGraph().build_dependency(
        model, example_inputs=dd.make_scenes(1, 0, "val")[0]
    )
    names = {graph._module2name[m] for m in model.output_layers()}
    assert set(terminal_layers(graph)) == names and len(names) == 4


def test_prediction_convs_and_the_assembled_output_stay_fp32(tmp_path: Path) -> None:
    """int8 of a detector: the space offers no int8 for its prediction convs, and the
    operators assembling the output (concat, transpose) are not quantized, so the raw
    boxes and logits never share one int8 scale."""
    task = make_detection_task(steps=0)
    space = bind_task_space(task, None)
    heads = {n for n, m in task.model.named_modules() if m in task.model.output_layers()}
    assert {layer for layer, c in space.precision.items() if c == ("fp32",)} == heads
    reference = space.with_round_to(1).reference_plan("int8")
    assert reference.int8_layers and not heads & set(reference.int8_layers)

    settings = RuntimeSettings()
    calibration = calibration_batches(task.train_data, 16, task.family_impl)
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    backend = settings.backend
    fmt = backend.int8_formats[0]
    backend.build(task.model, task.inputs, [], [], fmt, fp32, task.family_impl)
    backend.build(
        task.model, task.inputs, reference.int8_layers, calibration, fmt, int8, task.family_impl
    )
    fp32_graph = onnx.load(str(fp32))
    tail = output_tail(fp32_graph)
    assert {n.op_type for n in fp32_graph.graph.node if n.name in tail} >= {"Concat", "Transpose"}
    graph = onnx.load(str(int8)).graph
    ops = {node.name: node.op_type for node in graph.node}
    # Nothing on the way out is quantized: no QuantizeLinear reads a tail node's output.
    tail_outputs = {out for node in graph.node if node.name in tail for out in node.output}
    quantized = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    assert not tail_outputs & quantized
    assert any(op == "QuantizeLinear" for op in ops.values())  # the body really is int8
    assert set(layer_names(task)) >= heads


@pytest.mark.slow
def test_own_detector_is_searched_with_map_kept_and_verified(tmp_path: Path) -> None:
    task_file = tmp_path / "my_detector.py"
    task_file.write_text(TASK_FILE.format(tests=str(Path(__file__).parent)))
    task = load_task(f"{task_file}:make_task")
    assert task.family == "detection" and task.metric_name == "map"
    result = search(
        task, budget="300%", trials=3, out=tmp_path / "runs", measure_seconds=0.2, refine=1
    )
    assert result.feasible and result.pareto
    # detection.yaml's refinement: the best model trained again, with its epochs (--refine 1).
    assert read_json(result.run_dir / "summary.json")["time"]["trials_refined"] == 1
    refined = [p for p in result.pareto if "refined_from" in p]
    space = load_space(None, "detection.yaml")
    epochs = space.refine.epochs
    assert epochs > space.epochs.high  # longer than any trial of the search trains
    for point in refined:
        plan = read_json(result.run_dir / point["path"].replace("model.onnx", "plan.json"))
        assert plan["distill"]["epochs"] == epochs
    anchors = sum((dd.CANVAS // s) ** 2 for s in dd.STRIDES)
    for point in result.pareto:
        model = result.run_dir / point["path"]
        metrics = read_json(model.parent / "metrics.json")
        assert metrics["scores"]["postprocess_ms"] > 0 and 0 <= metrics["scores"]["map_50"] <= 1
        # detection.yaml: channels ranked by Taylor importance (the teacher's label gradients).
        assert read_json(model.parent / "plan.json")["importance"] == "taylor"
        metric, scores = artifact_scores(model, task, RuntimeSettings())
        assert metric == metrics["metric"] and scores["map_50"] == metrics["scores"]["map_50"]
        with open_runner(model, RuntimeSettings()) as run:
            (raw,) = run({"input": task.example_input.numpy()})
        assert raw.shape == (1, anchors, 5 + dd.NUM_CLASSES)  # every head kept its width
    rows = verify_run(result.run_dir, task=task, seconds=0.05)
    assert rows and all(row["metric"] and row["counts"] for row in rows)
