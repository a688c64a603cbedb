"""The study's storage: an Optuna journal file under the run directory.

A journal file is safe for several processes on one machine and survives a killed
process; running the same command again loads it and resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.study import StudyDirection

from autoshuikou.errors import UserError
from autoshuikou.util import file_lock

DIRECTIONS: list[StudyDirection] = [
    StudyDirection.MAXIMIZE,
    StudyDirection.MINIMIZE,
    StudyDirection.MINIMIZE,
]  # metric, latency_ms, size_bytes
REFERENCES = ("fp32", "int8")


def journal_storage(run_dir: Path) -> JournalStorage:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "study.journal"
    try:
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:
        raise UserError(
            f"the study journal {path} cannot be read: {type(exc).__name__}: {exc}",
            "restore it from a backup, or move it away to start the study afresh",
        ) from exc


def _differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append(f"{prefix}{key}: study has {json.dumps(a)}, this run has {json.dumps(b)}")
    return diffs


def open_study(
    run_dir: Path, name: str, fingerprint: dict[str, Any], sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    """Create or resume the study; refuse to resume one made for something else.

    Under a lock, so workers starting together enqueue the reference trials exactly once.
    """
    storage = journal_storage(run_dir)
    with file_lock(run_dir / ".study.lock"):
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            directions=DIRECTIONS,
            sampler=sampler,
            load_if_exists=True,
        )
        saved = study.user_attrs.get("fingerprint")
        if saved is None:
            study.set_user_attr("fingerprint", fingerprint)
            for kind in REFERENCES:
                study.enqueue_trial({}, user_attrs={"reference": kind})
        elif saved != fingerprint:
            diffs = "; ".join(_differences(saved, fingerprint))
            raise UserError(
                f"study {name!r} in {run_dir} was made for a different setup ({diffs})",
                "rerun with the original settings to resume it, or pass a new --study-name",
            )
    return study
