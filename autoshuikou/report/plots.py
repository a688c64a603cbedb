"""PNG charts (matplotlib, no display needed): a search's front, and comparisons of strategies.

Latency is always the ratio to the fp32 baseline measured interleaved on this machine, and
the metric is relative to the baseline's, so charts from different runs share axes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt
import numpy as np

from autoshuikou.util import atomic_write_bytes

XY = tuple[float, float]  # (latency ratio, metric retained)


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _columns(points: Sequence[XY]) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def _staircase(front: Sequence[XY], right: float) -> tuple[list[float], list[float]]:
    """The boundary of what the points dominate (min latency, max metric) up to ``right``.

    Points dominated in these two coordinates (Pareto only through size) add no step.
    """
    xs: list[float] = []
    ys: list[float] = []
    for x, y in sorted(front, key=lambda p: (p[0], -p[1])):
        if ys and y <= ys[-1]:
            continue
        if ys:
            xs.append(x)
            ys.append(ys[-1])
        xs.append(x)
        ys.append(y)
    if xs:
        xs.append(right)
        ys.append(ys[-1])
    return xs, ys


def _latency_axis(ax: Any, xs: Sequence[float], budget_ratio: float) -> None:
    """A log latency axis from just left of the fastest point to just right of the fp32
    baseline: the front sits at a few percent of the baseline, so a linear axis from 0 to 1
    would crowd every model of interest into its left tenth. Ticks read as percentages."""
    finite = [x for x in [*xs, budget_ratio] if np.isfinite(x) and x > 0]
    left, right = min(finite) / 1.25, max(1.0, *finite) * 1.15
    ax.set_xscale("log")
    ax.set_xlim(left, right)
    # Fixed ticks: a bare log axis under a decade wide shows one tick or none.
    mantissas = (1, 1.5, 2, 3, 4, 5, 7) if right / left < 10 else (1, 2, 5)
    ticks = [m * 10.0**e for e in range(-4, 2) for m in mantissas]
    ax.xaxis.set_major_locator(
        matplotlib.ticker.FixedLocator([t for t in ticks if left <= t <= right])
    )
    ax.xaxis.set_major_formatter(
        matplotlib.ticker.FuncFormatter(lambda v, _p: f"{v:.0%}" if v >= 0.01 else f"{v:.1%}")
    )
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("latency, % of the fp32 baseline (measured; log scale)")


def plot_search_front(
    path: Path,
    trials: Sequence[tuple[XY, bool]],
    front: Sequence[XY],
    budget_ratio: float,
    title: str,
    labels: Sequence[int] = (),
    int8_reference: XY | None = None,
) -> None:
    """Every measured trial (feasible or not), the Pareto front labelled by trial
    (``labels``, in ``front``'s order), the budget, the fp32 baseline and the whole-model
    int8 reference."""
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    feasible = [p for p, ok in trials if ok]
    infeasible = [p for p, ok in trials if not ok]
    if infeasible:
        ax.scatter(*_columns(infeasible), marker="x", c="0.6", label="over budget or floor")
    if feasible:
        ax.scatter(*_columns(feasible), c="tab:blue", s=18, label="feasible trial")
    if front:
        ax.plot(*_staircase(front, budget_ratio), c="tab:red", label="front (latency, metric)")
        ax.scatter(*_columns(front), c="tab:red", s=30, zorder=3, label="Pareto model (+ size)")
        for (x, y), number in zip(front, labels, strict=False):
            ax.annotate(f"#{number}", (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7)
    ax.scatter([1.0], [1.0], marker="*", s=90, c="k", zorder=3, label="fp32 baseline")
    if int8_reference is not None:
        ax.scatter(
            *_columns([int8_reference]),
            marker="D",
            s=36,
            c="tab:green",
            zorder=3,
            label="whole-model int8",
        )
    ax.axvline(budget_ratio, ls="--", c="k", lw=1, label=f"budget {budget_ratio:.0%}")
    xs = [p[0] for p, _ in trials] + ([int8_reference[0]] if int8_reference else [])
    _latency_axis(ax, xs, budget_ratio)
    ax.set(ylabel="metric / baseline", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_fronts(
    path: Path,
    fronts: Mapping[str, Sequence[XY]],
    points: Mapping[str, Sequence[XY]],
    budget_ratio: float,
    metric_floor: float,
    title: str,
) -> None:
    """Each strategy's front (all seeds pooled) on one chart; ``points`` as bare markers."""
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, front) in enumerate(fronts.items()):
        if front:
            ax.plot(*_staircase(front, budget_ratio), c=colors[i % len(colors)], label=name)
    markers = "sD^v<>"
    for i, (name, pts) in enumerate(points.items()):
        if pts:
            ax.scatter(*_columns(pts), marker=markers[i % len(markers)], c="k", label=name)
    ax.axvline(budget_ratio, ls="--", c="k", lw=1, label=f"budget {budget_ratio:.0%}")
    ax.axhline(metric_floor, ls=":", c="0.5", lw=1)
    xs = [x for pts in [*fronts.values(), *points.values()] for x, _y in pts]
    _latency_axis(ax, xs, budget_ratio)
    ax.set(ylabel="metric / baseline", title=title)
    ax.set_ylim(bottom=metric_floor - 0.01)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_hypervolume(path: Path, curves: dict[str, list[list[float]]], title: str) -> None:
    """Hypervolume after each trial: mean over seeds, shaded between min and max."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for name, per_seed in curves.items():
        length = min(len(c) for c in per_seed)
        if not length:
            continue
        data = np.array([c[:length] for c in per_seed])
        x = np.arange(1, length + 1)
        (line,) = ax.plot(x, data.mean(axis=0), label=name)
        ax.fill_between(x, data.min(axis=0), data.max(axis=0), color=line.get_color(), alpha=0.15)
    ax.set(xlabel="trials finished", ylabel="hypervolume", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_hypervolume_seconds(
    path: Path, runs: dict[str, list[tuple[list[float], list[float]]]], title: str
) -> None:
    """Hypervolume against wall time: one step line per seed, a colour per strategy."""
    fig, ax = plt.subplots(figsize=(7.2, 4.4))
    for name, per_seed in runs.items():
        color = None
        for i, (seconds, curve) in enumerate(per_seed):
            if not curve:
                continue
            (line,) = ax.step(
                [0.0, *seconds],
                [0.0, *curve],
                where="post",
                color=color,
                alpha=0.8,
                label=name if i == 0 else None,
            )
            color = line.get_color()
    ax.set(xlabel="seconds (latency profiling included where used)", ylabel="hypervolume")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
