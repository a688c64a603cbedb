"""Extra tasks for benchmarks. SYNTHETIC DATA: these measure latency only; their metric means nothing."""

from __future__ import annotations

import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset

from autoshuikou import Task


def resnet18_64() -> Task:
    """torchvision ResNet-18 (random weights, 10 classes) at 3x64x64: a second architecture."""
    torch.manual_seed(0)
    x = torch.randn(320, 3, 64, 64)
    y = torch.randint(0, 10, (320,))
    return Task(
        model=torchvision.models.resnet18(num_classes=10).eval(),
        train_data=DataLoader(TensorDataset(x[:256], y[:256]), batch_size=32),
        val_data=DataLoader(TensorDataset(x[256:], y[256:]), batch_size=64),
        example_input=x[:1].clone(),
        name="resnet18_64_synthetic",
    )
