"""A tiny detector on composite scenes, as a user would bring one through a Task: the
built-in network at a quarter of its width, trained for seconds."""

from __future__ import annotations

import torch

from autoshuikou import Task
from autoshuikou.tasks import digits_detect as dd


def make_detection_task(steps: int = 40) -> Task:
    torch.manual_seed(0)
    train_x, train_t = dd.make_scenes(96, 0, "train")
    val_x, val_t = dd.make_scenes(32, 0, "val")
    model = dd.DigitsDetector(width=0.25, sppf=False)
    opt = torch.optim.AdamW(model.parameters(), lr=4e-3)
    model.train()
    for step in range(steps):
        i = (step * 16) % 96
        loss = dd.detection_loss(model(train_x[i : i + 16]), train_t[i : i + 16], dd.CANVAS)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dd.scene_task(model, (train_x, train_t, val_x, val_t), "tiny-detect", batch=16)
