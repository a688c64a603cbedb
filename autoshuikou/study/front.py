"""Which trials count towards ``--trials``, and which are on the front (read from the study)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.study.objectives import (
    point,
    study_objectives,
)
from autoshuikou.study.pareto import is_feasible, pareto_indices
from autoshuikou.study.predictor import (
    judged_on_metric,
)
from autoshuikou.study.record import TrialRecord
from autoshuikou.study.refine import (
    REFINE_ATTR,
)
from autoshuikou.study.trial import STUDENT_NAME


def counted(trial: FrozenTrial) -> bool:
    """Whether ``trial`` counts towards ``trials``: trained, or screened after training began
    (refined trials come after the count: see ``study.refine``)."""
    if REFINE_ATTR in trial.user_attrs:
        return False
    return trial.state == TrialState.COMPLETE or (
        trial.state == TrialState.PRUNED and screened(trial)
    )


def screened(trial: FrozenTrial) -> bool:
    """Whether the plan of ``trial`` was judged on its metric (at the rung, or predicted)."""
    return judged_on_metric(trial.user_attrs)


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if counted(t)]


def front(
    study: optuna.Study, among: Callable[[FrozenTrial], bool] = lambda _t: True
) -> list[FrozenTrial]:
    """The Pareto set of the feasible trials (of those ``among`` accepts)."""
    objectives = study_objectives(study)
    feasible = [t for t in study.get_trials(deepcopy=False) if is_feasible(t) and among(t)]
    return [feasible[i] for i in pareto_indices([point(t, objectives) for t in feasible])]


def best_text(study: optuna.Study) -> str:
    best = max(front(study), key=lambda t: TrialRecord.from_trial(t).metric, default=None)
    if best is None:
        return "none feasible yet"
    record = TrialRecord.from_trial(best)
    return f"metric {record.metric:.4f} @ {record.latency_ms:.3f} ms (trial {best.number})"


def prune_artifacts(study: optuna.Study, run_dir: Path, artifact_name: str) -> None:
    """Delete model files of trials that can never be on the front: infeasible or dominated.

    Dominance is permanent, so nothing deleted is needed later; plans and metrics stay.
    """
    keep = {t.number for t in front(study)}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.number not in keep:
            folder = run_dir / "trials" / f"{trial.number:04d}"
            (folder / artifact_name).unlink(missing_ok=True)
            (folder / STUDENT_NAME).unlink(missing_ok=True)
