"""End-to-end searches on tiny tasks: files, resume, fingerprints, reproducibility."""

import contextlib
from pathlib import Path

import onnx
import optuna
import pytest
from optuna.trial import TrialState

from autoshuikou import load, search
from autoshuikou.errors import UserError
from autoshuikou.measure.accuracy import artifact_metric, torch_metric
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.plan import Plan
from autoshuikou.report.verify import verify_run
from autoshuikou.runtimes.onnxruntime.counts import graph_counts
from autoshuikou.study.front import front
from autoshuikou.study.storage import journal_storage
from autoshuikou.study.summary import int8_reference
from autoshuikou.tasks import Task
from autoshuikou.util import read_json, write_json

pytestmark = pytest.mark.slow

FAST = {"measure_seconds": 0.2, "budget": "300%", "predict": False, "refine": 0}


def _study(run_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=run_dir.name, storage=journal_storage(run_dir))


def test_search_writes_deployable_pareto_models_and_resumes(
    tiny_task: Task, tmp_path: Path
) -> None:
    result = search(tiny_task, trials=4, out=tmp_path, study_name="s", **FAST)
    run = tmp_path / "s"
    assert result.run_dir == run
    base = read_json(run / "baseline" / "metrics.json")
    assert (run / "baseline" / "model.onnx").exists() and base["metric"] > 0.5
    assert read_json(run / "summary.json")["trials_complete"] == 4
    assert result.feasible and result.pareto
    assert (run / "front.png").read_bytes()[:4] == b"\x89PNG"
    # The chart marks the whole-model int8 build the baseline chose its format on.
    formats = read_json(run / "baseline" / "int8_formats.json")
    chosen = next(row for row in formats if row["chosen"])
    assert int8_reference(run) == (
        chosen["latency_ratio_to_fp32"],
        chosen["metric"] / base["metric"],
    )

    for point in result.pareto:
        model = run / point["path"]
        metrics = read_json(model.parent / "metrics.json")
        # A fresh ONNX Runtime session reproduces the recorded metric exactly.
        onnx.checker.check_model(str(model))
        assert artifact_metric(model, tiny_task, RuntimeSettings()) == metrics["metric"]
        counts = graph_counts(model, tiny_task.example_input.shape)
        assert (counts.params, counts.macs) == (metrics["params"], metrics["macs"])
        assert metrics["size_bytes"] == model.stat().st_size
        assert metrics["latency_ms"] <= metrics["budget_ms"] and metrics["feasible"]
        # round_to: auto in the default space, so the measured choice is used everywhere.
        assert Plan.from_dict(read_json(model.parent / "plan.json")).round_to == base["round_to"]
        for key in (
            "latency_ratio",
            "latency_raw",
            "peak_memory_mb",
            "hardware",
            "runtime",
            "baseline",
        ):
            assert key in metrics

    # The run was given a Task object: its config.yaml cannot rebuild the teacher, so the
    # student is loaded with the task, and refused without it (never a wrong teacher).
    trial_folder = (run / result.pareto[0]["path"]).parent
    with pytest.raises(UserError, match="Task object passed from Python"):
        load(trial_folder, student=True)
    student = load(trial_folder, student=True, task=tiny_task).module
    assert student is not None
    assert torch_metric(student, tiny_task) == pytest.approx(
        read_json(trial_folder / "metrics.json")["metric"], abs=0.02
    )

    study = _study(run)
    references = [t.user_attrs.get("reference") for t in study.trials]
    assert references.count("fp32") == 1 and references.count("int8") == 1
    # Only models on the search's front keep their ONNX file; every trial keeps plan and metrics.
    # The reported front is re-measured, so it is a subset of those.
    on_front = {t.number for t in front(study)}
    assert {p["trial"] for p in result.pareto} <= on_front
    # Warm-start trials beyond the total stay queued (WAITING) for a resumed run.
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        folder = run / "trials" / f"{trial.number:04d}"
        assert (folder / "metrics.json").exists()
        assert (folder / "model.onnx").exists() == (trial.number in on_front)

    # Trials after the first trained one find the teacher's outputs cached.
    def steps_cached(numbers: range) -> list[int]:
        found = [run / "trials" / f"{n:04d}" / "metrics.json" for n in numbers]
        return [read_json(f)["teacher_steps_cached"] for f in found if f.exists()]

    assert max(steps_cached(range(4))) > 0

    # The same call with a larger total resumes: earlier trials stay, references stay single.
    # (Without the teacher cache, which changes no result.)
    search(tiny_task, trials=6, out=tmp_path, study_name="s", teacher_cache_mb=0, **FAST)
    study = _study(run)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 6
    assert steps_cached(range(4, len(study.trials))) == [0, 0]
    assert [t.user_attrs.get("reference") for t in study.trials].count("fp32") == 1
    assert not list((run / "trials").glob(".*.tmp"))


def test_resume_with_another_space_is_refused(tiny_task: Task, tmp_path: Path) -> None:
    search(tiny_task, trials=2, out=tmp_path, study_name="s", **FAST)
    other = tmp_path / "other.yaml"
    default = (Path(__file__).parents[1] / "search_spaces" / "default.yaml").read_text()
    other.write_text(default.replace("max: 0.75", "max: 0.5"))
    with pytest.raises(UserError) as err:
        search(tiny_task, trials=3, out=tmp_path, study_name="s", space=other, **FAST)
    assert "space_sha256" in err.value.message
    assert "--study-name" in err.value.hint


def test_budget_below_the_fastest_plan_is_refused(tiny_task: Task, tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        search(
            tiny_task,
            trials=2,
            out=tmp_path,
            study_name="s",
            budget="1us",
            measure_seconds=0.2,
            predict=False,
        )
    assert "below the fastest model" in err.value.message
    assert not (tmp_path / "s" / "study.journal").exists()
    # Nothing is damaged: the same study runs with a reachable budget.
    assert search(tiny_task, trials=2, out=tmp_path, study_name="s", **FAST).feasible


def test_verify_detects_a_tampered_record(tiny_task: Task, tmp_path: Path) -> None:
    result = search(tiny_task, trials=3, out=tmp_path, study_name="s", **FAST)
    rows = verify_run(result.run_dir, None, seconds=0.3, task=tiny_task)
    assert rows and all(r["metric"] and r["counts"] for r in rows)
    metrics_path = result.run_dir / result.pareto[0]["path"].replace("model.onnx", "metrics.json")
    tampered = read_json(metrics_path)
    tampered["metric"] += 0.01
    write_json(metrics_path, tampered)
    rows = verify_run(result.run_dir, None, seconds=0.3, task=tiny_task)
    assert not rows[0]["metric"]


def test_show_reports_missing_and_damaged_models(tiny_task: Task, tmp_path: Path) -> None:
    from autoshuikou.cli import main
    from autoshuikou.report.summary import artifact_problems, load_summary

    result = search(tiny_task, trials=3, out=tmp_path, study_name="s", **FAST)
    assert artifact_problems(result.run_dir, load_summary(result.run_dir)) == []
    first = result.run_dir / result.pareto[0]["path"]
    first.write_bytes(first.read_bytes()[:-10] + b"0123456789")
    problems = artifact_problems(result.run_dir, load_summary(result.run_dir))
    assert problems == [
        f"trial {result.pareto[0]['trial']}: {first} is damaged (checksum mismatch)"
    ]
    first.unlink()
    assert "is missing" in artifact_problems(result.run_dir, load_summary(result.run_dir))[0]
    assert main(["show", str(result.run_dir)]) == 1


def test_a_lost_ctrl_c_still_stops_the_search_after_the_running_trial(
    tiny_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A signal handled inside a destructor raises nowhere ("Exception ignored"): simulate
    # that during the first trial; the search must stop before starting another.
    from autoshuikou import interrupt
    from autoshuikou.study import objective

    real_run_trial = objective.run_trial

    def run_trial_and_lose_a_signal(*args: object, **kwargs: object) -> object:
        metrics = real_run_trial(*args, **kwargs)  # type: ignore[arg-type]
        with contextlib.suppress(KeyboardInterrupt):  # swallowed, as in a destructor
            interrupt._on_signal(2, None)
        return metrics

    monkeypatch.setattr(objective, "run_trial", run_trial_and_lose_a_signal)
    try:
        with pytest.raises(KeyboardInterrupt):
            search(tiny_task, trials=5, out=tmp_path, study_name="s", **FAST)
    finally:
        interrupt.reset()
    study = _study(tmp_path / "s")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 1
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # What finished is a run: a summary (search-time latencies, labelled so) that show reads.
    from autoshuikou.cli import main
    from autoshuikou.report.summary import format_table, load_summary

    summary = load_summary(tmp_path / "s")
    assert summary["stopped_early"] == "interrupted"
    assert summary["front_remeasured"] is False
    assert "the front was not re-measured" in format_table(summary)
    assert summary["trials_complete"] == 1
    assert main(["show", str(tmp_path / "s")]) == 0
    # verify reads it too (no final re-measurement: it checks the search-time ratios).
    rows = verify_run(tmp_path / "s", task=tiny_task, seconds=0.5)
    assert rows and all(row["metric"] and row["counts"] for row in rows)


def test_energy_objective_where_counters_exist_and_a_clear_refusal_where_not(
    tiny_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOSHUIKOU_POWERCAP", str(tmp_path / "missing"))
    with pytest.raises(UserError) as err:
        search(tiny_task, trials=2, out=tmp_path, study_name="e", energy_objective=True, **FAST)
    assert "energy cannot be an objective" in err.value.message
    assert "--energy-objective" in err.value.hint
    assert not (tmp_path / "e").exists()  # refused before any work

    # A RAPL tree whose counter does not move: every model reads 0 mJ, a real reading.
    zone = tmp_path / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text("1000")
    (zone / "max_energy_range_uj").write_text(str(10**9))
    monkeypatch.setenv("AUTOSHUIKOU_POWERCAP", str(zone.parent))
    result = search(
        tiny_task, trials=3, out=tmp_path, study_name="e", energy_objective=True, **FAST
    )
    study = _study(tmp_path / "e")
    assert len(study.directions) == 4
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.values[3] == trial.user_attrs["energy_mj"] == 0.0
    summary = read_json(tmp_path / "e" / "summary.json")
    assert summary["energy"] == {**summary["energy"], "available": True, "objective": True}
    assert result.pareto and all("energy_mj" in p for p in result.pareto)
    with pytest.raises(UserError) as err:  # resuming without it would change the objectives
        search(tiny_task, trials=4, out=tmp_path, study_name="e", **FAST)
    assert "other objectives" in err.value.message


def test_the_hardware_choices_are_made_once_per_machine(tiny_task: Task, tmp_path: Path) -> None:
    # A second run on the same machine, model and space reuses the measured int8 format and
    # rounding (so it also finds the same cached latency model) instead of re-deciding them.
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.baseline import choices_path
    from autoshuikou.study.prepare import prepare_context

    first, _ = prepare_context(tiny_task, None, tmp_path / "a", 0, 1, 0.2, Progress())
    cached = read_json(choices_path(first))
    second, _ = prepare_context(tiny_task, None, tmp_path / "b", 0, 1, 0.2, Progress())
    assert second.baseline.int8_format.to_dict() == cached["int8_format"]
    assert second.space.round_to == cached["round_to"] == first.space.round_to
    record = read_json(tmp_path / "b" / "baseline" / "metrics.json")
    assert record["choices_from_cache"] == str(choices_path(first))


def test_refinement_trains_the_best_front_model_longer_once(
    tiny_task: Task, tmp_path: Path
) -> None:
    space = tmp_path / "refine.yaml"
    default = (Path(__file__).parents[1] / "search_spaces" / "default.yaml").read_text()
    space.write_text(default + "refine: {models: 1, epochs: 6}\n")
    spaced = {**FAST, "refine": None}  # the space's refine: (FAST turns refinement off)
    result = search(tiny_task, trials=3, out=tmp_path, study_name="s", space=space, **spaced)
    study = _study(result.run_dir)
    refined = [t for t in study.trials if "refine_of" in t.user_attrs]
    assert len(refined) == 1 and refined[0].state == TrialState.COMPLETE
    # Refinement is a new trial: the uniform plans beyond the three stay queued for a rerun.
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert waiting and all("warm_start" in t.user_attrs for t in waiting)
    assert refined[0].number == max(t.number for t in study.trials)
    source = refined[0].user_attrs["refine_of"]
    # The best feasible model of the search's own trials (no references) is trained again.
    own = [
        t
        for t in study.get_trials(states=(TrialState.COMPLETE,))
        if t.user_attrs["feasible"] and not {"refine_of", "reference"} & set(t.user_attrs)
    ]
    assert study.trials[source] in own
    assert study.trials[source].user_attrs["metric"] == max(t.user_attrs["metric"] for t in own)
    folder = result.run_dir / "trials"
    plan = read_json(folder / f"{refined[0].number:04d}" / "plan.json")
    original = read_json(folder / f"{source:04d}" / "plan.json")
    assert plan["distill"]["epochs"] == 6 and original["distill"]["epochs"] < 6
    assert {**plan, "distill": None} == {**original, "distill": None}
    metrics = read_json(folder / f"{refined[0].number:04d}" / "metrics.json")
    assert metrics["refined_from"] == source
    # Both scores stay on record: the search's and the refined one.
    assert metrics["metric_before_refine"] == study.trials[source].user_attrs["metric"]
    summary = read_json(result.run_dir / "summary.json")
    assert summary["time"]["trials_refined"] == 1 and summary["time"]["refine_seconds"] > 0
    # The three trials are still three: a rerun resumes and trains nothing more.
    search(tiny_task, trials=3, out=tmp_path, study_name="s", space=space, **spaced)
    assert len(_study(result.run_dir).trials) == len(study.trials)
    # Raising the epochs refines the same model again, longer, once.
    longer = dict(trials=3, out=tmp_path, study_name="s", space=space, refine_epochs=8)
    for _ in range(2):
        search(tiny_task, **longer, **spaced)
    again = [t for t in _study(result.run_dir).trials if "refine_of" in t.user_attrs]
    assert [t.user_attrs["plan"]["distill"]["epochs"] for t in again] == [6, 8]
    assert again[1].user_attrs["refine_of"] == source and again[1].state == TrialState.COMPLETE
    # verify rebuilds every front model, a refined one too, from its plan.json.
    rows = verify_run(result.run_dir, None, seconds=0.2, task=tiny_task)
    assert rows and all(row["metric"] for row in rows)
