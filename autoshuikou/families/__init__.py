"""Model families by name: one module each, registered here (as ``runtimes/`` does)."""

from __future__ import annotations

from autoshuikou.errors import UserError
from autoshuikou.families._base import (
    Feed,
    Inputs,
    InputSpec,
    Metric,
    ModelFamily,
    call,
    primary,
    to_feed,
    top1_accuracy,
)
from autoshuikou.families.classification import Classification
from autoshuikou.families.detection import Detection
from autoshuikou.families.encoder import Encoder, EncoderClassifier, SequenceClassifier

__all__ = [
    "CLASSIFICATION",
    "FAMILIES",
    "Classification",
    "Detection",
    "Encoder",
    "EncoderClassifier",
    "Feed",
    "InputSpec",
    "Inputs",
    "Metric",
    "ModelFamily",
    "SequenceClassifier",
    "call",
    "get_family",
    "primary",
    "to_feed",
    "top1_accuracy",
]

FAMILIES: dict[str, type[ModelFamily]] = {
    Classification.name: Classification,
    Encoder.name: Encoder,
    Detection.name: Detection,
}
DEFAULT_FAMILY = Classification.name
# The family of a model given without one (families hold no state: one object serves all).
CLASSIFICATION = Classification()


def get_family(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise UserError(
            f"unknown model family {name!r}", f"use one of {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[name]()
