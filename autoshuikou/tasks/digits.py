"""Built-in default task: a small ResNet on scikit-learn's handwritten digits.

The data (1,797 real 8x8 scans, shipped inside scikit-learn) is upsampled to 16x16 so the
convolutions do enough work for compression to matter. The teacher is trained once,
deterministically, and cached; 20% of the images are held out for validation and never
seen in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from autoshuikou.tasks._cache import cache_dir, train_once
from autoshuikou.tasks._task import Task

__all__ = ["cache_dir", "digits_task", "load_digits_tensors"]

INPUT_SIZE = 16
WIDTHS = (32, 64, 128)
EPOCHS = 10
SEED = 0
# Bump when the recipe changes so cached teachers are retrained.
RECIPE = f"digits-resnet8-v1-{WIDTHS}-{INPUT_SIZE}-{EPOCHS}-{SEED}"


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x))


class DigitsResNet(nn.Module):
    """ResNet-8: a stem and three residual stages; 10 classes."""

    def __init__(self, widths: tuple[int, int, int] = WIDTHS, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        self.layer1 = BasicBlock(widths[0], widths[0], 1)
        self.layer2 = BasicBlock(widths[0], widths[1], 2)
        self.layer3 = BasicBlock(widths[1], widths[2], 2)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        logits: torch.Tensor = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return logits


def load_digits_tensors(
    size: int = INPUT_SIZE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, val_x, val_y) at ``size`` px: a stratified 80/20 split, the same
    every time."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    images = (images - 0.5) / 0.5
    labels = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_val = train_test_split(
        list(range(len(labels))), test_size=0.2, random_state=SEED, stratify=digits.target
    )
    return images[idx_train], labels[idx_train], images[idx_val], labels[idx_val]


def train_teacher(train_x: torch.Tensor, train_y: torch.Tensor) -> DigitsResNet:
    """Deterministic SGD + one-cycle schedule; about 25 s on 2 cores."""
    torch.manual_seed(SEED)
    model = DigitsResNet()
    batch = 64
    steps_per_epoch = (len(train_x) + batch - 1) // batch
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=EPOCHS * steps_per_epoch
    )
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def load_or_train_teacher(train_x: torch.Tensor, train_y: torch.Tensor) -> DigitsResNet:
    model = DigitsResNet()
    model.load_state_dict(train_once("digits", RECIPE, lambda: train_teacher(train_x, train_y)))
    return model.eval()


def digits_task() -> Task:
    train_x, train_y, val_x, val_y = load_digits_tensors()
    teacher = load_or_train_teacher(train_x, train_y)
    gen = torch.Generator().manual_seed(SEED)
    return Task(
        model=teacher,
        train_data=DataLoader(
            TensorDataset(train_x, train_y), batch_size=64, shuffle=True, generator=gen
        ),
        val_data=DataLoader(TensorDataset(val_x, val_y), batch_size=256),
        example_input=val_x[:1].clone(),
        name="digits",
    )
