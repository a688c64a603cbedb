"""The task's metric, computed on the deployed artifact's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autoshuikou.families import call, primary, to_feed
from autoshuikou.measure.runtime import RuntimeSettings, open_runner
from autoshuikou.tasks import Task


def artifact_scores(
    path: Path, task: Task, settings: RuntimeSettings
) -> tuple[float, dict[str, float]]:
    """(metric, extra scores): every validation batch through the deployed artifact.

    The metric reads the primary output (logits); the family's extra scores (e.g. an
    encoder's embedding cosine to the teacher) read every output.
    """
    chunks: list[list[torch.Tensor]] = []
    targets = []
    with open_runner(path, settings) as run:
        for inputs, target in task.batches("val_data"):
            chunks.append([torch.from_numpy(np.asarray(o)) for o in run(to_feed(inputs))])
            targets.append(target)
    outputs = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
    all_targets = torch.cat(targets)
    metric = task.score(outputs[0], all_targets)
    extra = task.family_impl.extra_scores(outputs, task.teacher_outputs, all_targets)
    return metric, extra


def artifact_metric(path: Path, task: Task, settings: RuntimeSettings) -> float:
    """The task's metric on the deployed artifact (see :func:`artifact_scores`)."""
    return artifact_scores(path, task, settings)[0]


def torch_metric(model: torch.nn.Module, task: Task) -> float:
    """The metric of the PyTorch module itself (in eval mode, on whatever device it is)."""
    model.eval()
    device = next(model.parameters()).device
    logits, targets = [], []
    with torch.no_grad():
        for inputs, target in task.batches("val_data"):
            on_device = {name: value.to(device) for name, value in inputs.items()}
            logits.append(primary(call(model, on_device)).cpu())
            targets.append(target)
    return task.score(torch.cat(logits), torch.cat(targets))
