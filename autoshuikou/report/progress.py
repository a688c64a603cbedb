"""Progress: live tqdm bars on a terminal (trials, and long steps with the time left), plain
lines otherwise (a log file, CI), so nothing in a log is a terminal escape."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm import tqdm

from autoshuikou.study.predictor import judged_on_metric

Tick = Callable[[], None]
PLAIN_REPORTS = 4  # a long step without a terminal says where it is this many times


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.started = time.monotonic()
        self.total = 0
        self.done = 0
        self.best = "none feasible yet"
        self._bar: tqdm[Any] | None = None

    def line(self, text: str) -> None:
        """A permanent line (a live bar is redrawn below it)."""
        if self.live:
            tqdm.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def begin(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        self.started = time.monotonic()
        if self.live:
            self._bar = tqdm(
                total=total, initial=done, desc="trials", file=self.stream, dynamic_ncols=True
            )

    def stage(self, trial: int, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"#{trial} {text} | best: {self.best}")

    @contextmanager
    def steps(self, what: str, total: int) -> Iterator[Tick]:
        """A long step of ``total`` parts: call the yielded tick after each. Live: a bar with
        the time left; otherwise a few plain lines with the estimate."""
        started = time.monotonic()
        count = 0
        bar = (
            tqdm(total=total, desc=what, file=self.stream, dynamic_ncols=True, leave=False)
            if self.live
            else None
        )

        def tick() -> None:
            nonlocal count
            count += 1
            if bar is not None:
                bar.update(1)
            elif count < total and count % max(1, total // PLAIN_REPORTS) == 0:
                elapsed = time.monotonic() - started
                left = elapsed / count * (total - count)
                self.line(
                    f"  {what}: {count}/{total}, {_clock(elapsed)} so far, ~{_clock(left)} left"
                )

        try:
            yield tick
        finally:
            if bar is not None:
                bar.close()

    def trial_done(self, number: int, attrs: dict[str, Any], state: str, best: str) -> None:
        self.best = best
        elapsed = _clock(time.monotonic() - self.started)
        if state == "PRUNED":  # screened-out plans count towards --trials, rejected ones not
            screened = judged_on_metric(attrs)
            self._advance(screened)
            what = "" if screened else " rejected before fine-tuning:"
            self.line(
                f"[{self.done}/{self.total} {elapsed}] trial {number}{what} {attrs.get('rejected', '')}"
            )
            return
        self._advance(state == "COMPLETE")
        if state != "COMPLETE":
            self.line(
                f"[{self.done}/{self.total} {elapsed}] trial {number} {state.lower()}: {attrs.get('error', '')}"
            )
            return
        label = attrs.get("warm_start") or attrs.get("fixed")
        tag = f" ({attrs['reference']} reference)" if attrs.get("reference") else ""
        tag = f" ({label})" if label else tag
        self.line(
            f"[{self.done}/{self.total} {elapsed}] trial {number}{tag}: "
            f"metric {attrs['metric']:.4f}  latency {attrs['latency_ms']:.3f} ms "
            f"({attrs['latency_ratio']:.2f}x baseline)  {attrs['size_bytes'] / 1024:.0f} KiB  "
            f"{'feasible' if attrs['feasible'] else 'over budget'} | best: {best}"
        )

    def _advance(self, counted: bool) -> None:
        self.done += counted
        if self._bar is not None and counted:
            self._bar.update(1)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
