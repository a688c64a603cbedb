"""Plans that fail to train, caught after their first epoch.

Some sampled plans collapse: too much pruned in one place, or a learning rate too high for
what is left, and the student ends where a model that gives every input the same answer
would (on a 10-class task, about 10% top-1) while the teacher scores far above. Trained to
the end it stays there, and its epochs are lost. After ``COLLAPSE_EPOCHS`` of a longer
fine-tuning the student is scored; when it has recovered less than ``COLLAPSE_SHARE`` of
the teacher's lead over that constant answer, training stops and the trial is recorded as
collapsed, with both scores. A student above the line trains on unchanged (the check runs
in eval mode and changes nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autoshuikou.compress.distill import Rung
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.tasks import Task

COLLAPSE_EPOCHS = 1.0  # the check: after this much fine-tuning
# Collapsed: less than this share of the teacher's lead over a constant answer recovered.
COLLAPSE_SHARE = 0.25


def constant_answer_metric(task: Task) -> float:
    """What a model that answers every validation input alike (with the teacher's mean
    output) scores: where a collapsed student sits (top-1: the largest class's share; mAP:
    about 0). Needs nothing of the family: the task's own metric scores it."""
    outputs = task.teacher_outputs[0]
    targets = torch.cat([target for _, target in task.batches("val_data")])
    constant = outputs.mean(dim=0, keepdim=True).expand_as(outputs)
    return task.score(constant, targets)


@dataclass(frozen=True)
class CollapseLine:
    """Where a run's students count as collapsed: under ``floor`` after COLLAPSE_EPOCHS."""

    constant: float  # what a constant answer scores
    teacher: float  # what the fp32 baseline scores
    floor: float

    @classmethod
    def of(cls, task: Task, teacher_metric: float) -> CollapseLine | None:
        """The line for ``task``; None when the teacher is not above a constant answer
        (then a collapse cannot be told from the task's metric)."""
        constant = constant_answer_metric(task)
        lead = teacher_metric - constant
        if lead <= 0.0:
            return None
        return cls(constant, teacher_metric, constant + COLLAPSE_SHARE * lead)

    def rung(self, task: Task, epochs: int, stage: Callable[[str], None]) -> Rung | None:
        """The check after COLLAPSE_EPOCHS of an ``epochs``-long fine-tuning (None when it
        is no longer: nothing left to save): under the floor, training stops and the reason
        names the scores; the score goes to the rung's facts either way."""
        if epochs <= COLLAPSE_EPOCHS:
            return None

        def check(student: torch.nn.Module) -> bool:
            started = time.monotonic()
            stage(f"checking for collapse after {COLLAPSE_EPOCHS:g} epoch")
            metric = torch_metric(student, task)
            rung.facts.update(
                collapse_metric=metric,
                collapse_floor=self.floor,
                collapse_check_seconds=round(time.monotonic() - started, 2),
            )
            if metric >= self.floor:
                return True
            rung.facts["collapsed"] = True
            rung.reason = (
                f"collapsed: {task.metric_name} {metric:.4f} after {COLLAPSE_EPOCHS:g} of "
                f"{epochs} epochs, under {self.floor:.4f} (a constant answer scores "
                f"{self.constant:.4f}, the teacher {self.teacher:.4f}); not trained further"
            )
            return False

        rung = Rung(COLLAPSE_EPOCHS, check)
        return rung
