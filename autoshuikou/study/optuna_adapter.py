"""What the search needs of Optuna beyond ``study.optimize``, in one place.

Everything here goes through the public ``BaseStorage`` API with the storage object the
search opened itself, never ``study._storage`` or a trial's private id: a new Optuna
release can change those without notice. The one thing without a public form is running
an objective on a trial created outside the queue (``new_trial``): Optuna documents
``optuna.Trial(study, trial_id)`` as a constructor users should not need, so it lives here.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryFailedTrialCallback
from optuna.trial import FrozenTrial, TrialState

MAX_RETRY = 2  # a plan whose worker died is run again at most this often


def trial_id(storage: BaseStorage, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def study_user_attrs(storage: BaseStorage, name: str) -> dict[str, Any] | None:
    """The user attributes of the study ``name`` (None: there is no such study yet)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(study_id)


def fail_trial(storage: BaseStorage, study: optuna.Study, number: int) -> bool:
    """Mark trial ``number`` failed; False when it had finished meanwhile."""
    try:
        return storage.set_trial_state_values(trial_id(storage, study, number), TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def fail_and_retry(
    study: optuna.Study, storage: BaseStorage, trials: list[FrozenTrial]
) -> list[int]:
    """Mark the trials failed and queue each plan again (at most MAX_RETRY times)."""
    retry = RetryFailedTrialCallback(max_retry=MAX_RETRY)
    failed = []
    for trial in trials:
        if fail_trial(storage, study, trial.number):
            failed.append(trial.number)
            retry(study, storage.get_trial(trial_id(storage, study, trial.number)))
    return failed


def new_trial(
    study: optuna.Study, storage: BaseStorage, user_attrs: dict[str, Any]
) -> tuple[optuna.Trial, int]:
    """A RUNNING trial created now with ``user_attrs`` (never a queued one), and its id."""
    created = storage.create_new_trial(storage.get_study_id_from_name(study.study_name))
    for key, value in user_attrs.items():
        storage.set_trial_user_attr(created, key, value)
    return optuna.Trial(study, created), created
