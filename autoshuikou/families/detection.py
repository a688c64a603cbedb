"""Detectors: an image in, one tensor of raw anchor-free predictions out; decoding, NMS and
the metric outside the graph (so the deployed artifact is the network alone, and the
post-processing is timed on its own).

The contract a detector's output follows (the built-in ``digits-detect`` task's network
does; a user's own detector must too): shape (batch, A, 4 + 1 + classes) for a square
input of side ``canvas``, A = sum over STRIDES of (canvas / stride)^2 anchor points,
row-major per level, stride 8 first; per anchor ``[l, t, r, b, objectness, class logits]``,
the box edges ``center -/+ exp(raw) * stride`` (an anchor encodes a box containing its
center). Targets are padded per image to a fixed number of rows ``[class, x1, y1, x2, y2]``
in pixels, class -1 for padding, so batches concatenate.

Distillation: the teacher's objectness and class probabilities (soft) and its confident
boxes (GIoU), plus the detection loss on the labels (hard). Metric: COCO mAP@[.5:.95] by
torchmetrics (faster-coco-eval backend); mAP@.5 and the decode + NMS time beside it. Every
head's output layer keeps its width (``Detection.width_kept``: the terminal layers of the graph);
the neck's concatenation-coupled channel groups come from the dependency graph.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms, generalized_box_iou_loss

from autoshuikou.families._base import InputSpec, Metric, ModelFamily, primary

STRIDES = (8, 16)
_LOG_CLAMP = (-10.0, 8.0)  # keeps exp() finite on wild raw values early in training
POSTPROCESS_IMAGES = 50  # images whose decode + NMS is timed per model


def canvas_of(raw: torch.Tensor) -> int:
    """The square input side that gives ``raw``'s anchor count at STRIDES."""
    per_pixel = sum(1 / s**2 for s in STRIDES)
    canvas = round(math.sqrt(raw.shape[1] / per_pixel))
    if sum((canvas // s) ** 2 for s in STRIDES) != raw.shape[1]:
        raise ValueError(f"{raw.shape[1]} anchor rows fit no square input at strides {STRIDES}")
    return canvas


# --------------------------------------------------------------------------- decoding


@functools.lru_cache(maxsize=8)
def anchor_points(
    canvas: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(centers (A, 2) as x, y in pixels, strides (A,)) on ``device``, in the network's
    output order. Cached per device: treat the returned tensors as read-only."""
    centers, strides = [], []
    for stride in STRIDES:
        cells = canvas // stride
        cell = torch.arange(cells, device=device)
        ys, xs = torch.meshgrid(cell, cell, indexing="ij")
        centers.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2).float().add(0.5) * stride)
        strides.append(torch.full((cells * cells,), float(stride), device=device))
    return torch.cat(centers), torch.cat(strides)


def _boxes(raw: torch.Tensor, canvas: int) -> torch.Tensor:
    """Decoded xyxy boxes (..., A, 4) from raw (..., A, >=4)."""
    return _boxes_at(raw, *anchor_points(canvas, raw.device))


def _boxes_at(raw: torch.Tensor, centers: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
    """Decoded xyxy boxes of raw rows (..., N, >=4) at the given anchors (N, 2), (N,)."""
    dist = raw[..., :4].clamp(*_LOG_CLAMP).exp() * strides[:, None]
    return torch.cat([centers - dist[..., :2], centers + dist[..., 2:]], dim=-1)


def _scores(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(score, label) per anchor: objectness times the best class probability."""
    conf, labels = raw[..., 5:].softmax(dim=-1).max(dim=-1)
    return raw[..., 4].sigmoid() * conf, labels


def decode(
    raw: torch.Tensor,
    canvas: int,
    score_threshold: float = 0.01,
    iou: float = 0.6,
    max_det: int = 100,
) -> list[dict[str, torch.Tensor]]:
    """Per image: ``boxes`` (N, 4) xyxy pixels clipped to the canvas, ``scores`` (N,) and
    ``labels`` (N,), after class-wise NMS, best first, at most ``max_det``."""
    with torch.no_grad():
        raw = raw.float()
        centers, strides = anchor_points(canvas, raw.device)
        scores, labels = _scores(raw)
        out = []
        for b in range(raw.shape[0]):
            # Decode only the anchors above the threshold: a few dozen of the 500.
            keep = torch.nonzero(scores[b] > score_threshold).flatten()
            bx = _boxes_at(raw[b, keep], centers[keep], strides[keep]).clamp_(0, canvas)
            sc, lb = scores[b, keep], labels[b, keep]
            kept = batched_nms(bx, sc, lb, iou)[:max_det]
            out.append({"boxes": bx[kept], "scores": sc[kept], "labels": lb[kept]})
        return out


# --------------------------------------------------------------------------- training


def assign(targets: torch.Tensor, canvas: int, radius: float = 1.5) -> torch.Tensor:
    """Index (B, A) of the target row each anchor is positive for, -1 for background.

    FCOS-style and deterministic: an anchor is positive for a box when its center lies
    strictly inside the box (so the exp distances can encode it), within ``radius``
    strides of the box center, and the box's longer side fits the anchor's level
    (stride 8: up to 24 px, stride 16: from 16 px). An anchor claimed by several boxes
    takes the smallest. A box left with no anchor takes the nearest one whose center is
    inside it on any level, or failing that (a box thinner than the anchor spacing, about
    0.4% of digits) the nearest anchor of the finest level, which can only approximate it.
    """
    centers, strides = anchor_points(canvas, targets.device)
    cx, cy = centers[:, 0][None, :, None], centers[:, 1][None, :, None]  # (1, A, 1)
    s = strides[None, :, None]
    x1, y1, x2, y2 = (targets[:, None, :, i] for i in range(1, 5))  # (B, 1, M)
    valid = targets[:, None, :, 0] >= 0
    inside = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2) & valid
    bcx, bcy = (x1 + x2) / 2, (y1 + y2) / 2
    near = ((cx - bcx).abs() < radius * s) & ((cy - bcy).abs() < radius * s)
    longest = torch.maximum(x2 - x1, y2 - y1)
    lo = torch.where(s == STRIDES[0], torch.zeros_like(s), s)
    hi = torch.where(s == STRIDES[-1], torch.full_like(s, math.inf), 3 * s)
    cand = inside & near & (longest >= lo) & (longest <= hi)  # (B, A, M)
    area = ((x2 - x1) * (y2 - y1)).expand_as(cand)
    cost = torch.where(cand, area, torch.full_like(area, math.inf))
    best_cost, idx = cost.min(dim=2)
    idx = torch.where(torch.isfinite(best_cost), idx, torch.full_like(idx, -1))
    # Fallback for boxes with no candidate: nearest anchor (in strides), inside ones first.
    lonely = valid[:, 0] & ~cand.any(dim=1)  # (B, M)
    if bool(lonely.any()):
        dist = torch.maximum((cx - bcx).abs(), (cy - bcy).abs()) / s
        dist = dist + torch.where(inside, 0.0, 1e3) + torch.where(s == STRIDES[0], 0.0, 1e2)
        nearest = dist.argmin(dim=1)  # (B, M)
        for b, m in torch.nonzero(lonely).tolist():
            idx[b, nearest[b, m]] = m
    return idx


def _pair_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of two (N, 4) xyxy box sets."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(dim=1)
    return inter / (area_a + area_b - inter).clamp(min=1e-6)


def detection_loss(
    raw: torch.Tensor, targets: torch.Tensor, canvas: int, box_weight: float = 5.0
) -> torch.Tensor:
    """Hard loss on ground truth: objectness BCE on every anchor (target: the IoU of the
    positive's decoded box, so scores rank by localization quality), class BCE and
    ``box_weight`` x GIoU loss on positives; sums normalized by the positive count."""
    idx = assign(targets, canvas)
    pos = idx >= 0
    num_pos = pos.sum().clamp(min=1).to(raw.dtype)
    b_idx, a_idx = torch.nonzero(pos, as_tuple=True)
    matched = targets[b_idx, idx[b_idx, a_idx]]  # (P, 5)
    centers, strides = anchor_points(canvas, raw.device)
    pred_boxes = _boxes_at(raw[b_idx, a_idx], centers[a_idx], strides[a_idx])
    gt_boxes = matched[:, 1:]
    box_loss = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="sum")
    obj_target = torch.zeros_like(raw[..., 4])
    obj_target[b_idx, a_idx] = _pair_iou(pred_boxes.detach(), gt_boxes).to(raw.dtype)
    obj_loss = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="sum")
    # Softmax cross-entropy: one digit per box, and it learns far faster than 10 BCEs.
    cls_loss = F.cross_entropy(raw[b_idx, a_idx, 5:], matched[:, 0].long(), reduction="sum")
    loss: torch.Tensor = (box_weight * box_loss + obj_loss + cls_loss) / num_pos
    return loss


def distill_terms(
    student_raw: torch.Tensor,
    teacher_raw: torch.Tensor,
    canvas: int,
    confident: float = 0.3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(soft, box) distillation losses of a student against a teacher's raw output.

    soft: BCE of the student's objectness logits against the teacher's probabilities on
    every anchor, plus class BCE weighted by the teacher's objectness (background anchors'
    class outputs are noise); normalized by the teacher's total objectness. Soft-target
    BCE has a nonzero floor (the teacher's entropy); only its gradient matters.
    box: GIoU loss of the student's decoded boxes against the teacher's, on anchors
    where the teacher's score exceeds ``confident``, weighted by that score (zero, still
    differentiable, when there are none)."""
    teacher_raw = teacher_raw.detach().to(student_raw.dtype)
    t_obj = teacher_raw[..., 4].sigmoid()
    t_cls = teacher_raw[..., 5:].sigmoid()
    norm = t_obj.sum().clamp(min=1.0)
    obj = F.binary_cross_entropy_with_logits(student_raw[..., 4], t_obj, reduction="sum")
    cls = F.binary_cross_entropy_with_logits(student_raw[..., 5:], t_cls, reduction="none")
    soft = (obj + (cls.sum(dim=-1) * t_obj).sum()) / norm
    t_score, _ = _scores(teacher_raw)
    mask = t_score > confident
    if not bool(mask.any()):
        return soft, student_raw[..., :4].sum() * 0.0
    weight = t_score[mask]
    giou = generalized_box_iou_loss(
        _boxes(student_raw, canvas)[mask], _boxes(teacher_raw, canvas)[mask], reduction="none"
    )
    return soft, (giou * weight).sum() / weight.sum()


# --------------------------------------------------------------------------- metric


# The metric and the extra scores read the same outputs in one scoring: decode and evaluate
# once (keyed on the very tensors, which the caller does not change in between).
_last_scores: tuple[torch.Tensor, torch.Tensor, dict[str, float]] | None = None


def mean_average_precision(
    raw: torch.Tensor, targets: torch.Tensor, canvas: int
) -> dict[str, float]:
    """COCO mAP@[.5:.95] ("map") and mAP@.5 ("map_50") of raw predictions against padded
    targets, computed by torchmetrics (faster-coco-eval backend) on decoded detections."""
    global _last_scores
    if _last_scores is not None and _last_scores[0] is raw and _last_scores[1] is targets:
        return dict(_last_scores[2])
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")
    preds = decode(raw, canvas)
    truth = [
        {"boxes": t[t[:, 0] >= 0, 1:].float(), "labels": t[t[:, 0] >= 0, 0].long()} for t in targets
    ]
    metric.update(preds, truth)
    result = metric.compute()
    scores = {"map": float(result["map"]), "map_50": float(result["map_50"])}
    _last_scores = (raw, targets, scores)
    return dict(scores)


def map_metric(raw: torch.Tensor, targets: torch.Tensor) -> float:
    """mAP@[.5:.95] of raw predictions against padded targets."""
    return mean_average_precision(raw, targets, canvas_of(raw))["map"]


def postprocess_ms(raw: torch.Tensor, images: int = POSTPROCESS_IMAGES) -> float:
    """Median decode + NMS time per image at batch 1, in ms (outside the artifact)."""
    canvas = canvas_of(raw)
    times = []
    for row in raw[:images]:
        started = time.perf_counter()
        decode(row[None], canvas)
        times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


class Detection(ModelFamily):
    """Anchor-free detectors (see the module docstring for the output contract)."""

    name = "detection"
    inputs = (InputSpec("input", torch.float32, {0: "batch"}),)
    outputs = ("predictions",)
    default_space = "detection.yaml"
    calibration_samples = 128

    def width_kept(self, last_layer: str, terminal_layers: Sequence[str]) -> list[str]:
        # Outputs come from several head layers: every terminal layer keeps its width.
        return list(terminal_layers)

    def fp32_layers(self, width_kept: Sequence[str]) -> list[str]:
        # The prediction convs are a sliver of the compute, and int8 there costs box
        # precision (digits-detect: 0.804 -> 0.753 mAP@[.5:.95]): fp32 in every plan.
        return list(width_kept)

    def distill_loss(
        self, student: Any, teacher: Any, targets: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = primary(student), primary(teacher)
        canvas = canvas_of(s)
        soft, box = distill_terms(s, t, canvas)
        return soft + box, detection_loss(s, targets, canvas)

    @property
    def default_metric(self) -> tuple[Metric, str]:
        return map_metric, "map"

    def extra_scores(
        self,
        outputs: Sequence[torch.Tensor],
        teacher_outputs: Sequence[torch.Tensor],
        targets: torch.Tensor,
    ) -> dict[str, float]:
        raw = outputs[0]
        scores = mean_average_precision(raw, targets, canvas_of(raw))
        return {"map_50": scores["map_50"], "postprocess_ms": postprocess_ms(raw)}
