"""Built-in detection task "digits-detect": a YOLO-style detector on composite scenes.

Composite scenes paste 1-4 of scikit-learn's 1,797 real 8x8 digit scans, each scaled to
12-28 px, without overlap onto a noisy 160 px canvas, so every box is known exactly.
Validation scenes are built only from held-out scans (the same stratified 80/20 split as
the classification task). The network returns one tensor of raw predictions; decoding
and NMS live outside the graph, so the ONNX artifact is the network alone and decode is
timed on its own.

Raw layout per anchor point (strides 8 and 16, row-major, stride 8 first):
``[l, t, r, b, objectness, class_0 .. class_9]``; the box edges are
``center -/+ exp(raw) * stride`` (so an anchor can only encode a box containing its center).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoshuikou.families.detection import (
    STRIDES,
    anchor_points,
    assign,
    decode,
    detection_loss,
    distill_terms,
    mean_average_precision,
)
from autoshuikou.tasks._cache import train_once
from autoshuikou.tasks._task import Task

__all__ = [
    "CANVAS",
    "EPOCHS",
    "MAX_BOXES",
    "NUM_CLASSES",
    "RECIPE",
    "STRIDES",
    "TRAIN_SCENES",
    "VAL_SCENES",
    "DigitsDetector",
    "anchor_points",
    "assign",
    "decode",
    "detection_loss",
    "digits_detect_task",
    "distill_terms",
    "load_scene_tensors",
    "load_teacher",
    "make_scenes",
    "mean_average_precision",
    "predict",
    "scene_task",
    "train_teacher",
]

CANVAS = 160
MAX_BOXES = 4
NUM_CLASSES = 10
DIGIT_SIZES = (12, 28)  # inclusive range of the pasted square's side, px
NOISE_STD = 0.1  # background noise, in units of a digit scan's full intensity
INK = 0.1  # a scaled pixel above this (of full intensity) is part of the digit's box
# Fixed normalization (measured on generated scenes) so every split shares it.
PIXEL_MEAN = 0.01
PIXEL_STD = 0.12
TRAIN_SCENES = 3000
VAL_SCENES = 500
EPOCHS = 20
SEED = 0
# Of the base channels (16, 32, 64, 128). At half width the 1 ms network was bound by
# per-operator overhead (half the channels pruned ran at 0.61x its latency, int8 at 1.10x);
# at full width compute dominates (0.39x and 0.62x), as in the detectors users bring.
WIDTH = 1.0
# Bump when data, model or training change so cached teachers are retrained.
RECIPE = f"digits-detect-v2-{CANVAS}-{TRAIN_SCENES}-{EPOCHS}-{WIDTH}-{SEED}"

_SPLIT_CODE = {"train": 0, "val": 1}


# --------------------------------------------------------------------------- scenes


@functools.lru_cache(maxsize=2)
def _source_scans(split: str) -> tuple[torch.Tensor, np.ndarray]:
    """(scans (N, 1, 8, 8) in [0, 1], labels) of one side of the classification split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx_train, idx_val = train_test_split(
        list(range(len(digits.target))), test_size=0.2, random_state=0, stratify=digits.target
    )
    idx = np.asarray(idx_train if split == "train" else idx_val)
    scans = torch.tensor(digits.images[idx], dtype=torch.float32).unsqueeze(1) / 16.0
    return scans, np.asarray(digits.target[idx], dtype=np.int64)


def make_scenes(n: int, seed: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` composite scenes: images (n, 1, CANVAS, CANVAS), normalized with fixed
    constants, and targets (n, MAX_BOXES, 5) rows ``[class, x1, y1, x2, y2]`` in pixels
    (edges, so x2 - x1 is the width), padded with class -1 and zeros. Deterministic in
    (seed, split); ``split`` picks which source scans are used ("train" or "val")."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    scans, labels = _source_scans(split)
    rng = np.random.default_rng([seed, _SPLIT_CODE[split]])
    images = torch.zeros(n, 1, CANVAS, CANVAS)
    targets = torch.zeros(n, MAX_BOXES, 5)
    targets[:, :, 0] = -1
    for i in range(n):
        placed: list[tuple[int, int, int]] = []  # (x, y, side) of pasted squares
        for _ in range(int(rng.integers(1, MAX_BOXES + 1))):
            side = int(rng.integers(DIGIT_SIZES[0], DIGIT_SIZES[1] + 1))
            # Retry placement so pasted squares never overlap (1 px gap); give up rarely.
            for _attempt in range(100):
                x, y = (int(v) for v in rng.integers(0, CANVAS - side + 1, size=2))
                if all(
                    x + side + 1 <= px or px + ps + 1 <= x or y + side + 1 <= py or py + ps + 1 <= y
                    for px, py, ps in placed
                ):
                    break
            else:
                continue
            k = int(rng.integers(len(labels)))
            digit = F.interpolate(
                scans[k : k + 1], size=(side, side), mode="bilinear", align_corners=False
            )[0, 0].clamp(0, 1)
            # Tight box of the scaled digit's ink, not the pasted square: what a detector
            # should find, and it rewards precise localization at high IoU thresholds.
            ink = digit > INK
            cols = torch.nonzero(ink.any(0)).flatten()
            rows = torch.nonzero(ink.any(1)).flatten()
            if len(cols) == 0:
                continue
            contrast = float(rng.uniform(0.6, 1.0))
            images[i, 0, y : y + side, x : x + side] = digit * contrast
            j = len(placed)
            targets[i, j] = torch.tensor(
                [
                    float(labels[k]),
                    x + int(cols[0]),
                    y + int(rows[0]),
                    x + int(cols[-1]) + 1,
                    y + int(rows[-1]) + 1,
                ]
            )
            placed.append((x, y, side))
    noise = torch.from_numpy(rng.standard_normal(images.shape, dtype=np.float32))
    images = images + NOISE_STD * noise
    return (images - PIXEL_MEAN) / PIXEL_STD, targets


def load_scene_tensors(
    seed: int = SEED,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_targets, val_x, val_targets): TRAIN_SCENES and VAL_SCENES scenes."""
    train_x, train_t = make_scenes(TRAIN_SCENES, seed, "train")
    val_x, val_t = make_scenes(VAL_SCENES, seed, "val")
    return train_x, train_t, val_x, val_t


# --------------------------------------------------------------------------- network


def _ch(channels: int, width: float) -> int:
    """Channels at a width multiplier, a multiple of 4 (at least 4)."""
    return max(4, round(channels * width / 4) * 4)


class ConvBNAct(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.act(self.bn(self.conv(x)))
        return y


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 1)
        self.cv2 = ConvBNAct(c, c, 3)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.cv2(self.cv1(x))
        return x + y if self.shortcut else y


class C3(nn.Module):
    """CSP block: a bottleneck branch and a 1x1 bypass, concatenated and fused by a 1x1."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        hidden = c_out // 2
        self.cv1 = ConvBNAct(c_in, hidden, 1)
        self.cv2 = ConvBNAct(c_in, hidden, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, shortcut) for _ in range(n)))
        self.cv3 = ConvBNAct(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], dim=1))
        return y


class SPPF(nn.Module):
    """Fast spatial pyramid pooling: three chained 5x5 max-pools, concatenated."""

    def __init__(self, c: int) -> None:
        super().__init__()
        hidden = c // 2
        self.cv1 = ConvBNAct(c, hidden, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.cv2 = ConvBNAct(4 * hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        y: torch.Tensor = self.cv2(torch.cat([x, y1, y2, self.pool(y2)], dim=1))
        return y


class Head(nn.Module):
    """Decoupled head: a box branch (4 distances + objectness) and a class branch, each a
    3x3 conv and a 1x1 prediction conv, joined along channels. A coupled head barely
    learned the classes: the box gradients dominated its shared conv."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.box_stem = ConvBNAct(c, c, 3)
        self.box_pred = nn.Conv2d(c, 5, 1)
        self.cls_stem = ConvBNAct(c, c, 3)
        self.cls_pred = nn.Conv2d(c, num_classes, 1)
        bias = self.box_pred.bias
        assert bias is not None
        with torch.no_grad():
            # Objectness prior of 1%: the start is not swamped by the background anchors.
            bias.zero_()
            bias[4] = -math.log(99.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = self.box_pred(self.box_stem(x))
        return torch.cat([box, self.cls_pred(self.cls_stem(x))], dim=1)


class DigitsDetector(nn.Module):
    """YOLO-style detector: CSP backbone with SPPF, PAN neck, anchor-free heads at strides
    8 and 16. ``forward`` returns raw predictions (B, A, 5 + classes)."""

    def __init__(
        self, width: float = WIDTH, num_classes: int = NUM_CLASSES, sppf: bool = True
    ) -> None:
        super().__init__()
        c0, c1, c2, c3 = (_ch(c, width) for c in (16, 32, 64, 128))
        self.stem = ConvBNAct(1, c0, 3, 2)  # stride 2
        self.stage2 = nn.Sequential(ConvBNAct(c0, c1, 3, 2), C3(c1, c1, 1))  # stride 4
        self.stage3 = nn.Sequential(ConvBNAct(c1, c2, 3, 2), C3(c2, c2, 2))  # stride 8
        stage4: list[nn.Module] = [ConvBNAct(c2, c3, 3, 2), C3(c3, c3, 1)]  # stride 16
        if sppf:
            stage4.append(SPPF(c3))
        self.stage4 = nn.Sequential(*stage4)
        # PAN neck: top-down (upsample + concat with stride 8), then bottom-up (strided
        # conv + concat with the reduced stride-16 map).
        self.reduce = ConvBNAct(c3, c2, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top_down = C3(2 * c2, c2, 1, shortcut=False)
        self.down = ConvBNAct(c2, c2, 3, 2)
        self.bottom_up = C3(2 * c2, c3, 1, shortcut=False)
        self.head8 = Head(c2, num_classes)
        self.head16 = Head(c3, num_classes)

    def output_layers(self) -> list[nn.Module]:
        """The final head convs: their output channels are the raw layout, never pruned
        (pass them to Torch-Pruning as ``ignored_layers``)."""
        return [
            self.head8.box_pred,
            self.head16.box_pred,
            self.head8.cls_pred,
            self.head16.cls_pred,
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.stage3(self.stage2(self.stem(x)))
        h4 = self.reduce(self.stage4(p3))
        n3 = self.top_down(torch.cat([self.up(h4), p3], dim=1))
        n4 = self.bottom_up(torch.cat([self.down(n3), h4], dim=1))
        maps = [self.head8(n3), self.head16(n4)]
        # (B, C, H, W) per level -> (B, A, C): one output, concatenated inside the graph.
        return torch.cat([m.flatten(2) for m in maps], dim=2).transpose(1, 2)


def predict(model: nn.Module, images: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """Raw predictions of ``model`` (in eval mode, no grad) for many images."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[i : i + batch]) for i in range(0, len(images), batch)])


# --------------------------------------------------------------------------- teacher


def train_teacher(seed: int = SEED) -> DigitsDetector:
    """Deterministic AdamW + one-cycle on TRAIN_SCENES composite scenes for EPOCHS (about
    11.5 minutes on 2 cores)."""
    torch.manual_seed(seed)
    train_x, train_t = make_scenes(TRAIN_SCENES, seed, "train")
    model = DigitsDetector(WIDTH)
    batch = 32
    steps_per_epoch = (len(train_x) + batch - 1) // batch
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=4e-3, total_steps=EPOCHS * steps_per_epoch, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = detection_loss(model(train_x[idx]), train_t[idx], CANVAS)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
    return model.eval()


def load_teacher() -> DigitsDetector:
    """The cached teacher (trained on first use), in eval mode."""
    model = DigitsDetector(WIDTH)
    model.load_state_dict(train_once("digits-detect", RECIPE, train_teacher))
    return model.eval()


def scene_task(
    model: nn.Module,
    scenes: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    name: str,
    batch: int = 32,
) -> Task:
    """A detection Task of ``model`` on (train_x, train_targets, val_x, val_targets)."""
    train_x, train_t, val_x, val_t = scenes
    gen = torch.Generator().manual_seed(SEED)
    return Task(
        model=model.eval(),
        train_data=DataLoader(
            TensorDataset(train_x, train_t), batch_size=batch, shuffle=True, generator=gen
        ),
        val_data=DataLoader(TensorDataset(val_x, val_t), batch_size=100),
        example_input=val_x[:1].clone(),
        name=name,
        family="detection",
    )


def digits_detect_task() -> Task:
    """The built-in detection task: the cached teacher, composite scenes, mAP@[.5:.95]."""
    return scene_task(load_teacher(), load_scene_tensors(), "digits-detect")
