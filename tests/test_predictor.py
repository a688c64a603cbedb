"""The learned accuracy predictor: adaptive BatchNorm as the signal, least squares with a
prediction interval, and plans it predicts out recorded, counted and not trained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import make_tiny_task
from optuna.trial import TrialState

from autoshuikou import SearchConfig, search
from autoshuikou.compare.strategies import parse_strategies
from autoshuikou.compress.batchnorm import RECAL_BATCHES
from autoshuikou.compress.prune import prune
from autoshuikou.study import fidelity
from autoshuikou.study import predictor as predictor_module
from autoshuikou.study.fidelity import fidelity_for
from autoshuikou.study.front import counted
from autoshuikou.study.predictor import (
    MIN_FIT,
    PREDICTED_ATTR,
    SIGNAL_ATTR,
    Observed,
    beating,
    fit_predictor,
    recalibrated_metric,
)
from autoshuikou.study.storage import journal_storage
from autoshuikou.study.trial import TIMED_UNTRAINED
from autoshuikou.tasks import Task
from autoshuikou.util import read_json

FAST = {"measure_seconds": 0.2, "budget": "300%", "refine": 0}


def test_recalibration_sets_batchnorm_to_the_pruned_models_own_statistics(
    tiny_task: Task,
) -> None:
    student = prune(tiny_task.model, tiny_task.inputs, {"": 0.5}, 1, tiny_task.family_impl)
    norm = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list[torch.Tensor] = []
    hook = norm.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach()))
    momentum = norm.momentum
    recalibrated_metric(student, tiny_task)
    hook.remove()
    # The recalibration passes (then the scoring passes, in eval mode).
    batches = seen[: min(RECAL_BATCHES, sum(1 for _ in tiny_task.train_data))]
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    assert torch.allclose(norm.running_mean, means.mean(dim=0), atol=1e-5)
    assert norm.momentum == momentum and not student.training


def _observed(signal: float, epochs: float, metric: float, n: int = 0) -> Observed:
    return Observed(n, signal, epochs, metric, latency_ms=1.0, size_bytes=100)


def test_the_predictor_learns_a_linear_relation_and_its_error() -> None:
    rng = np.random.default_rng(0)
    observed = [
        _observed(s, e, 0.5 + 0.4 * s + 0.02 * e + rng.normal(0, 0.01), i)
        for i, (s, e) in enumerate(
            zip(rng.uniform(0.2, 1.0, 40), rng.integers(1, 5, 40), strict=True)
        )
    ]
    predictor = fit_predictor(observed)
    assert predictor is not None
    np.testing.assert_allclose(predictor.coefficients, [0.5, 0.4, 0.02], atol=0.02)
    assert 0.007 < predictor.residual_sd < 0.013
    prediction = predictor.predict(0.6, 2)
    assert prediction is not None
    assert prediction[0] == pytest.approx(0.5 + 0.24 + 0.04, abs=0.01)
    # Far from the data the error grows: the prediction interval, not the residuals alone.
    far = predictor.predict(5.0, 2)
    assert far is not None and far[1] > 2 * prediction[1]
    assert fit_predictor(observed[: MIN_FIT - 1]) is None


def test_the_predictor_does_not_guess_what_its_data_cannot_tell() -> None:
    # The uniform plans all fine-tune the same epochs: the effect of epochs is unknown.
    observed = [_observed(s, 4, 0.9 + 0.1 * s, i) for i, s in enumerate(np.linspace(0, 1, 10))]
    predictor = fit_predictor(observed)
    assert predictor is not None
    same = predictor.predict(0.5, 4)
    assert same is not None and same[0] == pytest.approx(0.95)
    assert predictor.predict(0.5, 2) is None


def test_a_plan_is_predicted_out_only_by_a_faster_smaller_better_trained_trial() -> None:
    trained = [
        Observed(1, 0.9, 2, 0.95, latency_ms=1.0, size_bytes=100),
        Observed(2, 0.8, 2, 0.90, latency_ms=0.5, size_bytes=50),
    ]
    assert beating(0.80, 1.0, 100, trained, 0.01) == trained[0]
    assert beating(0.945, 1.0, 100, trained, 0.01) is None  # within the margin
    assert beating(0.10, 0.4, 100, trained, 0.01) is None  # faster than every trained one
    assert beating(0.10, 1.0, 40, trained, 0.01) is None  # smaller than every trained one


def test_predicted_out_plans_are_recorded_counted_and_not_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any trained trial as fast and small predicts a plan out, whatever its prediction,
    # once the predictor has a few trials to fit.
    monkeypatch.setattr(fidelity, "TOLERANCE", -10.0)
    monkeypatch.setattr(predictor_module, "MIN_FIT", 4)
    result = search(
        make_tiny_task(width=32),
        trials=16,
        out=tmp_path,
        study_name="p",
        fidelity="predict",
        **FAST,
    )
    study = optuna.load_study(study_name="p", storage=journal_storage(result.run_dir))
    out = [t for t in study.trials if t.state == TrialState.PRUNED and counted(t)]
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert out, "once the predictor is fitted, plans as slow and large as a trained one go"
    assert len(out) + len(trained) == 16
    for trial in out:
        folder = result.run_dir / "trials" / f"{trial.number:04d}"
        record = read_json(folder / "metrics.json")
        assert record["rejected"].startswith("predicted out") and "metric" not in record
        assert PREDICTED_ATTR in record and record["screen_latency_ms"] > 0
        assert not (folder / "model.onnx").exists() and (folder / "plan.json").exists()
        assert trial.user_attrs["seconds"]["screening"] > 0
    # Trained trials carry the signal the predictor learns from, and never a rung's score.
    fine_tuned = [t for t in trained if "reference" not in t.user_attrs]
    assert all(SIGNAL_ATTR in t.user_attrs for t in fine_tuned)
    for trial in fine_tuned:  # and their metrics.json shows it beside the trained metric
        record = read_json(result.run_dir / "trials" / f"{trial.number:04d}" / "metrics.json")
        assert record[SIGNAL_ATTR] == trial.user_attrs[SIGNAL_ATTR] and "metric" in record
        # Timed once, untrained: the trained artifact is not timed again.
        assert record["latency_timed_on"] == TIMED_UNTRAINED
        assert record["latency_ms"] == record["screen_latency_ms"]
    assert not any("screen_metric" in t.user_attrs for t in fine_tuned)
    assert result.summary["trials_screened_out"] == len(out)


def test_search_predicts_where_the_model_has_batchnorm_and_screens_where_it_has_none(
    tiny_task: Task,
) -> None:
    from encoder_task import make_encoder_task

    encoder = make_encoder_task().model
    assert SearchConfig().fidelity == "auto"
    assert fidelity_for("auto", tiny_task.model).name == "predict"
    assert fidelity_for("auto", encoder).name == "screen"  # no BatchNorm: no signal to speak of
    assert fidelity_for("predict", encoder).name == "predict"  # named: as named
    named, default = parse_strategies("predictor,tpe-warm", 30)
    assert (named.fidelity, default.fidelity) == ("predict", "auto") and named.warm_start
