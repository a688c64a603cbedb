"""The digits-detect pieces: composite scenes, encode/decode, loss, metric, pruning, export."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from torch import nn

from autoshuikou.tasks import digits_detect as dd

torch.set_num_threads(1)


def _craft_raw(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw tensor that encodes ``targets`` exactly on every assigned anchor whose center
    is inside its box, and the targets it can encode (the rest dropped to padding)."""
    centers, strides = dd.anchor_points(dd.CANVAS)
    idx = dd.assign(targets, dd.CANVAS)
    raw = torch.full((len(targets), len(centers), 5 + dd.NUM_CLASSES), 0.0)
    raw[..., 4] = -12.0  # background: score far below decode's threshold
    kept = torch.full_like(targets, 0.0)
    kept[..., 0] = -1
    for b, a in torch.nonzero(idx >= 0).tolist():
        m = int(idx[b, a])
        cls, x1, y1, x2, y2 = targets[b, m].tolist()
        cx, cy = centers[a].tolist()
        dist = torch.tensor([cx - x1, cy - y1, x2 - cx, y2 - cy])
        if bool((dist <= 0).any()):
            continue  # the fallback anchor of a too-thin box: not encodable
        raw[b, a, :4] = torch.log(dist / strides[a])
        raw[b, a, 4] = 12.0
        raw[b, a, 5 + int(cls)] = 12.0
        kept[b, m] = targets[b, m]
    return raw, kept


def test_scenes_are_deterministic_and_valid() -> None:
    x, t = dd.make_scenes(24, 3, "train")
    x2, t2 = dd.make_scenes(24, 3, "train")
    assert torch.equal(x, x2) and torch.equal(t, t2)
    assert not torch.equal(t, dd.make_scenes(24, 4, "train")[1])
    assert not torch.equal(t, dd.make_scenes(24, 3, "val")[1])
    assert x.shape == (24, 1, dd.CANVAS, dd.CANVAS) and x.dtype == torch.float32
    assert t.shape == (24, dd.MAX_BOXES, 5) and t.dtype == torch.float32
    assert abs(float(x.mean())) < 0.3 and 0.5 < float(x.std()) < 2.0
    valid = t[..., 0] >= 0
    counts = valid.sum(dim=1)
    assert int(counts.min()) >= 1 and int(counts.max()) <= dd.MAX_BOXES
    rows = t[valid]
    classes = rows[:, 0]
    assert torch.equal(classes, classes.round()) and classes.min() >= 0 and classes.max() <= 9
    boxes = rows[:, 1:]
    assert boxes.min() >= 0 and boxes.max() <= dd.CANVAS
    sides = boxes[:, 2:] - boxes[:, :2]
    assert sides.min() >= 1 and sides.max() <= dd.DIGIT_SIZES[1]
    assert torch.equal(t[~valid], torch.tensor([-1.0, 0, 0, 0, 0]).expand(int((~valid).sum()), 5))
    # The pixels in each box hold ink: the box sits on the digit, not on background.
    raw_pixels = x * dd.PIXEL_STD + dd.PIXEL_MEAN
    for i, j in torch.nonzero(valid).tolist():
        left, top, right, bottom = (int(v) for v in t[i, j, 1:].tolist())
        assert float(raw_pixels[i, 0, top:bottom, left:right].max()) > 0.5


def test_validation_scenes_use_held_out_scans() -> None:
    from autoshuikou.tasks.digits import load_digits_tensors

    _, train_labels = dd._source_scans("train")
    _, val_labels = dd._source_scans("val")
    _, ref_train_y, _, ref_val_y = load_digits_tensors()
    assert len(train_labels) + len(val_labels) == 1797
    assert np.array_equal(train_labels, ref_train_y.numpy())
    assert np.array_equal(val_labels, ref_val_y.numpy())
    with pytest.raises(ValueError):
        dd.make_scenes(1, 0, "test")


def test_output_layout_matches_anchor_points() -> None:
    centers, strides = dd.anchor_points(dd.CANVAS)
    expected = sum((dd.CANVAS // s) ** 2 for s in dd.STRIDES)
    assert centers.shape == (expected, 2) and strides.shape == (expected,)
    model = dd.DigitsDetector(0.25).eval()
    with torch.no_grad():
        raw = model(torch.zeros(2, 1, dd.CANVAS, dd.CANVAS))
    assert raw.shape == (2, expected, 5 + dd.NUM_CLASSES)


def test_decode_of_crafted_raw_recovers_boxes_and_map_is_one() -> None:
    _, targets = dd.make_scenes(32, 1, "val")
    valid = targets[..., 0] >= 0
    idx = dd.assign(targets, dd.CANVAS)
    for b, m in torch.nonzero(valid).tolist():
        assert bool((idx[b] == m).any()), "every box gets at least one positive anchor"
    raw, kept = _craft_raw(targets)
    # Nearly every box is encodable (only digits thinner than the anchor spacing are not).
    assert int((kept[..., 0] >= 0).sum()) >= 0.95 * int(valid.sum())
    detections = dd.decode(raw, dd.CANVAS)
    for det, truth in zip(detections, kept, strict=True):
        truth = truth[truth[:, 0] >= 0]
        assert len(det["boxes"]) == len(truth)  # NMS merged each box's duplicate anchors
        order_det = torch.argsort(det["boxes"][:, 0] * 1000 + det["boxes"][:, 1])
        order_gt = torch.argsort(truth[:, 1] * 1000 + truth[:, 2])
        assert torch.allclose(det["boxes"][order_det], truth[order_gt, 1:], atol=1e-3)
        assert torch.equal(det["labels"][order_det], truth[order_gt, 0].long())
    result = dd.mean_average_precision(raw, kept, dd.CANVAS)
    assert result["map"] == pytest.approx(1.0) and result["map_50"] == pytest.approx(1.0)
    # Wrong classes: the metric must notice.
    wrong = raw.clone()
    wrong[..., 5:] = raw[..., 5:].roll(1, dims=-1)
    assert dd.mean_average_precision(wrong, kept, dd.CANVAS)["map"] < 0.05
    # Boxes grown by a factor e in every direction: IoU far below 0.5.
    loose = raw.clone()
    loose[..., :4] += 1.0
    assert dd.mean_average_precision(loose, kept, dd.CANVAS)["map_50"] < 0.05


def test_detection_loss_decreases_on_a_tiny_model() -> None:
    torch.manual_seed(0)
    images, targets = dd.make_scenes(8, 0, "train")
    model = dd.DigitsDetector(0.25).train()
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(20):
        loss = dd.detection_loss(model(images), targets, dd.CANVAS)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_distill_terms_vanish_when_student_is_teacher() -> None:
    _, targets = dd.make_scenes(4, 2, "train")
    teacher_raw, _ = _craft_raw(targets)
    student = teacher_raw.clone().requires_grad_(True)
    soft, box = dd.distill_terms(student, teacher_raw, dd.CANVAS)
    assert box.item() == pytest.approx(0.0, abs=1e-5)
    (soft + box).backward()
    assert student.grad is not None and float(student.grad.abs().max()) < 1e-4
    other = torch.zeros_like(teacher_raw).requires_grad_(True)
    soft2, box2 = dd.distill_terms(other, teacher_raw, dd.CANVAS)
    assert soft2.item() > soft.item() + 0.1 and box2.item() > 0.1
    (soft2 + box2).backward()
    assert other.grad is not None and float(other.grad.abs().max()) > 1e-3


def _is_neck_concat_group(
    graph: tp.DependencyGraph, group: tp.Group, names: dict[nn.Module, str]
) -> bool:
    """The group goes through a concatenation and shrinks a neck C3's inputs."""
    through_concat = any(isinstance(dep.target.module, tp.ops._ConcatOp) for dep, _ in group)
    neck_inputs = {
        names.get(dep.target.module, "")
        for dep, _ in group
        if graph.is_in_channel_pruning_fn(dep.handler)
    }
    return through_concat and bool(
        neck_inputs & {"top_down.cv1.conv", "top_down.cv2.conv", "bottom_up.cv1.conv"}
    )


def test_pruning_finds_neck_concat_groups_and_export_still_works(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = dd.DigitsDetector(0.5).eval()
    example = torch.randn(1, 1, dd.CANVAS, dd.CANVAS)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    names = {m: n for n, m in model.named_modules()}
    groups = list(
        graph.get_all_groups(ignored_layers=model.output_layers(), root_module_types=(nn.Conv2d,))
    )
    neck = [g for g in groups if _is_neck_concat_group(graph, g, names)]
    assert neck, "no group spans a concatenation in the neck"
    group = neck[0]
    channels = len(group[0].idxs)
    params_before = sum(p.numel() for p in model.parameters())
    group.prune(idxs=list(range(channels // 2)))
    params_after = sum(p.numel() for p in model.parameters())
    assert params_after < params_before
    for layer in model.output_layers():
        assert isinstance(layer, nn.Conv2d)
    assert model.head8.box_pred.out_channels == 5
    assert model.head16.cls_pred.out_channels == dd.NUM_CLASSES
    with torch.no_grad():
        out = model(example)
    anchors = len(dd.anchor_points(dd.CANVAS)[1])
    assert out.shape == (1, anchors, 5 + dd.NUM_CLASSES)
    path = tmp_path / "pruned.onnx"
    torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    assert onnx_out.shape == tuple(out.shape)
    assert np.allclose(onnx_out, out.numpy(), atol=1e-3)
    assert math.isfinite(float(np.abs(onnx_out).max()))
