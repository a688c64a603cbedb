"""A plan that differs from a trained one only in precision takes its student, untrained again,
and ends as the very model that training it again gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from conftest import make_tiny_task
from optuna.trial import FrozenTrial, TrialState

from autoshuikou import search
from autoshuikou.plan import DistillSettings, Plan
from autoshuikou.study.storage import journal_storage
from autoshuikou.study.students import STUDENT_FROM_ATTR, student_key
from autoshuikou.util import read_json

# The two references and the six uniform plans: the same eight plans whatever the sampler.
SETTINGS: dict[str, Any] = {
    "measure_seconds": 0.2,
    "refine": 0,
    "budget": "300%",
    "trials": 8,
    "fidelity": "screen",
}


def test_the_student_key_ignores_precision_only() -> None:
    plan = Plan({"a": 0.5}, {"x": "fp32"}, DistillSettings(epochs=2))
    twin = Plan({"a": 0.5}, {"x": "int8"}, DistillSettings(epochs=2))
    assert student_key(plan, 0, "cpu") == student_key(twin, 0, "cpu")
    other = [
        (Plan({"a": 0.25}, {"x": "fp32"}, DistillSettings(epochs=2)), 0, "cpu"),
        (Plan({"a": 0.5}, {"x": "fp32"}, DistillSettings(epochs=2, lr=0.01)), 0, "cpu"),
        (Plan({"a": 0.5}, {"x": "fp32"}, DistillSettings(epochs=3)), 0, "cpu"),
        (plan, 1, "cpu"),
        (plan, 0, "cuda"),
    ]
    assert all(student_key(*o) != student_key(plan, 0, "cpu") for o in other)


def _trials(tmp_path: Path, name: str, reuse: bool) -> dict[str, FrozenTrial]:
    search(make_tiny_task(), out=tmp_path, study_name=name, reuse_students=reuse, **SETTINGS)
    study = optuna.load_study(study_name=name, storage=journal_storage(tmp_path / name))
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 8
    return {t.user_attrs.get("warm_start") or t.user_attrs["reference"]: t for t in trials}


def test_an_int8_twin_takes_the_fp32_student_and_ends_as_the_same_model(
    tmp_path: Path,
) -> None:
    reused = _trials(tmp_path, "reused", reuse=True)
    retrained = _trials(tmp_path, "retrained", reuse=False)
    twins = [label for label in reused if label.startswith("uniform") and "int8" in label]
    assert len(twins) == 3
    for label in twins:
        twin, source = reused[label], reused[label.replace("int8", "fp32")]
        assert twin.user_attrs[STUDENT_FROM_ATTR] == source.number
        metrics = read_json(tmp_path / "reused" / "trials" / f"{twin.number:04d}" / "metrics.json")
        assert metrics[STUDENT_FROM_ATTR] == source.number
        assert metrics["distill_losses"] is None  # not fine-tuned: no training loss
        # The same student at the rung, so screening compares it as the trained one.
        assert twin.user_attrs["screen_metric"] == source.user_attrs["screen_metric"]
    for label, trial in reused.items():  # every model is the one training again gives
        again = retrained[label]
        assert STUDENT_FROM_ATTR not in again.user_attrs
        assert trial.user_attrs["model_sha256"] == again.user_attrs["model_sha256"], label
        assert trial.user_attrs.get("screen_metric") == again.user_attrs.get("screen_metric")
