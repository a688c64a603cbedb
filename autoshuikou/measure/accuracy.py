"""The task's metric, computed on the deployed artifact's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autoshuikou.measure.runtime import RuntimeSettings, open_runner
from autoshuikou.tasks import Task, iterate_batches


def artifact_metric(path: Path, task: Task, settings: RuntimeSettings) -> float:
    """Run every validation batch through the deployed artifact and score the logits."""
    logits, targets = [], []
    with open_runner(path, settings) as run:
        for inputs, target in iterate_batches(task.val_data, "val_data"):
            logits.append(torch.from_numpy(np.asarray(run(inputs.float().numpy()))))
            targets.append(target)
    return task.score(torch.cat(logits), torch.cat(targets))


def torch_metric(model: torch.nn.Module, task: Task) -> float:
    model.eval()
    logits, targets = [], []
    with torch.no_grad():
        for inputs, target in iterate_batches(task.val_data, "val_data"):
            logits.append(model(inputs))
            targets.append(target)
    return task.score(torch.cat(logits), torch.cat(targets))
