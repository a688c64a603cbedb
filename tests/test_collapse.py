"""A plan whose student collapses is stopped after its first epoch, with the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.trial import TrialState

from autoshuikou import search
from autoshuikou.report.summary import format_table
from autoshuikou.study import trial as trial_module
from autoshuikou.study.collapse import COLLAPSE_SHARE, CollapseLine, constant_answer_metric
from autoshuikou.study.storage import journal_storage
from autoshuikou.tasks import Task
from autoshuikou.util import read_json

# No uniform plans: they are anchors, always trained; the sampled plans are checked.
FAST = {"measure_seconds": 0.2, "budget": "300%", "refine": 0, "warm_start": False}


def _space(tmp_path: Path, lr: float) -> Path:
    """The default space with every plan trained 3 epochs at ``lr``."""
    default = (Path(__file__).parents[1] / "search_spaces" / "default.yaml").read_text()
    text = default.replace("epochs: {min: 1, max: 4}", "epochs: {min: 3, max: 3}").replace(
        "lr: {min: 0.0003, max: 0.01, log: true}", f"lr: {{min: {lr}, max: {lr}}}"
    )
    assert text != default
    path = tmp_path / f"lr{lr}.yaml"
    path.write_text(text)
    return path


def test_a_constant_answer_scores_its_class_share(tiny_task: Task) -> None:
    # Top-1 of answering every input with the teacher's mean logits: that class's share.
    targets = torch.cat([t for _, t in tiny_task.batches("val_data")])
    answer = int(tiny_task.teacher_outputs[0].mean(dim=0).argmax())
    share = float((targets == answer).float().mean())
    assert 0 < share < 1 and constant_answer_metric(tiny_task) == pytest.approx(share)
    line = CollapseLine.of(tiny_task, 0.9)
    assert line is not None
    assert line.floor == pytest.approx(share + COLLAPSE_SHARE * (0.9 - share))
    assert CollapseLine.of(tiny_task, share) is None  # no lead: nothing to tell apart


def _epochs_started(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Each fine-tuning's epochs, as ``distill`` starts them."""
    runs: list[list[int]] = []
    real = trial_module.distill

    def counting(*args: Any, **kwargs: Any) -> torch.nn.Module:
        started: list[int] = []
        runs.append(started)
        shown = kwargs["on_epoch"]

        def on_epoch(done: int, total: int) -> None:
            started.append(done)
            shown(done, total)

        return real(*args, **{**kwargs, "on_epoch": on_epoch})

    monkeypatch.setattr(trial_module, "distill", counting)
    return runs


def test_a_collapsed_plan_stops_after_its_first_epoch_with_the_reason(
    tiny_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = _epochs_started(monkeypatch)
    # A learning rate of 5 wrecks the student in its first epoch.
    space = _space(tmp_path, 5.0)
    result = search(tiny_task, trials=3, out=tmp_path, study_name="c", space=space, **FAST)
    study = optuna.load_study(study_name="c", storage=journal_storage(result.run_dir))
    collapsed = [t for t in study.trials if t.user_attrs.get("collapsed")]
    assert collapsed and all(t.state == TrialState.PRUNED for t in collapsed)
    for t in collapsed:
        reason = t.user_attrs["rejected"]
        assert reason.startswith("collapsed: top1") and "after 1 of 3 epochs" in reason
        assert t.user_attrs["collapse_metric"] < t.user_attrs["collapse_floor"]
        folder = result.run_dir / "trials" / f"{t.number:04d}"
        assert read_json(folder / "metrics.json")["rejected"] == reason
        assert not (folder / "model.onnx").exists()  # nothing built
    # Each stopped fine-tuning began only the first of its three epochs; the others all.
    began = [r for r in runs if r]  # untrained builds (timing) begin none
    assert sum(r == [1] for r in began) == len(collapsed)
    assert all(r in ([1], [1, 2, 3]) for r in began)
    assert result.summary["trials_collapsed"] == len(collapsed)
    assert result.summary["time"]["trials_collapsed"] == len(collapsed)
    assert f"{len(collapsed)} collapsed" in format_table(result.summary)


def test_a_student_that_trains_is_checked_and_trained_on(tiny_task: Task, tmp_path: Path) -> None:
    space = _space(tmp_path, 0.003)
    result = search(tiny_task, trials=3, out=tmp_path, study_name="t", space=space, **FAST)
    study = optuna.load_study(study_name="t", storage=journal_storage(result.run_dir))
    checked = [t for t in study.trials if "collapse_metric" in t.user_attrs]
    assert checked and not any(t.user_attrs.get("collapsed") for t in study.trials)
    for t in checked:
        assert t.state == TrialState.COMPLETE
        assert t.user_attrs["collapse_metric"] >= t.user_attrs["collapse_floor"]
    assert result.summary["trials_collapsed"] == 0
