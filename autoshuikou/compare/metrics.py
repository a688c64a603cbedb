"""Numbers that compare fronts: 2-D hypervolume, dominance, and a rank test across seeds.

A point is (latency ratio, metric retained): latency is minimised, the metric maximised.
"""

from __future__ import annotations

from collections.abc import Sequence

from scipy.stats import mannwhitneyu

XY = tuple[float, float]


def dominates_or_equals(a: XY, b: XY) -> bool:
    """a is at least as fast and at least as accurate as b."""
    return a[0] <= b[0] and a[1] >= b[1]


def pareto_front(points: Sequence[XY]) -> list[XY]:
    """The points no other point beats in both coordinates, fastest first (duplicates once)."""
    front: list[XY] = []
    for x, y in sorted(set(points), key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def hypervolume(points: Sequence[XY], reference: XY) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (slowest, least accurate).

    Points at or beyond the reference in either coordinate add nothing.
    """
    ref_x, ref_y = reference
    inside = [(x, y) for x, y in points if x < ref_x and y > ref_y]
    front = pareto_front(inside)
    area = 0.0
    for i, (x, y) in enumerate(front):
        right = front[i + 1][0] if i + 1 < len(front) else ref_x
        area += (right - x) * (y - ref_y)
    return area


def hypervolume_curve(points: Sequence[XY | None], reference: XY) -> list[float]:
    """Hypervolume after each trial, in trial order; ``None`` is a trial with no feasible point."""
    seen: list[XY] = []
    curve = []
    for point in points:
        if point is not None:
            seen.append(point)
        curve.append(hypervolume(seen, reference))
    return curve


def first_reaching(curve: Sequence[float], target: float) -> int | None:
    """1-based trial count at which ``curve`` first reaches ``target``; None if never.

    Equal fronts give areas that differ in the last bits, hence the relative tolerance.
    """
    return next((i + 1 for i, v in enumerate(curve) if v >= target * (1 - 1e-9)), None)


def greater_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """One-sided Mann-Whitney U (exact): p for "values in a tend to exceed those in b".

    With 3 seeds against 3 the smallest p possible is 0.05.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    if len(set(a) | set(b)) == 1:
        return 1.0  # all equal: no evidence either way
    return float(mannwhitneyu(a, b, alternative="greater", method="exact").pvalue)
