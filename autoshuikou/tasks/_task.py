"""The Task type: what to compress, on which data, judged by which metric."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from autoshuikou.errors import UserError

Batch = tuple[torch.Tensor, torch.Tensor]
# metric(logits, targets) -> score, higher is better, computed over the whole validation set.
Metric = Callable[[torch.Tensor, torch.Tensor], float]


def top1_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of samples whose highest logit is the target class."""
    return float((logits.argmax(dim=1) == targets).float().mean().item())


@dataclass
class Task:
    """A trained model (the teacher) plus the data and metric to compress it against.

    ``train_data`` and ``val_data`` are re-iterable collections of ``(inputs, targets)``
    batches (a ``torch.utils.data.DataLoader`` works). ``train_data`` feeds int8
    calibration and distillation; ``val_data`` scores every compressed model and must be
    held out from the teacher's training. ``example_input`` is one batch-1 input with the
    shape the deployed model receives; latency is measured on it.
    """

    model: nn.Module
    train_data: Iterable[Batch]
    val_data: Iterable[Batch]
    example_input: torch.Tensor
    metric: Metric | None = None
    name: str = "custom"
    metric_name: str = field(default="")

    def __post_init__(self) -> None:
        if self.metric is None:
            self.metric = top1_accuracy
            self.metric_name = self.metric_name or "top1_accuracy"
        self.metric_name = self.metric_name or getattr(self.metric, "__name__", "metric")

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        assert self.metric is not None  # set in __post_init__
        return float(self.metric(logits, targets))


def iterate_batches(data: Iterable[Batch], what: str) -> Iterator[Batch]:
    """Yield ``(inputs, targets)`` tensor pairs, or fail with a message naming ``what``."""
    for i, batch in enumerate(data):
        if not (isinstance(batch, tuple | list) and len(batch) == 2):
            raise UserError(
                f"task {what} batch {i} is a {type(batch).__name__}, not an (inputs, targets) pair",
                "make the data yield (inputs, targets) tuples, as a DataLoader over a "
                "TensorDataset does",
            )
        inputs, targets = batch
        yield torch.as_tensor(inputs), torch.as_tensor(targets)


def validate_task(task: object, source: str) -> Task:
    """Check the contract once, up front, so failures name the task and not a stage."""
    if not isinstance(task, Task):
        raise UserError(
            f"{source} returned a {type(task).__name__}, not an autoshuikou.Task",
            "return autoshuikou.Task(model=..., train_data=..., val_data=..., example_input=...)",
        )
    if not isinstance(task.model, nn.Module):
        raise UserError(f"{source}: Task.model is not a torch.nn.Module", "pass the trained model")
    if not isinstance(task.example_input, torch.Tensor) or task.example_input.dim() < 2:
        raise UserError(
            f"{source}: Task.example_input must be a batch-1 tensor such as (1, C, H, W)",
            "pass e.g. torch.zeros(1, 3, 32, 32) with the deployed input shape",
        )
    if task.example_input.shape[0] != 1:
        raise UserError(
            f"{source}: Task.example_input has batch size {task.example_input.shape[0]}, not 1",
            "pass one sample, e.g. inputs[:1]",
        )
    for what in ("train_data", "val_data"):
        data = getattr(task, what)
        if iter(data) is data:
            raise UserError(
                f"{source}: Task.{what} is a one-shot iterator; it is read many times",
                "pass a list of batches or a DataLoader instead of a generator",
            )
        if next(iterate_batches(data, what), None) is None:
            raise UserError(f"{source}: Task.{what} yields no batches", "give it some data")
    return task
