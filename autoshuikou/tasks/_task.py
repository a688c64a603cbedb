"""The Task type: what to compress, on which data, judged by which metric."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from autoshuikou.errors import UserError
from autoshuikou.families import (
    DEFAULT_FAMILY,
    FAMILIES,
    Inputs,
    Metric,
    ModelFamily,
    call,
    get_family,
    primary,
    top1_accuracy,
)

# (inputs, targets); inputs are one tensor, a tuple in the family's input order, or a mapping.
Batch = tuple[Any, torch.Tensor]

__all__ = ["Batch", "Metric", "Task", "iterate_batches", "top1_accuracy", "validate_task"]


@dataclass
class Task:
    """A trained model (the teacher) plus the data and metric to compress it against.

    ``train_data`` and ``val_data`` are re-iterable collections of ``(inputs, targets)``
    batches (a ``torch.utils.data.DataLoader`` works). ``train_data`` feeds int8
    calibration and distillation; ``val_data`` scores every compressed model and must be
    held out from the teacher's training. ``example_input`` is one batch-1 input with the
    shape the deployed model receives (a tuple or mapping of tensors for several inputs,
    e.g. token ids and an attention mask); latency is measured on it. ``family`` names the
    model family (see ``autoshuikou.families``): what the inputs and outputs are and how the
    student is distilled.
    """

    model: nn.Module
    train_data: Iterable[Batch]
    val_data: Iterable[Batch]
    example_input: Any
    metric: Metric | None = None
    name: str = "custom"
    metric_name: str = field(default="")
    family: str = DEFAULT_FAMILY
    # How a no-code task read its model and data (classes, split, preprocessing): written
    # to the run's data.json and the exported README.
    provenance: dict[str, Any] = field(default_factory=dict)
    # The most the metric can score (None: unbounded or unknown); an accuracy floor above it
    # is refused before any work. The families' own metrics (top-1, mAP) are shares: 1.
    metric_max: float | None = None

    def __post_init__(self) -> None:
        if self.family in FAMILIES and self.metric is None:
            self.metric, default_name = self.family_impl.default_metric
            self.metric_name = self.metric_name or default_name
            self.metric_max = 1.0 if self.metric_max is None else self.metric_max
        self.metric_name = self.metric_name or getattr(self.metric, "__name__", "metric")

    @cached_property
    def family_impl(self) -> ModelFamily:
        return get_family(self.family)

    @property
    def inputs(self) -> Inputs:
        """The example input as named tensors: what export, pruning and timing run on."""
        return self.family_impl.named_inputs(self.example_input)

    @property
    def input_shape(self) -> list[int] | dict[str, list[int]]:
        """The example's shape (one input), or each named input's: part of fingerprints."""
        inputs = self.inputs
        if len(inputs) == 1:
            return list(next(iter(inputs.values())).shape)
        return {name: list(t.shape) for name, t in inputs.items()}

    def batches(self, which: str) -> Iterator[tuple[Inputs, torch.Tensor]]:
        """``train_data`` or ``val_data`` as (named inputs, targets) pairs."""
        family = self.family_impl
        for inputs, targets in iterate_batches(getattr(self, which), which):
            yield family.named_inputs(inputs), targets

    def train_batches(self) -> int:
        """How many batches one epoch of ``train_data`` has (counted where it has no len)."""
        if isinstance(self.train_data, Sized):
            return len(self.train_data)
        return sum(1 for _ in iterate_batches(self.train_data, "train_data"))

    def score(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        assert self.metric is not None  # set in __post_init__
        return float(self.metric(outputs, targets))

    @cached_property
    def teacher_outputs(self) -> list[torch.Tensor]:
        """Every output of the teacher over the validation set (for scores beside the metric)."""
        from autoshuikou.families import primary

        chunks: list[list[torch.Tensor]] = []
        self.model.eval()
        with torch.no_grad():
            for inputs, _ in self.batches("val_data"):
                out = call(self.model, inputs)
                outs = list(out) if isinstance(out, tuple | list) else [primary(out)]
                chunks.append(outs)
        return [torch.cat(parts) for parts in zip(*chunks, strict=True)]


def iterate_batches(data: Iterable[Batch], what: str) -> Iterator[Batch]:
    """Yield ``(inputs, targets)`` pairs, or fail with a message naming ``what``."""
    for i, batch in enumerate(data):
        if not (isinstance(batch, tuple | list) and len(batch) == 2):
            raise UserError(
                f"task {what} batch {i} is a {type(batch).__name__}, not an (inputs, targets) pair",
                "make the data yield (inputs, targets) tuples, as a DataLoader over a "
                "TensorDataset does",
            )
        inputs, targets = batch
        if isinstance(inputs, torch.Tensor | tuple | list | dict):
            yield inputs, torch.as_tensor(targets)
        else:
            yield torch.as_tensor(inputs), torch.as_tensor(targets)


def validate_task(task: object, source: str) -> Task:
    """Check the contract once, up front, so failures name the task and not a stage."""
    if not isinstance(task, Task):
        raise UserError(
            f"{source} returned a {type(task).__name__}, not an autoshuikou.Task",
            "return autoshuikou.Task(model=..., train_data=..., val_data=..., example_input=...)",
        )
    if task.family not in FAMILIES:
        raise UserError(
            f"{source}: Task.family {task.family!r} is not a model family",
            f"use one of {', '.join(sorted(FAMILIES))}",
        )
    if not isinstance(task.model, nn.Module):
        raise UserError(f"{source}: Task.model is not a torch.nn.Module", "pass the trained model")
    family = task.family_impl
    try:
        inputs = task.inputs
    except (ValueError, TypeError) as exc:
        raise UserError(
            f"{source}: Task.example_input does not fit the {family.name} family: {exc}",
            f"pass batch-1 tensors for {family.input_names}",
        ) from exc
    problem = family.check_example(inputs)
    if problem is not None:
        shape = "e.g. torch.zeros(1, 3, 32, 32)" if family.name == "classification" else ""
        raise UserError(
            f"{source}: Task.example_input: {problem}",
            f"pass one sample with the deployed shape {shape}".strip(),
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
    _check_model_runs(task, source)
    return task


def _check_model_runs(task: Task, source: str) -> None:
    """Run the model once on the example and on a first batch of each data set, so that a
    mismatch is one message now rather than a traceback from a stage later."""
    family = task.family_impl
    task.model.eval()
    batches: list[tuple[str, Inputs, torch.Tensor | None]] = [
        ("Task.example_input", task.inputs, None)
    ]
    for what in ("train_data", "val_data"):
        raw_inputs, first_targets = next(iterate_batches(getattr(task, what), what))
        try:
            inputs = family.named_inputs(raw_inputs)
        except (ValueError, TypeError) as exc:
            raise UserError(
                f"{source}: the inputs of Task.{what} do not fit the {family.name} family: {exc}",
                f"make each batch (inputs, targets) with inputs for {family.input_names}",
            ) from exc
        batches.append((f"the first batch of Task.{what}", inputs, first_targets))
    for what, inputs, targets in batches:
        try:
            with torch.no_grad():
                outputs = primary(call(task.model, inputs))
        except Exception as exc:
            shapes = ", ".join(f"{n} {tuple(t.shape)} {t.dtype}" for n, t in inputs.items())
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise UserError(
                f"{source}: the model fails on {what} ({shapes}): {type(exc).__name__}: {reason}",
                "give inputs of the shape, dtype and channels the model takes",
            ) from exc
        if targets is None:
            continue
        batch = len(next(iter(inputs.values())))
        if outputs.shape[0] != batch or len(targets) != batch:
            raise UserError(
                f"{source}: {what} has {batch} inputs, {len(targets)} targets and the model "
                f"returns {outputs.shape[0]} outputs",
                "give one target per sample",
            )
        if outputs.dim() == 2 and not targets.is_floating_point() and len(targets):
            low, high = int(targets.min()), int(targets.max())
            if low < 0 or high >= outputs.shape[1]:
                raise UserError(
                    f"{source}: {what} has class labels {low}..{high} but the model has "
                    f"{outputs.shape[1]} outputs",
                    "number classes 0..outputs-1, or give a model with one output per class",
                )
