"""Pareto dominance over (metric up, latency down, size down[, energy down]): pure functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TypeVar

from optuna.trial import FrozenTrial, TrialState

# (metric, latency_ms, size_bytes[, energy_mj]): the metric is maximized, the rest minimized.
Point = tuple[float, ...]


def dominates(a: Point, b: Point) -> bool:
    """``a`` is no worse than ``b`` in every objective and better in at least one."""
    costs = list(zip(a[1:], b[1:], strict=True))
    no_worse = a[0] >= b[0] and all(x <= y for x, y in costs)
    better = a[0] > b[0] or any(x < y for x, y in costs)
    return no_worse and better


def pareto_indices(points: Sequence[Point]) -> list[int]:
    """Indices of the points no other point dominates; the first of exact duplicates only."""
    front: list[int] = []
    for i, p in enumerate(points):
        if any(dominates(q, p) for q in points):
            continue
        if any(points[j] == p for j in front):
            continue
        front.append(i)
    return front


def is_feasible(trial: FrozenTrial) -> bool:
    """Trained, measured, and within every constraint (budget, metric floor)."""
    return trial.state == TrialState.COMPLETE and all(v <= 0 for v in trial.constraints.values())


class Measured(Protocol):
    """A trained trial's cost, as the decision about an untrained plan compares it."""

    @property
    def latency_ms(self) -> float: ...

    @property
    def size_bytes(self) -> int: ...


M = TypeVar("M", bound=Measured)


def best_beating(
    latency_ms: float,
    size_bytes: int,
    needed: float,
    trained: Iterable[M],
    score: Callable[[M], float],
) -> M | None:
    """The best-scoring of ``trained`` at least as fast and as small as a plan of
    ``latency_ms`` and ``size_bytes`` whose ``score`` reached ``needed``; None: nothing
    trained beats the plan, which could join the front."""
    beaten = [
        t
        for t in trained
        if t.latency_ms <= latency_ms and t.size_bytes <= size_bytes and score(t) >= needed
    ]
    return max(beaten, key=score, default=None)
