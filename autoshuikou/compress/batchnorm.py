"""BatchNorm recalibration: running statistics recomputed for the weights a model has now.

Pruning leaves each BatchNorm normalising with statistics of channels that are gone (the
adaptive BatchNorm of EagleEye, Li et al. 2020); fine-tuning leaves them as an average
over weights that kept moving. Forward passes over a few training batches, in train mode
for the norms only, with a cumulative average instead of the moving one, give the
statistics of the model as it is. Nothing else changes: no gradient, no weight.
"""

from __future__ import annotations

import torch
from torch import nn

from autoshuikou.families import call
from autoshuikou.tasks import Task

RECAL_BATCHES = 8  # training batches whose statistics replace BatchNorm's running ones


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_batchnorm(
    model: nn.Module, task: Task, seed: int = 0, batches: int = RECAL_BATCHES
) -> nn.Module:
    """``model`` (in place, eval mode after) with every BatchNorm's running statistics
    recomputed over the first ``batches`` training batches of ``seed``'s order."""
    norms = batchnorms(model)
    model.eval()
    if not norms:
        return model
    generator = getattr(task.train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)  # the same batches for every model
    momenta = [m.momentum for m in norms]
    device = next(model.parameters()).device
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches, not a moving one
        m.train()
    with torch.no_grad():
        for i, (inputs, _) in enumerate(task.batches("train_data")):
            if i == batches:
                break
            call(model, {name: value.to(device) for name, value in inputs.items()})
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
        m.eval()
    return model
