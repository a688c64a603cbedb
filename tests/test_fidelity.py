"""The fidelity registry: every registered fidelity runs a search and says so."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from autoshuikou import search
from autoshuikou.study.fidelity import FIDELITIES, fidelity_names
from autoshuikou.study.storage import journal_storage
from autoshuikou.tasks import Task

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", sorted(FIDELITIES))
def test_every_fidelity_runs_a_search_and_names_itself(
    name: str, tiny_task: Task, tmp_path: Path
) -> None:
    result = search(
        tiny_task,
        refine=0,
        budget="300%",
        trials=3,
        fidelity=name,
        out=tmp_path,
        measure_seconds=0.1,
        predict=False,
        study_name="s",
    )
    assert result.summary["fidelity"] == name
    study = optuna.load_study(study_name="s", storage=journal_storage(tmp_path / "s"))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    trained = [t for t in complete if "warm_start" in t.user_attrs]  # the uniform plans
    assert trained
    timed = ["screen_latency_ms" in t.user_attrs for t in trained]
    assert all(timed) if FIDELITIES[name].times_untrained else not any(timed)


def test_the_command_line_offers_every_fidelity_and_auto() -> None:
    from autoshuikou.cli import _parser

    action = next(
        a
        for a in _parser()._subparsers._group_actions[0].choices["search"]._actions  # type: ignore[union-attr]
        if a.dest == "fidelity"
    )
    assert tuple(action.choices) == fidelity_names() == ("auto", *FIDELITIES)
