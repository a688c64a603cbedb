"""Screening: plans measured untrained and scored after half an epoch; only those that could
join the front are trained fully, the others recorded and counted."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from conftest import make_tiny_task
from optuna.trial import TrialState

from autoshuikou import search
from autoshuikou.compress.distill import Rung, distill
from autoshuikou.compress.prune import prune
from autoshuikou.plan import DistillSettings
from autoshuikou.report.progress import Progress
from autoshuikou.report.status import study_status
from autoshuikou.report.summary import format_table
from autoshuikou.study import fidelity, gates, loop
from autoshuikou.study.front import counted
from autoshuikou.study.prepare import prepare_context
from autoshuikou.study.screening import Screen, Screened, dominating
from autoshuikou.study.storage import journal_storage
from autoshuikou.study.trial import TIMED_AS_BASELINE, TIMED_THIS_ARTIFACT
from autoshuikou.tasks import Task
from autoshuikou.util import read_json, sha256_file

FAST = {"measure_seconds": 0.2, "budget": "300%", "refine": 0}
SCREEN = {**FAST, "fidelity": "screen"}  # the rung; the default is the predictor


def _screen(latency: float, size: int, metric: float) -> Screen:
    return Screen(latency, latency / 2, size, metric, 1.0)


def test_a_plan_is_screened_out_only_by_a_faster_smaller_better_screened_trial() -> None:
    trained = [Screened(1, 1.0, 100, 0.90), Screened(2, 0.5, 50, 0.80)]
    # Trial 1 is as fast and as small and screened 0.10 better: dominated.
    assert dominating(_screen(1.0, 100, 0.80), trained, 0.01) == trained[0]
    # Within the tolerance: a tie, promoted.
    assert dominating(_screen(1.0, 100, 0.895), trained, 0.01) is None
    # Faster than every trained trial, or smaller: nothing to compare with, promoted.
    assert dominating(_screen(0.4, 100, 0.10), trained, 0.01) is None
    assert dominating(_screen(1.0, 40, 0.10), trained, 0.01) is None
    # Two dominate: the best screened one is named.
    assert dominating(_screen(2.0, 200, 0.5), trained, 0.01) == trained[0]


def test_distill_trains_a_fraction_of_an_epoch(tiny_task: Task) -> None:
    student = prune(tiny_task.model, tiny_task.inputs, {}, 1, tiny_task.family_impl)
    calls = []
    student.register_forward_hook(lambda *_: calls.append(1))
    batches = sum(1 for _ in tiny_task.train_data)  # 8 of 32
    distill(student, tiny_task.model, tiny_task, DistillSettings(epochs=3), epochs=0.3)
    # One probe pass sizes the feature projections, then ceil(0.3 x 8) = 3 training steps.
    assert len(calls) == 1 + math.ceil(0.3 * batches)


def test_a_rung_sees_the_student_part_way_and_changes_nothing(tiny_task: Task) -> None:
    def student() -> torch.nn.Module:
        return prune(tiny_task.model, tiny_task.inputs, {}, 1, tiny_task.family_impl)

    settings = DistillSettings(epochs=2)
    seen: list[bool] = []

    def look(m: torch.nn.Module) -> bool:
        seen.append(m.training)
        return True

    rung = Rung(0.5, look)
    checked = distill(student(), tiny_task.model, tiny_task, settings, rungs=[rung])
    plain = distill(student(), tiny_task.model, tiny_task, settings)
    assert seen == [False] and not rung.stopped  # called once, in eval mode
    for a, b in zip(checked.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the same model as training without the rung

    # A check that says stop ends training there: the weights are those at the rung.
    at_rung: dict[str, torch.Tensor] = {}

    def stop(m: torch.nn.Module) -> bool:
        at_rung.update({k: v.clone() for k, v in m.state_dict().items()})
        return False

    stopping = Rung(0.5, stop)
    stopped = distill(student(), tiny_task.model, tiny_task, settings, rungs=[stopping])
    assert stopping.stopped
    for name, value in stopped.state_dict().items():
        assert torch.equal(value, at_rung[name])
    assert any(not torch.equal(v, at_rung[k]) for k, v in plain.state_dict().items())


def test_screened_out_plans_are_recorded_counted_and_not_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any trained trial as fast and small screens a plan out, whatever its metric: the
    # fastest uniform plan then screens out nearly every sampled one.
    monkeypatch.setattr(fidelity, "TOLERANCE", -10.0)
    result = search(make_tiny_task(width=32), trials=12, out=tmp_path, study_name="s", **SCREEN)
    study = optuna.load_study(study_name="s", storage=journal_storage(result.run_dir))
    out = [t for t in study.trials if t.state == TrialState.PRUNED and counted(t)]
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert out, "every sampled plan as slow and large as a trained one is screened out"
    assert len(out) + len(trained) == 12 == sum(counted(t) for t in study.trials)
    for trial in out:
        folder = result.run_dir / "trials" / f"{trial.number:04d}"
        record = read_json(folder / "metrics.json")
        assert record["rejected"].startswith("screened out") and "metric" not in record
        assert not (result.run_dir / "trials" / f".{trial.number:04d}.tmp").exists()
        assert 0 <= record["screen_metric"] <= 1 and record["screen_latency_ms"] > 0
        assert not (folder / "model.onnx").exists() and (folder / "plan.json").exists()
        assert trial.constraints["latency"] <= result.summary["budget_ms"] * 0.05
        assert trial.user_attrs["seconds"]["screening"] > 0
    for trial in trained:  # every trained one has a screened metric to be compared with
        assert "screen_metric" in trial.user_attrs
        if "reference" not in trial.user_attrs:  # and its latency is its untrained timing
            assert trial.user_attrs["latency_ms"] == trial.user_attrs["screen_latency_ms"]
        assert set(trial.user_attrs["seconds"]) == {
            "screening",
            "training",
            "building",
            "measuring",
        }
    assert result.summary["trials_screened_out"] == len(out)
    spent = result.summary["time"]
    assert spent["trials_screened_out"] == len(out) and spent["trials_trained"] == len(trained)
    assert spent["trial_seconds"]["screening"] > 0 and "baseline" in spent["setup_seconds"]
    assert f"{len(out)} screened out" in study_status(str(result.run_dir), None, None)
    table = format_table(result.summary)
    assert f"{len(trained)} trained, {len(out)} screened out" in table
    assert "not re-measured" not in table  # the front was timed again at the end


def test_full_fidelity_trains_every_plan(tiny_task: Task, tmp_path: Path) -> None:
    result = search(tiny_task, trials=10, out=tmp_path, study_name="f", fidelity="full", **FAST)
    study = optuna.load_study(study_name="f", storage=journal_storage(result.run_dir))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 10
    assert all("screen_latency_ms" not in t.user_attrs for t in study.trials)
    assert result.summary["time"]["trial_seconds"]["screening"] == 0
    baseline = read_json(result.run_dir / "baseline" / "metrics.json")
    for trial in study.trials:  # each trained artifact is timed itself
        record = read_json(result.run_dir / "trials" / f"{trial.number:04d}" / "metrics.json")
        if trial.user_attrs.get("reference") == "fp32":  # the baseline file itself: not again
            assert record["model_sha256"] == sha256_file(result.run_dir / "baseline" / "model.onnx")
            assert record["latency_timed_on"] == TIMED_AS_BASELINE
            assert record["latency_ratio"] == 1.0 and record["metric"] == baseline["metric"]
            assert record["peak_memory_mb"] == baseline["peak_memory_mb"]
        else:
            assert record["latency_timed_on"] == TIMED_THIS_ARTIFACT


def test_a_plan_timed_over_the_budget_untrained_is_rejected_uncounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A margin of -100% puts every plan after the references over the limit once measured.
    monkeypatch.setattr(gates, "LATENCY_MARGIN", -1.0)
    monkeypatch.setattr(loop, "MAX_REJECTED_IN_A_ROW", 2)
    result = search(make_tiny_task(), trials=12, out=tmp_path, study_name="u", **SCREEN)
    study = optuna.load_study(study_name="u", storage=journal_storage(result.run_dir))
    rejected = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert len(rejected) == 2 and not any(counted(t) for t in rejected)
    for trial in rejected:
        assert trial.user_attrs["rejected"].startswith("measured untrained")
        budget = result.summary["budget_ms"]  # the measured latency is what the sampler sees
        assert trial.constraints["latency"] == trial.user_attrs["screen_latency_ms"] - budget
        assert "screen_metric" not in trial.user_attrs
    assert result.summary["trials_rejected_untrained"] == 2
    assert "2 plans in a row" in result.summary["stopped_early"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fine_tuning_on_cuda(tmp_path: Path) -> None:
    result = search(make_tiny_task(), trials=4, out=tmp_path, study_name="g", device="cuda", **FAST)
    assert result.feasible
    metrics = read_json(
        result.run_dir / result.pareto[0]["path"].replace("model.onnx", "metrics.json")
    )
    assert metrics["metric"] > 0.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(tmp_path: Path) -> None:
    from autoshuikou.errors import UserError

    with pytest.raises(UserError, match="no CUDA device"):
        search(make_tiny_task(), trials=1, out=tmp_path, device="cuda", **FAST)


def test_the_untrained_build_is_calibrated_on_a_few_samples(
    tiny_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It is only timed and sized, which its int8 scales do not change."""
    from autoshuikou.runtimes.onnxruntime import OnnxRuntime
    from autoshuikou.study import screening

    ctx, _ = prepare_context(tiny_task, None, tmp_path / "run", 0, 1, 0.2, Progress(io.StringIO()))
    samples: list[int] = []
    build = OnnxRuntime.build

    def spy(self: OnnxRuntime, *args: Any, **kwargs: Any) -> None:
        samples.append(sum(len(next(iter(feed.values()))) for feed in args[3]))
        build(self, *args, **kwargs)

    monkeypatch.setattr(OnnxRuntime, "build", spy)
    plan = next(p for p in ctx.space.random_plans(8, seed=1) if p.int8_layers)
    screen = screening.time_untrained(ctx, 0, plan, lambda _s: None)
    assert samples == [screening.TIMING_CALIBRATION_SAMPLES] and screen.size_bytes > 0
    assert sum(len(next(iter(feed.values()))) for feed in ctx.calibration) > samples[0]


def test_training_starts_from_the_untrained_builds_student(
    tiny_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan is pruned once: its untrained build's student, copied before anything ran
    on it, is what training starts from, and it trains the very model a fresh prune does."""
    from autoshuikou.study import screening, trial

    ctx, _ = prepare_context(tiny_task, None, tmp_path / "run", 0, 1, 0.2, Progress(io.StringIO()))
    plan = next(p for p in ctx.space.random_plans(8, seed=2) if p.distill.epochs > 0)

    def disturb(student: torch.nn.Module) -> None:  # as the predictor's recalibration does
        with torch.no_grad():
            for param in student.parameters():
                param.add_(1.0)

    screen = screening.time_untrained(ctx, 0, plan, lambda _s: None, inspect=disturb)
    assert screen.student is not None and "screen_student" not in screen.to_attrs()
    prunes: list[int] = []
    real_prune = trial.prune
    monkeypatch.setattr(trial, "prune", lambda *a, **k: prunes.append(1) or real_prune(*a, **k))
    reused = trial.run_trial(ctx, 1, plan, pruned=screen.student)
    assert prunes == []
    fresh = trial.run_trial(ctx, 2, plan)
    assert prunes == [1] and reused is not None and fresh is not None
    assert reused["model_sha256"] == fresh["model_sha256"]
    assert reused["torch_macs"] == fresh["torch_macs"] < ctx.baseline.macs
