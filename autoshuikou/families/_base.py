"""The model-family contract: what the rest of the pipeline must not assume about a model.

A family names the model's inputs (names, dtypes, dynamic axes) and outputs, turns a batch
into named inputs and targets, owns the distillation loss, the default metric and any
extra scores, and says which layers keep their width. Classification (one float image
in, logits out) is one family; a transformer encoder (token ids and a mask in) another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

# Named model inputs in forward-argument order: the model is called as model(*inputs.values()).
Inputs = dict[str, torch.Tensor]
# The same inputs as numpy arrays, as a runtime's session takes them.
Feed = dict[str, np.ndarray]
# metric(primary outputs, targets) -> score, higher is better, over the whole validation set.
Metric = Callable[[torch.Tensor, torch.Tensor], float]


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: torch.dtype
    dynamic_axes: Mapping[int, str]  # axis -> symbolic name in the exported graph


def to_feed(inputs: Inputs) -> Feed:
    """Numpy arrays as ONNX Runtime takes them: floats as float32, integers as int64."""
    return {
        name: t.detach().cpu().float().numpy()
        if t.is_floating_point()
        else t.detach().cpu().long().numpy()
        for name, t in inputs.items()
    }


def call(model: torch.nn.Module, inputs: Inputs) -> Any:
    """Run ``model`` on named inputs (positionally, in the family's input order)."""
    return model(*inputs.values())


def primary(outputs: Any) -> torch.Tensor:
    """The output the metric and the distillation read: the first one."""
    if isinstance(outputs, tuple | list):
        return primary(outputs[0])
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"the model returned a {type(outputs).__name__}, not a tensor")
    return outputs


def top1_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of samples whose highest logit is the target class."""
    return float((logits.argmax(dim=1) == targets).float().mean().item())


class ModelFamily(ABC):
    """One kind of model. Subclass it, register it in ``families/__init__.py``."""

    name: ClassVar[str]
    inputs: ClassVar[tuple[InputSpec, ...]]
    outputs: ClassVar[tuple[str, ...]]  # exported output names; the first is the primary one
    # Which int8 forms ONNX Runtime may use, measured per machine among these:
    # "dynamic" (weights int8 offline, activations quantized at run time) fits MatMul-heavy
    # models; convolutions have no fast dynamic kernels, so CNN families keep static only.
    int8_forms: ClassVar[tuple[str, ...]] = ("QDQ", "QOperator")
    # The axis of an intermediate feature map that holds channels (feature distillation).
    channel_axis: ClassVar[int] = 1
    # The shipped search space used when none is given (autoshuikou/space/).
    default_space: ClassVar[str] = "default.yaml"
    # Static int8 quantizes exactly the plan's int8 layers (True), or also the operators
    # between them that the runtime can run in int8 (False: a CNN's adds and pools).
    int8_only_plan_layers: ClassVar[bool] = False
    # Training inputs that calibrate static int8 (each costs an inference per build).
    calibration_samples: ClassVar[int] = 256

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    def named_inputs(self, x: Any) -> Inputs:
        """A batch's inputs (one tensor, a tuple in input order, or a mapping) as named tensors."""
        names = self.input_names
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            if missing:
                raise ValueError(f"inputs lack {missing}; {self.name} models take {names}")
            return {n: torch.as_tensor(x[n]) for n in names}
        if isinstance(x, tuple | list):
            if len(x) != len(names):
                raise ValueError(f"got {len(x)} input tensors; {self.name} models take {names}")
            return {n: torch.as_tensor(t) for n, t in zip(names, x, strict=True)}
        if len(names) != 1:
            raise ValueError(f"got one input tensor; {self.name} models take {names}")
        return {names[0]: torch.as_tensor(x)}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {spec.name: dict(spec.dynamic_axes) for spec in self.inputs}
        return axes | {name: {0: "batch"} for name in self.outputs}

    def check_example(self, inputs: Inputs) -> str | None:
        """Why ``inputs`` cannot be the deployed batch-1 example, or None when they can."""
        for spec in self.inputs:
            t = inputs[spec.name]
            if t.dim() < 2:
                return f"input {spec.name!r} has shape {tuple(t.shape)}: it needs a batch axis and a feature axis"
            if t.shape[0] != 1:
                return f"input {spec.name!r} has batch size {t.shape[0]}, not 1"
            if t.is_floating_point() != spec.dtype.is_floating_point:
                return f"input {spec.name!r} is {t.dtype}; {self.name} models take {spec.dtype}"
        return None

    @abstractmethod
    def distill_loss(
        self,
        student: Any,
        teacher: Any,
        targets: torch.Tensor,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(soft, hard) losses of one batch from the student's raw outputs and the teacher's
        primary output (one tensor: it is what ``compress.teacher_cache`` keeps)."""

    @property
    @abstractmethod
    def default_metric(self) -> tuple[Metric, str]:
        """(metric, name) used when a task gives none."""

    def extra_scores(
        self,
        outputs: Sequence[torch.Tensor],
        teacher_outputs: Sequence[torch.Tensor],
        targets: torch.Tensor,
    ) -> dict[str, float]:
        """Scores recorded beside the metric, from every output over the validation set."""
        return {}

    def keeps_width(self, module_types: Sequence[type]) -> bool:
        """Whether a channel group touching these module types must keep its width."""
        return False

    def width_kept(self, last_layer: str, terminal_layers: Sequence[str]) -> list[str]:
        """The layers whose output channels are never pruned, given the last Conv/Linear to
        run and every Conv/Linear that feeds no other: the model's one output layer."""
        return [last_layer]

    def fp32_layers(self, width_kept: Sequence[str]) -> list[str]:
        """Layers that stay fp32 in every plan (among ``width_kept``): none by default."""
        return []
