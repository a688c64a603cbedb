"""Classifiers: one float input (an image batch), class logits out."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from autoshuikou.families._base import InputSpec, Metric, ModelFamily, primary, top1_accuracy


def soft_and_hard(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL between temperature-softened class distributions (scaled by T^2), and CE on labels."""
    soft = (
        F.kl_div(
            F.log_softmax(student / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )
    return soft, F.cross_entropy(student, targets)


class Classification(ModelFamily):
    name = "classification"
    inputs: ClassVar[tuple[InputSpec, ...]] = (InputSpec("input", torch.float32, {0: "batch"}),)
    outputs: ClassVar[tuple[str, ...]] = ("logits",)

    def distill_loss(
        self, student: Any, teacher: Any, targets: torch.Tensor, temperature: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return soft_and_hard(primary(student), primary(teacher), targets, temperature)

    @property
    def default_metric(self) -> tuple[Metric, str]:
        return top1_accuracy, "top1_accuracy"
