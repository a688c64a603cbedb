"""Progress: a live status line on a terminal, plain lines otherwise."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO


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
        self._status_shown = False

    def _clear(self) -> None:
        if self.live and self._status_shown:
            self.stream.write("\r\033[K")
            self._status_shown = False

    def line(self, text: str) -> None:
        """A permanent line (the live status is redrawn below it)."""
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def begin(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        self.started = time.monotonic()

    def stage(self, trial: int, text: str) -> None:
        if not self.live:
            return
        width = shutil.get_terminal_size().columns - 1
        status = (
            f"trial {self.done + 1}/{self.total} (#{trial}) {text} | "
            f"elapsed {_clock(time.monotonic() - self.started)} | best: {self.best}"
        )
        self.stream.write("\r\033[K" + status[:width])
        self.stream.flush()
        self._status_shown = True

    def trial_done(self, number: int, attrs: dict[str, Any], state: str, best: str) -> None:
        self.best = best
        elapsed = _clock(time.monotonic() - self.started)
        if state == "PRUNED":  # screened-out plans count towards --trials, rejected ones not
            screened = "screen_metric" in attrs
            self.done += screened
            what = "" if screened else " rejected before fine-tuning:"
            self.line(
                f"[{self.done}/{self.total} {elapsed}] trial {number}{what} {attrs.get('rejected', '')}"
            )
            return
        self.done += state == "COMPLETE"
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
