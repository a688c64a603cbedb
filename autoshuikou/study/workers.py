"""Who runs a trial, whether that worker is still alive, and what a waiting worker waits for.

Optuna's heartbeat exists for database storages only, so every worker also beats on its
running trial's user attributes (any storage, the journal file included), and tags the
trial with an identity that survives PID reuse and container restarts: host name, boot
id and the process's start time. A trial is given up (failed, its plan queued again) when

* its worker ran on this machine, in this boot, and that process is gone (at once), or
* its heartbeat has not changed for GRACE_SECONDS as this process sees it: measured on
  this process's own clock, so the clocks of other hosts never matter.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial

from autoshuikou.study.optuna_adapter import fail_and_retry, trial_id

WORKER_ATTR = "worker"  # host:pid, for people (status, show, the dashboard)
IDENTITY_ATTR = "worker_id"  # WorkerIdentity as a dict, for the liveness check
HEARTBEAT_ATTR = "heartbeat"  # the worker's wall-clock time at its last beat
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20  # a trial whose heartbeat has not moved for this long is given up
# A heartbeat older than this by our own clock is stale at first sight (a study resumed a
# day later need not wait out the grace period); generous, so that skewed clocks are safe.
STALE_AT_SIGHT_SECONDS = 300


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # not Linux: the pid check then needs the host name alone
        return ""


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot ("" if unknown or gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return fields[19]  # field 22 of stat; the name in parentheses may hold spaces
    except (OSError, IndexError):
        return ""


@dataclass(frozen=True)
class WorkerIdentity:
    host: str
    boot: str
    pid: int
    started: str

    @classmethod
    def of_this_process(cls) -> WorkerIdentity:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _process_start(pid))

    @classmethod
    def from_attr(cls, value: Any) -> WorkerIdentity | None:
        try:
            return cls(
                str(value["host"]), str(value["boot"]), int(value["pid"]), str(value["started"])
            )
        except (TypeError, KeyError, ValueError):
            return None

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"{self.host}:{self.pid}"

    def is_gone(self) -> bool:
        """Whether this worker is known dead: it ran here, in this boot, and its process is
        gone or the pid now belongs to a later process. Elsewhere only heartbeats tell."""
        here = WorkerIdentity.of_this_process()
        if (self.host, self.boot) != (here.host, here.boot):
            return False
        started = _process_start(self.pid)
        if not started:
            return not _pid_alive(self.pid)  # no /proc: the pid alone
        return bool(self.started) and started != self.started


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


THIS_WORKER = WorkerIdentity.of_this_process()


def mark_running(trial: optuna.Trial) -> None:
    """Tag ``trial`` as this worker's and beat once: before others may look at it."""
    trial.set_user_attr(WORKER_ATTR, THIS_WORKER.label)
    trial.set_user_attr(IDENTITY_ATTR, THIS_WORKER.to_attr())
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())


class Heartbeat:
    """While the block runs, beat on ``trial`` every HEARTBEAT_SECONDS from a thread (and
    in a database storage's own heartbeat table, which Optuna's stale check reads)."""

    def __init__(self, trial: optuna.Trial, storage: BaseStorage) -> None:
        self._trial = trial
        self._rdb_id = (
            (storage, trial_id(storage, trial.study, trial.number))
            if isinstance(storage, RDBStorage)
            else None
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="autoshuikou-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._trial.set_user_attr(HEARTBEAT_ATTR, time.time())
                if self._rdb_id is not None:
                    storage, number = self._rdb_id
                    storage.record_heartbeat(number)
            except Exception:  # the trial was finished under us (given up by another worker)
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


class StaleWatch:
    """Finds the RUNNING trials whose worker is gone; remembers when each heartbeat last
    moved, by this process's monotonic clock."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, float]] = {}

    def age(self, trial: FrozenTrial) -> float:
        """Seconds since ``trial``'s heartbeat last changed, as far as this process knows."""
        now = time.monotonic()
        beat = trial.user_attrs.get(HEARTBEAT_ATTR)
        if trial.number not in self._seen or self._seen[trial.number][0] != beat:
            self._seen[trial.number] = (beat, now)
        return now - self._seen[trial.number][1]

    def gone(self, trial: FrozenTrial) -> bool:
        beat = trial.user_attrs.get(HEARTBEAT_ATTR)
        if not isinstance(beat, int | float):
            return False  # not tagged yet: the orphan check (storage) handles it
        identity = WorkerIdentity.from_attr(trial.user_attrs.get(IDENTITY_ATTR))
        if identity is not None and identity.is_gone():
            return True
        return self.age(trial) > GRACE_SECONDS or time.time() - beat > STALE_AT_SIGHT_SECONDS


def fail_gone_workers(
    study: optuna.Study, storage: BaseStorage, watch: StaleWatch, running: list[FrozenTrial]
) -> list[int]:
    """Fail the ``running`` trials whose worker is gone and queue their plans again."""
    return fail_and_retry(study, storage, [t for t in running if watch.gone(t)])


def describe_running(trials: list[FrozenTrial], watch: StaleWatch) -> str:
    """ "trial 12 on host-b:731, last heartbeat 3 s ago" for each of ``trials``."""
    parts = []
    for t in trials:
        beat = f", heartbeat {watch.age(t):.0f} s ago" if HEARTBEAT_ATTR in t.user_attrs else ""
        parts.append(
            f"trial {t.number} on {t.user_attrs.get(WORKER_ATTR, 'a starting worker')}{beat}"
        )
    return "; ".join(parts)
