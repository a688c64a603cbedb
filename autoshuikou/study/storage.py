"""Where the study lives, and how workers share it without losing or duplicating trials.

* default: an Optuna journal file, ``runs/<study>/study.journal``; safe for several
  processes on one machine. Stale trials of dead local workers are found by pid.
* ``postgresql://...``: Optuna's RDB storage for workers on several machines, with
  heartbeats; a worker that stops beating has its trial failed and retried.

Both: the study is created by exactly one worker (which also enqueues the reference
trials), every worker checks the study's fingerprint before joining, and a reservation
lock makes ``--trials`` an exact total across workers.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.errors import UserError
from autoshuikou.study.objectives import (
    ENERGY,
    STUDY_ATTR,
    Objective,
    directions,
    objectives_for,
    study_objectives,
)
from autoshuikou.util import FileLock

REFERENCES = ("fp32", "int8")
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 20  # a trial whose worker has not beaten for this long is failed
MAX_RETRY = 2
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgresql+psycopg2://"))


def journal_storage(run_dir: Path, path: Path | None = None) -> JournalStorage:
    run_dir.mkdir(parents=True, exist_ok=True)
    # Absolute: Optuna's journal lock is a symlink to this path, and a relative target
    # resolves against the link's folder, not ours. The dangling link then defeats the lock's
    # grace period, and a worker killed while holding it hangs every other worker forever.
    path = (path or run_dir / "study.journal").resolve()
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:
        raise UserError(
            f"the study journal {path} cannot be read: {type(exc).__name__}: {exc}",
            "restore it from a backup, or move it away to start the study afresh",
        ) from exc


def make_storage(url: str | None, run_dir: Path) -> BaseStorage:
    """The storage ``--storage`` names: None (journal under the run), a .journal path, or PostgreSQL."""
    if url is None:
        return journal_storage(run_dir)
    if _is_postgres(url):
        # SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql://; we ship psycopg2.
        driver_url = url.replace("postgresql://", "postgresql+psycopg2://", 1)
        for attempt in range(5):
            try:
                return RDBStorage(
                    driver_url,
                    heartbeat_interval=HEARTBEAT_SECONDS,
                    grace_period=GRACE_SECONDS,
                    failed_trial_callback=RetryFailedTrialCallback(max_retry=MAX_RETRY),
                    engine_kwargs={"pool_pre_ping": True},
                )
            except Exception as exc:
                # Workers starting together race to create Optuna's tables: try again.
                if _schema_race(exc) and attempt < 4:
                    time.sleep(0.5 + attempt)
                    continue
                raise UserError(
                    f"cannot use the database {_redact(url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                    "check that the server is running and reachable, and the user, password and database exist",
                ) from exc
    if url.endswith(".journal"):
        return journal_storage(run_dir, Path(url))
    raise UserError(
        f"unsupported --storage {url!r}",
        "use postgresql://user:password@host/db for several machines, or a path ending in .journal",
    )


# PostgreSQL errors of two workers creating the same tables at once: unique violation
# (pg_type rows), duplicate table, duplicate object.
_SCHEMA_RACE_CODES = frozenset({"23505", "42P07", "42710"})


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` (SQLAlchemy's, wrapping the driver's) is that creation race."""
    code = getattr(getattr(exc, "orig", None), "pgcode", None)
    return "IntegrityError" in type(exc).__name__ or code in _SCHEMA_RACE_CODES


def _redact(url: str) -> str:
    head, at, tail = url.rpartition("@")
    return f"{head.split(':')[0]}:***@{tail}" if at and ":" in head.split("//", 1)[-1] else url


class ReservationLock(Protocol):
    def acquire(self) -> None: ...
    def release(self) -> None: ...


class _PostgresLock:
    """A session-level advisory lock, shared by every worker of the database."""

    def __init__(self, storage: RDBStorage, key: str) -> None:
        self._engine = storage.engine
        self._key = int.from_bytes(key.encode()[:8].ljust(8, b"\0"), "big") % (2**63)
        self._conn: Any = None

    def acquire(self) -> None:
        import sqlalchemy

        self._conn = self._engine.connect()
        self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})

    def release(self) -> None:
        import sqlalchemy

        if self._conn is not None:
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.close()
            self._conn = None


def reservation_lock(storage: BaseStorage, run_dir: Path, study_name: str) -> ReservationLock:
    if isinstance(storage, RDBStorage):
        return _PostgresLock(storage, f"autoshuikou:{study_name}")
    return FileLock(run_dir / ".reserve.lock")


def _differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(
                f"{prefix}{key}: study has {json.dumps(a)}, this worker has {json.dumps(b)}"
            )
    return diffs


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fail_and_retry(study: optuna.Study, trials: list[FrozenTrial]) -> list[int]:
    """Mark the trials failed and queue each plan again (at most MAX_RETRY times)."""
    retry = RetryFailedTrialCallback(max_retry=MAX_RETRY)
    failed = []
    for trial in trials:
        if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            failed.append(trial.number)
            retry(study, study._storage.get_trial(trial._trial_id))
    return failed


def recover_dead_local_workers(study: optuna.Study) -> list[int]:
    """Fail and retry RUNNING trials whose worker process on this host is gone.

    The journal storage has no heartbeat; a worker records host and pid on each trial,
    so a dead local worker's trial is found here. Returns the failed trial numbers.
    """
    host = socket.gethostname()
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
        if worker_host == host and pid.isdigit() and not _pid_alive(int(pid)):
            dead.append(trial)
    return _fail_and_retry(study, dead)


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Fail and retry RUNNING trials that never reached the objective.

    A worker that dies between creating its trial and starting the objective leaves a
    RUNNING trial with no worker tag and, with a database, no heartbeat: nothing else
    would ever fail it. Creation to objective takes well under a second.
    """
    now = datetime.datetime.now()
    orphans = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if "worker" not in trial.user_attrs
        and trial.datetime_start is not None
        and (now - trial.datetime_start).total_seconds() > GRACE_SECONDS
    ]
    return _fail_and_retry(study, orphans)


def open_study(
    storage: BaseStorage,
    run_dir: Path,
    name: str,
    fingerprint: dict[str, Any],
    sampler: optuna.samplers.BaseSampler,
    shared: dict[str, Any],
    fixed_plans: dict[str, dict[str, Any]] | None = None,
    warm_start: dict[str, dict[str, Any]] | None = None,
    objectives: tuple[Objective, ...] = objectives_for(energy=False),
) -> optuna.Study:
    """Create or join the study; refuse to join one made for something else.

    Exactly one worker creates the study, stores ``shared`` (values every worker must
    use) and enqueues the reference trials any ``fixed_plans`` (label -> Plan dict) and ``warm_start`` trials (label -> parameters); the others wait for its fingerprint and compare.
    """
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=directions(objectives), sampler=sampler
        )
        created = True
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        created = False
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"the study storage for {name!r} cannot be used: {type(exc).__name__}: {exc}",
            "a damaged journal can be moved away (the study then starts afresh); check a database's health",
        ) from exc
    if created:
        for key, value in shared.items():
            study.set_user_attr(key, value)
        # By name, so readers need not guess them from the number of directions.
        study.set_user_attr(STUDY_ATTR, [o.name for o in objectives])
        study.set_user_attr("fingerprint", fingerprint)  # last: joiners wait for it
        for kind in REFERENCES:
            study.enqueue_trial({}, user_attrs={"reference": kind})
        for label, plan in (fixed_plans or {}).items():
            study.enqueue_trial({}, user_attrs={"fixed": label, "plan": plan})
        for label, params in (warm_start or {}).items():
            study.enqueue_trial(params, user_attrs={"warm_start": label})
        return study
    existing = study_objectives(study)
    if existing != objectives:
        names = "with energy" if ENERGY in existing else "without energy"
        raise UserError(
            f"study {name!r} exists with other objectives ({names})",
            "use the same --energy-objective setting as the study's first run, or pass a new --study-name",
        )
    deadline = time.monotonic() + 30
    saved = study.user_attrs.get("fingerprint")
    while saved is None and time.monotonic() < deadline:  # its creator is still setting it up
        time.sleep(0.5)
        saved = study.user_attrs.get("fingerprint")
    if saved != fingerprint:
        diffs = "; ".join(_differences(saved or {}, fingerprint))
        raise UserError(
            f"study {name!r} was made for a different setup ({diffs})",
            "rerun with the original settings to resume or join it, or pass a new --study-name",
        )
    return study
