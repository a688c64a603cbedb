"""Ctrl-C and SIGTERM: unwind at once, and remember it in case the unwinding gets lost.

Python cannot raise from a signal handler that runs inside a destructor or a weakref
callback: the KeyboardInterrupt is printed as "Exception ignored" and dropped. A search
that lost it would run to the end and exit 0, so the flag is checked between trials too.
"""

from __future__ import annotations

import signal
from types import FrameType

_interrupted = False


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def install_handlers() -> None:
    """Route SIGINT and SIGTERM through :func:`_on_signal` (main thread only)."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


def raise_if_interrupted() -> None:
    """Raise the KeyboardInterrupt a signal asked for, if it has not unwound yet."""
    if _interrupted:
        raise KeyboardInterrupt


def reset() -> None:
    """Forget an earlier signal (a long-lived process that handled it and goes on)."""
    global _interrupted
    _interrupted = False
