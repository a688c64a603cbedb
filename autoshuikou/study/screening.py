"""Screening: spend full fine-tuning only on plans that could join the front.

A plan's latency and size do not depend on its training, so both are measured on its
untrained artifact first (seconds); a plan over the budget is rejected there, and for a
plan that is trained that timing is its latency (the front is timed again at the end). Its
fine-tuning then starts as it would in any case, and after ``SCREEN_EPOCHS`` of it (a rung,
as in successive halving) the student is scored in PyTorch and compared like with like:
with the trials already trained fully, scored at the same point of their own training. If
one of those is at least as fast, as small, and scored better by ``TOLERANCE``, the plan is
screened out: recorded in the study (pruned, with the reason) and its training stopped.
Otherwise training simply goes on, so a promoted plan costs nothing extra and ends as the
very model `--fidelity full` trains.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

from optuna.trial import FrozenTrial
from torch import nn

from autoshuikou.measure.size import artifact_bytes
from autoshuikou.plan import Plan
from autoshuikou.study.context import RunContext
from autoshuikou.study.pareto import best_beating, is_feasible
from autoshuikou.study.trial import (
    TIMED_UNTRAINED,
    Stage,
    Timing,
    build_artifact,
    time_against_baseline,
)

SCREEN_EPOCHS = 0.5  # the rung: this much of the plan's own fine-tuning, then the check
SCREEN_TIMING_SHARE = 0.25  # of --measure-seconds: the untrained artifact, interleaved
# The untrained artifact is only timed and sized: its int8 scales change neither its graph
# nor its kernels (on ResNet-18: the same nodes, sizes within 2 bytes, latency within the
# timing's order effect), so it is calibrated on a few samples (0.5 s a build, not 0.7-0.8).
TIMING_CALIBRATION_SAMPLES = 8
# A plan measured untrained over budget x (1 + this) is rejected: the margin covers the
# scatter of this short timing against the front's final re-measurement.
LATENCY_MARGIN = 0.05
# Screened metrics closer than this share of the baseline metric count as a tie: promoted.
TOLERANCE = 0.01


@dataclass(frozen=True)
class Screen:
    """What screening learned about a plan, stored with its trial (``screen_*`` attributes)."""

    latency_ms: float  # drift-corrected, as a trial's latency_ms
    latency_ratio: float
    size_bytes: int
    metric: float | None  # PyTorch, at the rung; None before it (or rejected on latency)
    seconds: float  # timing the untrained artifact (the rung's scoring is recorded apart)
    # The timing itself: the trained model's latency too (``trial.TIMED_UNTRAINED``).
    timing: Timing | None = field(default=None, compare=False)
    # The pruned student as ``prune`` made it, before anything ran on it: training starts
    # from this copy instead of pruning the teacher again (the same module either way).
    student: nn.Module | None = field(default=None, compare=False, repr=False)

    def to_attrs(self) -> dict[str, Any]:
        # The fields left out of comparison (timing, student) are objects, not attributes.
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        return {f"screen_{k}": v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Screened:
    """A fully trained trial as screening compares with it."""

    trial: int
    latency_ms: float  # its full measurement
    size_bytes: int
    screen_metric: float


def screened_trials(trials: Iterable[FrozenTrial]) -> list[Screened]:
    """The feasible, fully trained trials among ``trials`` that were screened."""
    found = []
    for t in trials:
        attrs = t.user_attrs
        if "screen_metric" in attrs and "metric" in attrs and is_feasible(t):
            found.append(
                Screened(t.number, attrs["latency_ms"], attrs["size_bytes"], attrs["screen_metric"])
            )
    return found


def dominating(screen: Screen, trained: Iterable[Screened], tolerance: float) -> Screened | None:
    """A trained trial at least as fast and small as ``screen`` whose screened metric beat it
    by ``tolerance`` (absolute), the best such; None: the plan could join the front."""
    assert screen.metric is not None
    needed = screen.metric + tolerance
    return best_beating(
        screen.latency_ms, screen.size_bytes, needed, trained, lambda t: t.screen_metric
    )


def time_untrained(
    ctx: RunContext,
    number: int,
    plan: Plan,
    stage: Stage,
    inspect: Callable[[nn.Module], None] | None = None,
) -> Screen:
    """Latency and size of ``plan``'s untrained artifact (a scratch build, removed after);
    ``inspect`` is given the untrained student before export."""
    started = time.monotonic()
    kept: list[nn.Module] = []

    def look(student: nn.Module) -> None:
        kept.append(copy.deepcopy(student))  # before ``inspect`` (BatchNorm recalibration)
        if inspect is not None:
            inspect(student)

    work = ctx.trials_dir / f".{number:04d}.screen"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        path = work / ctx.artifact_name
        few = [
            {name: array[:TIMING_CALIBRATION_SAMPLES] for name, array in feed.items()}
            for feed in ctx.calibration[:1]
        ]
        build_artifact(ctx, plan, path, stage, epochs=0, inspect=look, calibration=few)
        stage("timing the untrained model")
        timing = time_against_baseline(
            ctx, path, ctx.measure_seconds * SCREEN_TIMING_SHARE, TIMED_UNTRAINED
        )
        size = artifact_bytes(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = round(time.monotonic() - started, 2)
    ratio = timing.ratio
    return Screen(ratio * ctx.baseline.latency_ms, ratio, size, None, seconds, timing, kept[0])
