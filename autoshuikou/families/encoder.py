"""Transformer encoders (BERT-class): token ids and an attention mask in; class logits and
the pooled sentence embedding out.

Attention heads are pruned whole (q, k, v and the output projection together, found by
Torch-Pruning's dependency graph: see ``compress.prune``), the FFN width per layer, and the
hidden width stays fixed: every residual add and LayerNorm is tied to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoshuikou.families._base import InputSpec
from autoshuikou.families.classification import Classification

TOKEN_AXES = {0: "batch", 1: "sequence"}


def embedding_cosine(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Mean cosine similarity of the pooled embeddings to the teacher's, sample by sample."""
    return float(F.cosine_similarity(student.float(), teacher.float(), dim=-1).mean().item())


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the hidden states over the unmasked tokens: the sentence embedding."""
    weights = attention_mask.unsqueeze(-1).to(states.dtype)
    pooled: torch.Tensor = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return pooled


class EncoderClassifier(nn.Module):
    """A Hugging Face encoder, mean pooling over the unmasked tokens, and a linear head.

    ``forward(input_ids, attention_mask) -> (logits, pooled embedding)``.
    """

    def __init__(self, backbone: nn.Module, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        config: Any = getattr(backbone, "config")  # noqa: B009  (a Hugging Face model's)
        hidden = int(config.hidden_size)
        self.head = nn.Linear(hidden, classes)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(states, attention_mask)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.embed(input_ids, attention_mask)
        return self.head(pooled), pooled


class SequenceClassifier(nn.Module):
    """A Hugging Face ``...ForSequenceClassification`` model as it is (its own pooling and
    head), with the encoder family's outputs: ``(logits, mean-pooled last hidden state)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        return out.logits, mean_pool(out.hidden_states[-1], attention_mask)


class Encoder(Classification):
    """A text classifier: distilled and scored on its logits as any classifier is."""

    name = "encoder"
    inputs = (
        InputSpec("input_ids", torch.int64, TOKEN_AXES),
        InputSpec("attention_mask", torch.int64, TOKEN_AXES),
    )
    outputs = ("logits", "embedding")
    int8_forms = ("dynamic", "QDQ")
    channel_axis = -1  # hidden states are (batch, tokens, hidden)
    default_space = "encoder.yaml"
    int8_only_plan_layers = True
    calibration_samples = 64  # a 128-token MiniLM inference costs ~30 ms

    def extra_scores(
        self,
        outputs: Sequence[torch.Tensor],
        teacher_outputs: Sequence[torch.Tensor],
        targets: torch.Tensor,
    ) -> dict[str, float]:
        if len(outputs) < 2 or len(teacher_outputs) < 2:
            return {}
        return {"embedding_cosine": embedding_cosine(outputs[1], teacher_outputs[1])}

    def keeps_width(self, module_types: Sequence[type]) -> bool:
        # A group that resizes a LayerNorm or an embedding is the hidden width.
        return any(issubclass(t, nn.LayerNorm | nn.Embedding) for t in module_types)
