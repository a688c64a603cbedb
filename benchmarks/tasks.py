"""Extra tasks for benchmarks.

resnet18_64: SYNTHETIC DATA, for latency only (its metric means nothing).
resnet18_digits: torchvision's ResNet-18 trained here on the real digits, for comparing
search strategies (`autoshuikou compare --task benchmarks/tasks.py:resnet18_digits`).
"""

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


RESNET18_SIZE = 32
RESNET18_EPOCHS = 8
RESNET18_RECIPE = f"digits-resnet18-v1-{RESNET18_SIZE}-{RESNET18_EPOCHS}"


def _train_resnet18(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """Deterministic SGD + one-cycle, as the digits teacher; a few minutes on 2 cores."""
    torch.manual_seed(0)
    model: torch.nn.Module = torchvision.models.resnet18(num_classes=10)
    batch = 64
    steps = RESNET18_EPOCHS * ((len(x) + batch - 1) // batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(RESNET18_EPOCHS):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


def resnet18_digits() -> Task:
    """torchvision ResNet-18 trained here on the real digits scans at 3x32x32 (the default
    task's split): a deep CNN with a real metric, for comparing search strategies."""
    from autoshuikou.tasks._cache import train_once
    from autoshuikou.tasks.digits import load_digits_tensors

    train_x, train_y, val_x, val_y = load_digits_tensors(RESNET18_SIZE)
    train_x, val_x = train_x.expand(-1, 3, -1, -1).clone(), val_x.expand(-1, 3, -1, -1).clone()
    model: torch.nn.Module = torchvision.models.resnet18(num_classes=10)
    model.load_state_dict(
        train_once("digits-resnet18", RESNET18_RECIPE, lambda: _train_resnet18(train_x, train_y))
    )
    gen = torch.Generator().manual_seed(0)
    return Task(
        model=model.eval(),
        train_data=DataLoader(
            TensorDataset(train_x, train_y), batch_size=64, shuffle=True, generator=gen
        ),
        val_data=DataLoader(TensorDataset(val_x, val_y), batch_size=256),
        example_input=val_x[:1].clone(),
        name="digits-resnet18",
    )
