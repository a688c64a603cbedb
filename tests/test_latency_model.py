import dataclasses
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import make_tiny_task

from autoshuikou import search
from autoshuikou.compress.prune import prune
from autoshuikou.measure.latency_model import LatencyModel, features, fit_latency_model, layer_macs
from autoshuikou.plan import Plan
from autoshuikou.study import loop
from autoshuikou.study import profile as profile_module
from autoshuikou.study import search as search_module
from autoshuikou.study.context import RunContext
from autoshuikou.study.storage import journal_storage
from autoshuikou.tasks import Task
from autoshuikou.util import read_json

LAYERS = ["a", "b", "c"]


def _plan(int8: set[str]) -> Plan:
    return Plan(
        prune={}, precision={layer: "int8" if layer in int8 else "fp32" for layer in LAYERS}
    )


def test_layer_macs_follow_pruning(tiny_task: Task) -> None:
    macs = layer_macs(tiny_task.model, tiny_task.example_input)
    assert macs["conv1"] == 16 * 32 * 9 * 64  # in * out * k*k * 8x8 outputs
    pruned = prune(tiny_task.model, tiny_task.example_input, {"conv1": 0.5}, round_to=1)
    assert layer_macs(pruned, tiny_task.example_input)["conv1"] == macs["conv1"] // 2


def test_boundaries_count_precision_changes() -> None:
    macs = dict.fromkeys(LAYERS, 1_000_000)
    # fp32 input -> int8 a (1) -> fp32 b (2) -> int8 c (3) -> fp32 output (4)
    assert features("global", LAYERS, macs, _plan({"a", "c"}))[4] == 4
    assert features("global", LAYERS, macs, _plan(set()))[4] == 0


def test_fit_recovers_a_known_cost_model() -> None:
    rng = np.random.default_rng(0)
    true = {"int8": 0.02, "fp32": 0.05, "boundary": 0.03, "constant": 0.1}
    plans, macs, ratios = [], [], []
    for _ in range(40):
        plan = _plan({layer for layer in LAYERS if rng.random() < 0.5})
        m = {layer: int(rng.integers(1, 10)) * 1_000_000 for layer in LAYERS}
        x = features("global", LAYERS, m, plan)
        ratios.append(
            true["int8"] * x[0] + true["fp32"] * x[1] + true["boundary"] * x[4] + true["constant"]
        )
        plans.append(plan)
        macs.append(m)
    model = fit_latency_model(LAYERS, macs, plans, ratios)
    assert model.holdout_mape < 0.01
    assert model.predict_ratio(macs[0], plans[0]) == pytest.approx(ratios[0], rel=0.01)
    assert LatencyModel.from_dict(model.to_dict()) == model


def test_rejection_before_fine_tuning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At a tight budget, plans predicted too slow are recorded infeasible, never trained."""
    monkeypatch.setattr(profile_module, "PROBES", 16)
    # The real model, with the margin pinned at its floor (10%): 16 noisy probes can give a
    # 90th-percentile error that would leave this budget nothing to reject.
    real = search_module.load_or_build_latency_model
    monkeypatch.setattr(
        search_module,
        "load_or_build_latency_model",
        lambda ctx, say: dataclasses.replace(real(ctx, say), holdout_p90=0.0),
    )
    wide = make_tiny_task(width=64)  # wide enough that pruning and int8 pay off
    # 40%: the uniform 25%-pruned fp32 plan (measured near 0.56x) is predicted well over it,
    # not within timing noise of it (at 50% that plan sat on the line and CI drew no rejection).
    result = search(
        wide,
        refine=0,
        budget="40%",
        trials=8,
        out=tmp_path,
        study_name="p",
        measure_seconds=0.2,
        predict=True,
        fidelity="full",
    )
    study = optuna.load_study(study_name="p", storage=journal_storage(result.run_dir))
    rejected = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert rejected, "a budget this tight should reject some plans"
    for trial in rejected:
        assert trial.constraints["latency"] > 0
        assert trial.user_attrs["latency_predicted_ms"] > result.summary["budget_ms"]
        record = read_json(result.run_dir / "trials" / f"{trial.number:04d}" / "metrics.json")
        assert record["rejected"] and "metric" not in record
    for trial in trained:  # prediction and measurement side by side, for every trained trial
        assert "latency_predicted_ms" in trial.user_attrs and "prediction_error" in trial.user_attrs
    assert result.summary["trials_rejected_by_prediction"] == len(rejected)
    # Rejected plans cost no training, so they do not use up --trials: 8 models were trained.
    assert len(trained) == 8 == result.summary["trials_complete"]


def test_a_search_that_only_finds_rejected_plans_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rejections do not count towards --trials, so endless ones must stop the search."""

    def hopelessly_slow(ctx: RunContext, say: object) -> LatencyModel:
        # "global" features end in a constant: every plan is predicted at 100x the baseline,
        # far over a 200% budget (which no tiny-model timing noise can put below the floor).
        layers = tuple(ctx.space.precision)
        return LatencyModel("global", layers, (0, 0, 0, 0, 0, 100.0), 0.0, 0.0, 0)

    monkeypatch.setattr(search_module, "load_or_build_latency_model", hopelessly_slow)
    monkeypatch.setattr(loop, "MAX_REJECTED_IN_A_ROW", 3)
    result = search(
        make_tiny_task(),
        refine=0,
        budget="200%",
        trials=8,
        out=tmp_path,
        study_name="r",
        measure_seconds=0.2,
        predict=True,
    )
    study = optuna.load_study(study_name="r", storage=journal_storage(result.run_dir))
    states = [t.state for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    # The two references (never rejected), then three rejections in a row, then stop.
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.PRUNED) == 3
    assert "3 plans in a row" in result.summary["stopped_early"]


def test_an_inaccurate_latency_model_rejects_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose 90th-percentile error is over 25% only records its predictions."""

    def inaccurate(ctx: RunContext, say: object) -> LatencyModel:
        layers = tuple(ctx.space.precision)  # every plan predicted at 100x the baseline
        return LatencyModel("global", layers, (0, 0, 0, 0, 0, 100.0), 0.3, 0.6, 0)

    monkeypatch.setattr(search_module, "load_or_build_latency_model", inaccurate)
    result = search(
        make_tiny_task(),
        refine=0,
        budget="300%",
        trials=4,
        out=tmp_path,
        study_name="i",
        measure_seconds=0.2,
        predict=True,
        fidelity="full",
    )
    study = optuna.load_study(study_name="i", storage=journal_storage(result.run_dir))
    ran = [t for t in study.trials if t.state != optuna.trial.TrialState.WAITING]
    assert [t.state for t in ran] == [optuna.trial.TrialState.COMPLETE] * 4
    assert all(t.user_attrs["latency_predicted_ms"] > 0 for t in ran)


def test_a_fixed_cost_per_int8_layer_is_learned_and_chosen() -> None:
    # Each layer costs its MACs at its own per-precision rate, and an int8 layer also a
    # fixed amount (quantize/requantize work that does not shrink with pruning).
    rng = np.random.default_rng(1)
    rate = {"a": (0.01, 0.05), "b": (0.03, 0.04), "c": (0.02, 0.08)}  # (int8, fp32) per MMAC
    fixed = {"a": 0.2, "b": 0.0, "c": 0.05}
    plans, macs, ratios = [], [], []
    for _ in range(60):
        int8 = {layer for layer in LAYERS if rng.random() < 0.5}
        m = {layer: int(rng.integers(1, 10)) * 1_000_000 for layer in LAYERS}
        ratios.append(
            0.1
            + sum(
                m[layer] / 1e6 * rate[layer][layer not in int8] + fixed[layer] * (layer in int8)
                for layer in LAYERS
            )
        )
        plans.append(_plan(int8))
        macs.append(m)
    model = fit_latency_model(LAYERS, macs, plans, ratios)
    assert model.kind == "per_layer_int8"
    assert model.holdout_mape < 0.01


def test_interactions_a_linear_model_cannot_fit_choose_the_gp_and_survive_the_cache() -> None:
    # Two neighbouring int8 layers fuse and save a large fixed cost: no sum of per-layer
    # terms expresses that, a Gaussian process on the same features learns it.
    rng = np.random.default_rng(2)
    plans, macs, ratios = [], [], []
    for _ in range(80):
        int8 = {layer for layer in LAYERS if rng.random() < 0.5}
        m = {layer: int(rng.integers(1, 10)) * 1_000_000 for layer in LAYERS}
        fused = {"a", "b"} <= int8
        ratios.append(0.5 + 0.02 * sum(m.values()) / 1e6 - 0.4 * fused)
        plans.append(_plan(int8))
        macs.append(m)
    model = fit_latency_model(LAYERS, macs, plans, ratios)
    assert model.kind == "gp"
    assert model.holdout_mape < 0.02
    reloaded = LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    for m, plan in zip(macs[:5], plans[:5], strict=True):
        assert reloaded.predict_ratio(m, plan) == pytest.approx(model.predict_ratio(m, plan))


def test_each_probe_is_timed_in_several_windows_taken_in_turns(
    tmp_path: Path, tiny_task: Task, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine switches between speed states lasting seconds: one probe's windows must
    not all fall into one of them, so the probes of a group take turns."""
    from autoshuikou.measure import latency
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.prepare import prepare_context

    ctx, _ = prepare_context(tiny_task, None, tmp_path / "run", 0, 1, 0.2, Progress())
    plans = ctx.space.random_plans(3, seed=1)
    timed: list[str] = []
    ratios = iter([0.5, 0.6, 0.7, 0.9, 0.8, 0.75])  # window ratios in the order they are timed

    def fake(models, _x, _settings, _seconds):  # type: ignore[no-untyped-def]
        timed.append(models[0].name)
        return [latency.LatencyStats(next(ratios), 0, 0, 10), latency.LatencyStats(1, 0, 0, 10)]

    monkeypatch.setattr(latency, "measure_interleaved", fake)
    rows = profile_module.measure_probes(ctx, plans, windows=2)
    names = sorted(set(timed))
    assert len(names) == 3 and timed == names * 2  # one window each per round
    # Each probe's label is the median of its own windows: probe 0 had 0.5 and 0.9.
    assert [row["ratio"] for row in rows] == pytest.approx([0.7, 0.7, 0.725])
    assert [row["plan"] for row in rows] == [plan.without_training() for plan in plans]
