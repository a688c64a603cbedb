"""The model-family contract, parametrized over the registry with a tiny model per family."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import channel_groups, count_macs_params, prune
from autoshuikou.families import FAMILIES, Encoder, call, to_feed
from autoshuikou.measure.accuracy import artifact_scores, torch_metric
from autoshuikou.measure.latency_model import ATTENTION, layer_macs
from autoshuikou.measure.runtime import RuntimeSettings, open_runner
from autoshuikou.plan import DistillSettings
from autoshuikou.runtimes import Int8Format
from autoshuikou.runtimes.onnxruntime import OnnxRuntime
from autoshuikou.runtimes.onnxruntime.counts import graph_counts
from autoshuikou.study.prepare import layer_names
from autoshuikou.tasks import Task, validate_task

pytest.importorskip("transformers")

from conftest import make_tiny_task
from detection_task import make_detection_task
from encoder_task import make_encoder_task

TINY = {
    "classification": make_tiny_task,
    "encoder": make_encoder_task,
    "detection": make_detection_task,
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def task(request: pytest.FixtureRequest) -> Task:
    return validate_task(TINY[request.param](), f"tiny {request.param} task")


def test_every_family_has_a_tiny_task() -> None:
    assert set(TINY) == set(FAMILIES)


def test_pruned_model_runs_the_same_in_onnx_as_in_pytorch(task: Task, tmp_path: Path) -> None:
    groups = channel_groups(task.model, task.inputs, task.family_impl)
    assert groups
    student = prune(task.model, task.inputs, {g.name: 0.5 for g in groups}, 1, task.family_impl)
    assert (
        count_macs_params(student, task.inputs)[0] < count_macs_params(task.model, task.inputs)[0]
    )
    path = tmp_path / "m.onnx"
    OnnxRuntime().build(student, task.inputs, [], [], Int8Format(), path, task.family_impl)
    inputs, _ = next(task.batches("val_data"))
    with open_runner(path, RuntimeSettings()) as run:
        outputs = run(to_feed(inputs))
    with torch.no_grad():
        expected = call(student, inputs)
    expected = list(expected) if isinstance(expected, tuple) else [expected]
    assert len(outputs) == len(task.family_impl.outputs) == len(expected)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_every_family_fine_tunes_on_cuda_as_on_the_cpu(task: Task) -> None:
    # The family's losses build their helper tensors where the student trains (the
    # detection loss once made its anchors on the CPU and failed on CUDA).
    groups = channel_groups(task.model, task.inputs, task.family_impl)
    settings = DistillSettings(epochs=1, lr=1e-3, temperature=2.0, alpha=0.5)
    losses = {}
    for device in ("cpu", "cuda"):
        student = prune(task.model, task.inputs, {g.name: 0.5 for g in groups}, 1, task.family_impl)
        for module in student.modules():  # dropout draws from each device's own generator
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        before = [p.detach().clone() for p in student.parameters()]
        history: list[dict[str, float]] = []
        distill(student, task.model, task, settings, history=history, device=device)
        after = list(student.parameters())
        assert all(p.device.type == "cpu" for p in after)  # handed back where it came from
        assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
        losses[device] = history[0]
    for term, value in losses["cpu"].items():  # same data, seed and steps; kernels differ
        assert losses["cuda"][term] == pytest.approx(value, rel=0.05, abs=1e-4)


def test_every_layer_is_named_in_the_exported_graph(task: Task) -> None:
    linear = {
        name
        for name, m in task.model.named_modules()
        if isinstance(m, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Embedding)
    }
    assert set(layer_names(task)) == linear  # per-layer int8 can reach every layer


def test_int8_layers_are_really_int8_and_the_rest_stay_fp32(task: Task, tmp_path: Path) -> None:
    layers = layer_names(task)
    calibration = calibration_batches(task.train_data, 32, task.family_impl)
    runtime = OnnxRuntime()
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    fmt = next(f for f in runtime.int8_formats if f.quant_format in task.family_impl.int8_forms)
    runtime.build(task.model, task.inputs, [], calibration, fmt, fp32, task.family_impl)
    runtime.build(task.model, task.inputs, layers[:-1], calibration, fmt, int8, task.family_impl)
    assert int8.stat().st_size < fp32.stat().st_size
    metric, _ = artifact_scores(int8, task, RuntimeSettings())
    assert metric >= torch_metric(task.model, task) - 0.1
    assert (
        graph_counts(int8, to_feed(task.inputs)).macs
        == graph_counts(fp32, to_feed(task.inputs)).macs
    )


def test_encoder_heads_are_pruned_whole_and_the_head_count_updated() -> None:
    task = make_encoder_task()
    groups = channel_groups(task.model, task.inputs, task.family_impl)
    heads = [g for g in groups if g.unit == "heads"]
    ffn = [g for g in groups if g.unit == "channels"]
    assert len(heads) == len(ffn) == 2  # one of each per layer; the hidden width is not a group
    assert all(g.channels == 4 for g in heads)
    assert all(len(g.layers) == 3 for g in heads)  # query, key, value (output dense follows)
    student = prune(task.model, task.inputs, {heads[0].name: 0.5, ffn[1].name: 0.5}, 1, Encoder())
    layer0 = student.backbone.encoder.layer[0]  # type: ignore[union-attr, index]
    attention = layer0.attention.self
    assert attention.num_attention_heads == 2
    assert attention.query.out_features == attention.key.out_features == 16
    assert layer0.attention.output.dense.in_features == 16
    assert student.backbone.encoder.layer[1].intermediate.dense.out_features == 32  # type: ignore[union-attr, index]
    # The hidden width stays: every residual and LayerNorm keeps 32.
    assert layer0.output.LayerNorm.normalized_shape == (32,)
    # A pruned head removes all of its channels: the kept heads' weights are unchanged.
    teacher_q = task.model.backbone.encoder.layer[0].attention.self.query.weight  # type: ignore[union-attr, index]
    kept = [
        h
        for h in range(4)
        if any(
            torch.equal(teacher_q[h * 8 : h * 8 + 8], attention.query.weight[k * 8 : k * 8 + 8])
            for k in range(2)
        )
    ]
    assert len(kept) == 2


def test_encoder_latency_features_see_attention() -> None:
    task = make_encoder_task()
    macs = layer_macs(task.model, task.inputs)
    attention = {k: v for k, v in macs.items() if k.endswith(ATTENTION)}
    assert len(attention) == 2
    tokens = task.inputs["input_ids"].shape[1]
    assert all(v == 2 * tokens * tokens * 32 for v in attention.values())
    groups = channel_groups(task.model, task.inputs, task.family_impl)
    heads = {g.name: 0.5 for g in groups if g.unit == "heads"}
    pruned = layer_macs(prune(task.model, task.inputs, heads, 1, Encoder()), task.inputs)
    assert all(pruned[k] == v // 2 for k, v in attention.items())  # half the heads


def test_encoder_scores_embedding_cosine_beside_the_metric(tmp_path: Path) -> None:
    task = make_encoder_task()
    path = tmp_path / "m.onnx"
    OnnxRuntime().build(task.model, task.inputs, [], [], Int8Format(), path, Encoder())
    metric, scores = artifact_scores(path, task, RuntimeSettings())
    assert metric == pytest.approx(torch_metric(task.model, task))
    assert scores["embedding_cosine"] == pytest.approx(1.0, abs=1e-5)  # the teacher itself
    student = prune(
        task.model,
        task.inputs,
        {g.name: 0.75 for g in channel_groups(task.model, task.inputs, Encoder())},
        1,
        Encoder(),
    )
    OnnxRuntime().build(student, task.inputs, [], [], Int8Format(), path, Encoder())
    assert artifact_scores(path, task, RuntimeSettings())[1]["embedding_cosine"] < 0.999


def test_dynamic_int8_quantizes_exactly_the_plan_layers(tmp_path: Path) -> None:
    import onnx

    task = make_encoder_task()
    modules = dict(task.model.named_modules())
    linears = [n for n in layer_names(task) if isinstance(modules[n], torch.nn.Linear)]
    path = tmp_path / "dyn.onnx"
    fmt = Int8Format("dynamic", "u8", True)
    OnnxRuntime().build(task.model, task.inputs, linears[:3], [], fmt, path, Encoder())
    graph = onnx.load(str(path)).graph
    integer = [
        n for n in graph.node if "Integer" in n.op_type or n.op_type.startswith("DynamicQuantize")
    ]
    assert integer  # real int8 kernels
    float_matmuls = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert not float_matmuls & set(linears[:3])
    assert set(linears[3:-1]) <= float_matmuls  # the rest stay fp32


@pytest.mark.parametrize("form", ["dynamic", "QDQ"])
def test_an_int8_embedding_table_is_stored_in_int8(form: str, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    task = make_encoder_task(epochs=1)
    table = "backbone.embeddings.word_embeddings"
    weight = task.model.get_submodule(table).weight
    calibration = calibration_batches(task.train_data, 32, task.family_impl)
    runtime, fmt = OnnxRuntime(), Int8Format(form, "u8", True)
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    runtime.build(task.model, task.inputs, [], calibration, fmt, fp32, task.family_impl)
    runtime.build(task.model, task.inputs, [table], calibration, fmt, int8, task.family_impl)
    stored = [numpy_helper.to_array(t) for t in onnx.load(str(int8)).graph.initializer]
    assert any(a.itemsize == 1 and a.shape == tuple(weight.shape) for a in stored)  # (u)int8
    saved = fp32.stat().st_size - int8.stat().st_size
    assert saved >= 0.7 * weight.numel() * 3  # 4 bytes -> 1 per entry
    metric, _ = artifact_scores(int8, task, RuntimeSettings())
    assert metric >= torch_metric(task.model, task) - 0.05


def test_heads_shared_across_layers_are_kept_and_said_so() -> None:
    """MPNet adds one relative-position bias per head, shared by every layer: removing a
    head in one layer cannot work, so only FFN widths are offered, with a note."""
    from transformers import MPNetConfig, MPNetModel

    from autoshuikou.compress.prune import head_pruning_notes
    from autoshuikou.families import EncoderClassifier

    torch.manual_seed(0)
    config = MPNetConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=40,
    )
    model = EncoderClassifier(MPNetModel(config, add_pooling_layer=False), 3).eval()
    ids = torch.randint(4, 64, (2, 16))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    groups = channel_groups(model, inputs, Encoder())
    assert [g.unit for g in groups] == ["channels", "channels"]  # the FFN of each layer
    (note,) = head_pruning_notes(model)
    assert "backbone.encoder.relative_attention_bias" in note
    student = prune(model, inputs, {g.name: 0.5 for g in groups}, 1, Encoder())
    assert count_macs_params(student, inputs)[1] < count_macs_params(model, inputs)[1]
    logits, _ = call(student, inputs)
    assert logits.shape == (2, 3)
