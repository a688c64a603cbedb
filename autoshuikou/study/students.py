"""Trained students kept for plans that differ only in precision.

Precision is applied after fine-tuning (post-training quantization, ``trial.build_artifact``),
so two plans with the same pruning and the same fine-tuning train the same student: the
same seed draws the same batches (``compress.distill``). The uniform plans the study starts
from come in such pairs, fp32 then int8 at each ratio; the second takes the first's student
instead of training it again, and records which trial it came from.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass

import torch

from autoshuikou.plan import Plan

# The trial attribute (and metrics.json key) naming the trial whose student a trial took.
STUDENT_FROM_ATTR = "student_from"
# Twins are trained one after the other (the uniform pairs are queued side by side), so a
# few recent students are enough; each is a whole model's weights in memory.
KEPT = 2


def student_key(plan: Plan, seed: int, device: str) -> str:
    """What decides the trained student: everything in ``plan`` but its precisions (its
    fine-tuning included), the seed and the device it trains on."""
    facts = plan.to_dict()
    facts.pop("precision")
    facts.update(seed=seed, device=device)
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class KeptStudent:
    trial: int  # the trial that trained it
    weights: dict[str, torch.Tensor]  # its state dict (CPU)
    screen_metric: float | None  # its metric at the rung, where there was one


class StudentStore:
    """The last ``KEPT`` trained students of this worker, by :func:`student_key`."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._students: OrderedDict[str, KeptStudent] = OrderedDict()

    def get(self, key: str) -> KeptStudent | None:
        return self._students.get(key)

    def put(self, key: str, student: KeptStudent) -> None:
        self._students[key] = student
        self._students.move_to_end(key)
        while len(self._students) > self.kept:
            self._students.popitem(last=False)
