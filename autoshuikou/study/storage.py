"""Where the study lives, and how workers share it without losing or duplicating trials.

* default: an Optuna journal file, ``runs/<study>/study.journal``; safe for several
  processes on one machine, or several machines on a shared file system. Trials of dead
  workers are found by their heartbeat and identity (``study.workers``).
* ``postgresql://...``: Optuna's RDB storage for workers on several machines, with
  heartbeats; a worker that stops beating has its trial failed and retried.

Both: the study is created by exactly one worker (which also enqueues the reference
trials), every worker checks the study's fingerprint before joining, and a reservation
lock makes ``--trials`` an exact total across workers.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from autoshuikou.errors import UserError
from autoshuikou.secrets import redact_text, redact_url
from autoshuikou.study.objectives import (
    ENERGY,
    STUDY_ATTR,
    Objective,
    directions,
    objectives_for,
    study_objectives,
)
from autoshuikou.study.optuna_adapter import MAX_RETRY, fail_and_retry, study_user_attrs
from autoshuikou.study.workers import GRACE_SECONDS, HEARTBEAT_SECONDS, WORKER_ATTR
from autoshuikou.util import FileLock, drop_torn_tail

REFERENCES = ("fp32", "int8")

# What a trial means, as a number: a study is resumed or joined only by the format that
# made it. Raise it whenever a trial is decided, trained, measured or recorded differently,
# and say what changed below.
STUDY_FORMAT = 2
FORMAT_CHANGES = {
    1: "everything before the format was recorded (autoshuikou 0.1.0)",
    2: "workers beat on their trials and carry a restart-proof identity; every trial keeps "
    "its plan in the study, so any machine can refine and summarise it",
}


def _is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).startswith(("postgresql://", "postgresql+psycopg2://"))


def journal_storage(run_dir: Path, path: Path | None = None) -> JournalStorage:
    run_dir.mkdir(parents=True, exist_ok=True)
    # Absolute: Optuna's journal lock is a symlink to this path, and a relative target
    # resolves against the link's folder, not ours. The dangling link then defeats the lock's
    # grace period, and a worker killed while holding it hangs every other worker forever.
    path = (path or run_dir / "study.journal").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)  # --storage shared/study.journal
    # A worker killed mid-write (or stopped by a full disk) leaves half a line, which the
    # next append would glue a whole one onto, breaking every later read: cut it off, under
    # the journal's own write lock (a write in progress looks the same).
    if path.exists():
        lock = JournalFileSymlinkLock(str(path))
        lock.acquire()
        try:
            drop_torn_tail(path)
        finally:
            lock.release()
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
                reason = redact_text((str(exc).splitlines() or [""])[0], url)
                raise UserError(
                    f"cannot use the database {redact_url(url)}: {type(exc).__name__}: {reason}",
                    "check that the server is running and reachable, and the user, password and database exist",
                ) from exc
    if url.endswith(".journal"):
        return journal_storage(run_dir, Path(url))
    raise UserError(
        f"unsupported --storage {url!r}",
        "use postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass) for several machines, or a path ending in .journal",
    )


def existing_storage(url: str | None, run_dir: Path) -> BaseStorage | None:
    """The storage ``--storage`` names where a study may already be (a database, reached
    now so that an unreachable one refuses the run before any work; a journal file that
    exists), else None: there is nothing to check yet, and no file is created."""
    if _is_postgres(url):
        return make_storage(url, run_dir)
    journal = run_dir / "study.journal" if url is None else Path(url)
    if url is not None and not url.endswith(".journal"):
        return make_storage(url, run_dir)  # refused with its message
    return make_storage(url, run_dir) if journal.is_file() else None


# PostgreSQL errors of two workers creating the same tables at once: unique violation
# (pg_type rows), duplicate table, duplicate object.
_SCHEMA_RACE_CODES = frozenset({"23505", "42P07", "42710"})


def _schema_race(exc: Exception) -> bool:
    """Whether ``exc`` (SQLAlchemy's, wrapping the driver's) is that creation race."""
    code = getattr(getattr(exc, "orig", None), "pgcode", None)
    return "IntegrityError" in type(exc).__name__ or code in _SCHEMA_RACE_CODES


class ReservationLock(Protocol):
    def acquire(self) -> None: ...
    def release(self) -> None: ...


class _PostgresLock:
    """A session-level advisory lock, shared by every worker of the database."""

    def __init__(self, storage: RDBStorage, key: str) -> None:
        self._engine = storage.engine
        self._key = self.key_of(key)
        self._conn: Any = None

    @staticmethod
    def key_of(name: str) -> int:
        """The advisory-lock key (a bigint, here 0..2**63-1) for ``name``: from the first 8
        bytes of its SHA-256, so each study has its own lock (a prefix was shared by all)."""
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") >> 1

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


def fail_orphaned_trials(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Fail and retry RUNNING trials that never reached the objective.

    A worker that dies between creating its trial and starting the objective leaves a
    RUNNING trial with no worker tag and, with a database, no heartbeat: nothing else
    would ever fail it. Creation to objective takes well under a second.
    """
    now = datetime.datetime.now()
    orphans = [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if WORKER_ATTR not in trial.user_attrs
        and trial.datetime_start is not None
        and (now - trial.datetime_start).total_seconds() > GRACE_SECONDS
    ]
    return fail_and_retry(study, storage, orphans)


def _format_refusal(name: str, saved: dict[str, Any]) -> UserError:
    made_by = saved.get("format", 1)
    return UserError(
        f"study {name!r} was made by an autoshuikou whose trials mean something else "
        f"(study format {made_by}; this version writes format {STUDY_FORMAT}: "
        f"{FORMAT_CHANGES.get(STUDY_FORMAT, '')})",
        "finish it with the version that made it, or start afresh with a new --study-name or --out",
    )


def check_joinable(storage: BaseStorage, name: str, fingerprint: dict[str, Any]) -> None:
    """Refuse, before anything is measured or written, to join a study made for something
    else. Keys missing from ``fingerprint`` (known only later) are not compared."""
    saved = (study_user_attrs(storage, name) or {}).get("fingerprint")
    if saved is None:
        return  # no such study yet, or its creator is still setting it up: open_study checks
    _refuse_if_different(name, {k: v for k, v in saved.items() if k in fingerprint}, fingerprint)


def _refuse_if_different(name: str, saved: dict[str, Any], fingerprint: dict[str, Any]) -> None:
    if saved and saved.get("format", 1) != fingerprint.get("format", 1):
        raise _format_refusal(name, saved)
    if saved != fingerprint:
        diffs = "; ".join(_differences(saved, fingerprint))
        raise UserError(
            f"study {name!r} was made for a different setup ({diffs})",
            "rerun with the original settings to resume or join it, or pass a new --study-name",
        )


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
    _refuse_if_different(name, saved or {}, fingerprint)
    return study
