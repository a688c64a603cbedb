"""Latency of deployed artifacts: warm-up, many repeats, medians, interleaved with a reference.

Absolute times on a shared machine drift by 20-30% within minutes; two models timed in
alternating blocks drift together, so their ratio is what we trust. Mostly: slow phases
add a cost per operator that a small model feels more, so a re-measured ratio is read
off at one reference speed (:func:`ratio_at_reference_speed`).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from autoshuikou.measure.runtime import RuntimeSettings, open_runner

if TYPE_CHECKING:
    from autoshuikou.families import Feed
from autoshuikou.util import file_lock

# One timing at a time for this user on this host, and none while a worker trains
# (training holds it shared), so parallel workers never time each other's load. Per user:
# in a folder of the temporary directory that only the user can write (0700), the file
# 0600 and never opened through a link, so no one else can stall the timing or have it
# write through a planted link. (Not $XDG_RUNTIME_DIR: a worker started without a login
# session lacks it and would take another lock.)
LOCK_PATH = Path(
    os.environ.get(
        "AUTOSHUIKOU_LATENCY_LOCK",
        Path(tempfile.gettempdir()) / f"autoshuikou-{os.getuid()}" / "latency.lock",
    )
)
LOCK_HOW = (
    "delete it (autoshuikou creates it again, private to you), or set "
    "AUTOSHUIKOU_LATENCY_LOCK to a file in a folder only you can write"
)


def timing_lock(shared: bool = False) -> AbstractContextManager[None]:
    """The host's timing lock for this user: exclusive to time, ``shared`` to train."""
    return file_lock(LOCK_PATH, shared, private=LOCK_HOW)


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int

    @property
    def spread(self) -> float:
        """(p90 - p10) / median: the relative width of the middle 80% of runs."""
        return (self.p90_ms - self.p10_ms) / self.median_ms

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "spread": round(self.spread, 4)}


def _stats(seconds: Sequence[float]) -> LatencyStats:
    ms = np.asarray(seconds) * 1e3
    p10, median, p90 = np.percentile(ms, [10, 50, 90])
    return LatencyStats(float(median), float(p10), float(p90), len(ms))


def measure_interleaved(
    models: Sequence[Path],
    example_input: Feed | np.ndarray,
    settings: RuntimeSettings,
    seconds: float = 1.0,
    block: int = 10,
) -> list[LatencyStats]:
    """Time each model in alternating blocks (A x block, B x block, A ...) for ``seconds``.

    Each block's first run is discarded, so every model is timed with warm caches, as a
    deployed model serving a stream of requests is.
    """
    with timing_lock(), ExitStack() as stack:
        runners = [stack.enter_context(open_runner(path, settings)) for path in models]
        warm_until = time.perf_counter() + min(0.3, seconds / 3)
        while time.perf_counter() < warm_until:
            for run in runners:
                run(example_input)
        samples = interleaved_samples(runners, example_input, seconds, block)
    return [_stats(times) for times in samples]


def interleaved_samples(
    runners: Sequence[Callable[[Any], object]], example_input: Any, seconds: float, block: int = 10
) -> list[list[float]]:
    """One timing window: each runner in turn for ``block`` runs, its first one dropped
    (warm caches), for ``seconds`` and at least three rounds; each runner's run times in s."""
    samples: list[list[float]] = [[] for _ in runners]
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < 3 or time.perf_counter() < deadline:
        for run, times in zip(runners, samples, strict=True):
            run(example_input)
            for _ in range(block - 1):
                start = time.perf_counter()
                run(example_input)
                times.append(time.perf_counter() - start)
        rounds += 1
    return samples


# How the final re-measurement and `verify` time a model: many short windows, so each
# model's windows sample the machine's speed states many times over (with 5-10 windows,
# two re-measurements minutes apart missed +-10% for 4-16% of models: docs/results/latency-truth.md).
REMEASURE_SECONDS = 0.25
REMEASURE_MIN_WINDOWS = 20
REMEASURE_MAX_WINDOWS = 40
MAX_SPEED_EXPONENT = 2.0  # sanity bound on gamma below; measured 0.1-1.4 on this machine


@dataclass(frozen=True)
class RatioStats:
    """Latency of a model relative to a reference, over several separate timing windows."""

    ratio: float  # at the reference speed asked for (see measure_ratios), else median_ratio
    median_ratio: float  # median over windows of candidate median / reference median
    windows: tuple[float, ...]  # each window's ratio
    reference_windows: tuple[float, ...]  # the reference's median in each window, ms
    speed_exponent: float  # gamma in ratio ~ reference time ** gamma (0: not normalized)
    candidate_ms: float  # median over windows of the candidate's median
    reference_ms: float

    @property
    def spread(self) -> float:
        """(max - min) / median of the window ratios: how much the machine moved meanwhile."""
        return (max(self.windows) - min(self.windows)) / self.median_ratio

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "spread": round(self.spread, 4)}


def ratio_at_reference_speed(
    ratios: np.ndarray, reference_times: np.ndarray, reference_ms: float
) -> tuple[float, float]:
    """(ratio, gamma): the ratio expected in a window where the reference takes ``reference_ms``.

    This machine has slow phases lasting seconds to minutes that add a roughly fixed cost to
    every operator, so they weigh more on a small model than on the baseline: a model's
    ratio rises with the reference's time, ratio ~ t_ref ** gamma. gamma is fitted over the
    model's own windows (Theil-Sen: the median of pairwise slopes, robust to odd windows),
    and the ratio is read off at one fixed reference time, so measurements taken in
    different phases agree (their spread halved: docs/results/latency-truth.md).
    """
    x = np.log(reference_times / reference_ms)
    y = np.log(ratios)
    i, j = np.triu_indices(len(x), 1)
    dx, dy = x[j] - x[i], y[j] - y[i]
    apart = np.abs(dx) > 1e-6
    gamma = float(np.median(dy[apart] / dx[apart])) if apart.any() else 0.0
    gamma = float(np.clip(gamma, 0.0, MAX_SPEED_EXPONENT))
    return float(np.exp(np.median(y - gamma * x))), gamma


def measure_ratio(
    model: Path,
    reference: Path,
    example_input: Feed | np.ndarray,
    settings: RuntimeSettings,
    seconds: float = REMEASURE_SECONDS,
    min_windows: int = REMEASURE_MIN_WINDOWS,
    max_windows: int = REMEASURE_MAX_WINDOWS,
    target_error: float = 0.01,
    at_reference_ms: float | None = None,
) -> RatioStats:
    """One model's latency ratio to ``reference``: see :func:`measure_ratios`."""
    (stats,) = measure_ratios(
        [model],
        reference,
        example_input,
        settings,
        seconds,
        min_windows,
        max_windows,
        target_error,
        at_reference_ms,
    )
    return stats


def measure_ratios(
    models: Sequence[Path],
    reference: Path,
    example_input: Feed | np.ndarray,
    settings: RuntimeSettings,
    seconds: float = REMEASURE_SECONDS,
    min_windows: int = REMEASURE_MIN_WINDOWS,
    max_windows: int = REMEASURE_MAX_WINDOWS,
    target_error: float = 0.01,
    at_reference_ms: float | None = None,
    tick: Callable[[], None] = lambda: None,
) -> list[RatioStats]:
    """Each model's latency ratio to ``reference``: the median over separate interleaved windows.

    The machine's speed moves in phases lasting seconds, and small and large models do not
    move together, so one long timing can sit in one phase. The models take turns, one
    window each per round, so each model's windows spread over the whole measurement
    instead of falling into one phase. A model gets windows until the median's relative
    standard error (IQR / median / sqrt(n), roughly) is below ``target_error``, or
    ``max_windows`` is reached.

    With ``at_reference_ms`` (the baseline's recorded latency), each ratio is the one
    expected when the reference takes that long (:func:`ratio_at_reference_speed`), so a
    measurement in a slow phase of the machine and one in a fast phase report the same.
    """
    pairs: list[list[tuple[LatencyStats, LatencyStats]]] = [[] for _ in models]

    def settled(i: int) -> bool:
        n = len(pairs[i])
        if n >= max_windows:
            return True
        if n < min_windows:
            return False
        ratios = [c.median_ms / r.median_ms for c, r in pairs[i]]
        q25, median, q75 = np.percentile(ratios, [25, 50, 75])
        return bool((q75 - q25) / median / np.sqrt(n) <= target_error)

    while not all(settled(i) for i in range(len(models))):
        for i, model in enumerate(models):
            if not settled(i):
                candidate, base = measure_interleaved(
                    [model, reference], example_input, settings, seconds
                )
                pairs[i].append((candidate, base))
        tick()  # one round: a window of every model not yet settled
    results = []
    for windows in pairs:
        ratios = np.array([c.median_ms / r.median_ms for c, r in windows])
        reference_times = np.array([r.median_ms for _, r in windows])
        median_ratio = float(np.median(ratios))
        ratio, gamma = (
            ratio_at_reference_speed(ratios, reference_times, at_reference_ms)
            if at_reference_ms
            else (median_ratio, 0.0)
        )
        results.append(
            RatioStats(
                ratio=ratio,
                median_ratio=median_ratio,
                windows=tuple(round(float(r), 4) for r in ratios),
                reference_windows=tuple(round(float(t), 4) for t in reference_times),
                speed_exponent=round(gamma, 3),
                candidate_ms=float(np.median([c.median_ms for c, _ in windows])),
                reference_ms=float(np.median(reference_times)),
            )
        )
    return results
