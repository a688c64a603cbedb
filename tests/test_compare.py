"""`autoshuikou compare`: front metrics against hand-computed cases, and a tiny end-to-end run."""

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.cli import main
from autoshuikou.compare.metrics import (
    dominates_or_equals,
    first_reaching,
    greater_p_value,
    hypervolume,
    hypervolume_curve,
    pareto_front,
)
from autoshuikou.compare.run import (
    StudyOutcome,
    compare,
    mean_curve_reaches,
    search_clock,
    seconds_to_reach,
    time_shares,
)
from autoshuikou.compare.strategies import UNIFORM_RATIOS, parse_strategies
from autoshuikou.errors import UserError
from autoshuikou.plan import Plan
from autoshuikou.study.storage import journal_storage
from autoshuikou.tasks import Task
from autoshuikou.util import read_json

REF = (0.5, 0.9)  # (latency ratio, metric retained)


def test_hypervolume_of_hand_computed_fronts() -> None:
    front = [(0.2, 0.95), (0.4, 0.99)]
    # (0.4 - 0.2) * (0.95 - 0.9) + (0.5 - 0.4) * (0.99 - 0.9)
    assert hypervolume(front, REF) == pytest.approx(0.019)
    # Dominated points, points past the budget or under the floor, and duplicates add nothing.
    noise = [(0.45, 0.93), (0.6, 0.999), (0.1, 0.85), (0.2, 0.95), (0.5, 0.99)]
    assert hypervolume(front + noise, REF) == pytest.approx(0.019)
    assert hypervolume([], REF) == 0.0
    assert hypervolume([(0.0, 1.0)], REF) == pytest.approx(0.05)


def test_hypervolume_matches_optunas_on_random_fronts() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pts = [(float(x), float(y)) for x, y in rng.uniform([0, 0.85], [0.55, 1.0], (12, 2))]
        inside = np.array([(x, -y) for x, y in pts if x < REF[0] and y > REF[1]])
        expected = compute_hypervolume(inside, np.array([REF[0], -REF[1]])) if len(inside) else 0
        assert hypervolume(pts, REF) == pytest.approx(expected)


def test_dominance_and_front() -> None:
    front = pareto_front([(0.2, 0.95), (0.4, 0.99), (0.3, 0.94), (0.4, 0.98)])
    assert front == [(0.2, 0.95), (0.4, 0.99)]
    assert dominates_or_equals((0.2, 0.95), (0.2, 0.95))  # equal counts
    assert dominates_or_equals((0.2, 0.95), (0.3, 0.94))
    assert not any(dominates_or_equals(f, (0.3, 0.96)) for f in front)
    assert not dominates_or_equals((0.2, 0.95), (0.1, 0.90))


def test_curve_reaching_and_rank_test() -> None:
    curve = hypervolume_curve([None, (0.3, 0.95), None, (0.1, 0.99)], REF)
    assert curve[0] == 0.0 and curve[1] == pytest.approx(0.01)
    assert curve[2] == curve[1] and curve[3] == pytest.approx(0.036)
    assert first_reaching(curve, 0.01) == 2 and first_reaching(curve, 0.02) == 4
    assert first_reaching(curve, 1.0) is None
    # 3 seeds each, completely separated: the exact one-sided p is 1/20.
    assert greater_p_value([3, 4, 5], [0, 1, 2]) == pytest.approx(0.05)
    assert greater_p_value([0, 1, 2], [3, 4, 5]) == pytest.approx(1.0)
    assert greater_p_value([1, 1], [1, 1]) == 1.0


def _outcome(strategy: str, seed: int, seconds: list[float], curve: list[float]) -> StudyOutcome:
    return StudyOutcome(
        strategy, seed, len(curve), 0, curve[-1], None, None, None, None, seconds[-1], 0.0,
        curve, seconds, [], {}, {}, [],
    )  # fmt: skip


def test_time_to_reach_another_strategys_final_hypervolume() -> None:
    fast = [_outcome("a", 0, [10, 20, 30], [0.01, 0.02, 0.03]), _outcome("a", 1, [5, 9], [0, 0.01])]
    slow = [_outcome("b", 0, [50, 100], [0.01, 0.02]), _outcome("b", 1, [40, 80], [0.01, 0.02])]
    assert seconds_to_reach(fast[0], 0.02) == 20 and seconds_to_reach(fast[1], 0.02) is None
    # Per seed: when "a" reached "b"'s final hypervolume, and as a share of b's wall time.
    assert time_shares(fast, slow) == [
        {"seed": 0, "seconds": 20, "share": 0.2},
        {"seed": 1, "seconds": None, "share": None},
    ]
    # Over seeds: b's mean final is 0.02 and its mean wall time 90 s. At 20 s seed 0 is at
    # 0.02 and seed 1 at 0.01 (mean 0.015); at 30 s seed 0 reaches 0.03: the mean 0.02.
    assert mean_curve_reaches(fast, slow) == {"target": 0.02, "seconds": 30, "share": 30 / 90}
    higher = [_outcome("b", 0, [50], [0.05])]
    assert mean_curve_reaches(fast, higher) == {"target": 0.05, "seconds": None, "share": None}


def _timed_trial(
    number: int, start: float, end: float, worker: str, state: TrialState
) -> FrozenTrial:
    t0 = datetime(2026, 1, 1)
    return FrozenTrial(
        number=number,
        trial_id=number,
        state=state,
        value=None,
        values=[1.0] if state == TrialState.COMPLETE else None,
        datetime_start=t0 + timedelta(seconds=start),
        datetime_complete=t0 + timedelta(seconds=end),
        params={},
        distributions={},
        user_attrs={"worker": worker},
        system_attrs={},
        intermediate_values={},
    )


def test_a_stopped_and_resumed_study_is_timed_without_its_pause() -> None:
    done, failed = TrialState.COMPLETE, TrialState.FAIL
    t0 = datetime(2026, 1, 1)
    # Process a runs two trials and is killed in its third; its orphan is marked failed when
    # process b resumes the study 10 minutes later. b runs two more trials.
    trials = [
        _timed_trial(0, 0, 10, "host:1", done),
        _timed_trial(1, 10, 20, "host:1", done),
        _timed_trial(2, 20, 620, "host:1", failed),
        _timed_trial(3, 620, 630, "host:2", done),
        _timed_trial(4, 630, 645, "host:2", done),
    ]
    clock = search_clock(trials)
    assert clock(t0 + timedelta(seconds=20)) == 20
    assert clock(t0 + timedelta(seconds=300)) == 20  # paused: no process ran trials
    assert clock(t0 + timedelta(seconds=630)) == 30
    assert clock(datetime.max) == 45
    # Two workers side by side: the time they overlap counts once.
    side_by_side = [_timed_trial(0, 0, 30, "a:1", done), _timed_trial(1, 5, 40, "b:1", done)]
    assert search_clock(side_by_side)(datetime.max) == 40


def test_strategy_names_are_checked() -> None:
    parsed = parse_strategies("tpe-warm,tpe,random:60,uniform,full-fidelity,screening", 30)
    assert [(s.name, s.trials) for s in parsed] == [
        ("tpe-warm", 30),
        ("tpe", 30),
        ("random", 60),
        ("uniform", 8),
        ("full-fidelity", 30),
        ("screening", 30),
    ]
    assert [s.is_default for s in parsed] == [True, False, False, False, False, False]
    # full-fidelity is the default before issue 13: every plan trained, the latency model on,
    # the teacher run at every step, each precision twin trained again.
    full, screening = parsed[-2:]
    assert (full.fidelity, full.predict, full.warm_start) == ("full", True, True)
    assert not full.teacher_cache and not full.reuse_students
    assert parsed[0].reuse_students and screening.reuse_students
    assert (parsed[0].fidelity, parsed[0].predict, parsed[0].teacher_cache) == (
        "auto",
        False,
        True,
    )
    assert (screening.fidelity, screening.warm_start) == ("screen", True)
    for bad in ("annealing", "tpe:0", "tpe,tpe", "uniform:5", ""):
        with pytest.raises(UserError):
            parse_strategies(bad, 30)
    assert main(["compare", "--strategies", "tpe,bogus"]) == 2


@pytest.mark.slow
def test_compare_runs_end_to_end_and_reproduces(tiny_task: Task, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    space = tmp_path / "space.yaml"  # one epoch, fixed rounding: seconds per study
    space.write_text(
        "prune: {round_to: 8, default: {min: 0.0, max: 0.75, step: 0.25}}\n"
        "precision: {default: [int8, fp32]}\n"
        "distill: {epochs: {min: 1, max: 1}, lr: {min: 0.001, max: 0.01, log: true},\n"
        "  temperature: {min: 1.0, max: 4.0}, alpha: {min: 0.0, max: 1.0}}\n"
    )
    args = {
        "space": space,
        "budget": "300%",
        "trials": 3,
        "seeds": 2,
        "out": out,
        "strategies": "tpe-warm,no-distill,uniform",
        "measure_seconds": 0.1,
    }
    summary = compare(tiny_task, **args)  # type: ignore[arg-type]
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 2
    assert [r["strategy"] for r in summary["rows"]] == ["tpe-warm", "no-distill", "uniform"]
    assert summary["default"] == "tpe-warm"
    for name in (
        "fronts.png",
        "hypervolume.png",
        "hypervolume_seconds.png",
        "tpe-warm-seed0/front.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = read_json(out / "compare.json")
    assert record["setup"]["seeds"] == 2 and record["versions"]["optuna"] == optuna.__version__
    assert record["hardware"]["cpu"] and record["hypervolume_reference"]["metric_retained"] == 0.9

    def plans(name: str) -> list[Plan]:
        study = optuna.load_study(study_name=name, storage=journal_storage(out / name))
        done = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(done) == (8 if name.startswith("uniform") else 3)
        folders = [out / name / "trials" / f"{t.number:04d}" for t in done]
        return [Plan.from_dict(read_json(f / "plan.json")) for f in folders]

    uniform = [p for p in plans("uniform-seed1") if p.prune]
    assert sorted({r for p in uniform for r in set(p.prune.values())}) == list(UNIFORM_RATIOS)
    assert all(len(set(p.prune.values())) == 1 for p in uniform)  # one ratio everywhere
    assert all(p.distill.epochs == 0 for p in plans("no-distill-seed0"))
    # The default strategy starts from the uniform plans (after the two references).
    warm = plans("tpe-warm-seed0")[2]
    assert set(warm.prune.values()) == {0.25} and warm.distill.epochs > 0
    # Every study timed against the same baseline measurement.
    baselines = {
        read_json(out / n / "baseline" / "metrics.json")["latency_ms"]
        for n in ("tpe-warm-seed0", "no-distill-seed1", "uniform-seed0")
    }
    assert len(baselines) == 1

    # The default starts from the uniform plans: with training deterministic per plan and
    # seed, it holds the very same model as the uniform baseline.
    first = [d for d in summary["uniform_dominance"] if d["baseline"] == "uniform-0.25-fp32"]
    assert len(first) == 2 and all(d["dominated"] for d in first)
    by_study = {(s["strategy"], s["seed"]): s for s in record["studies"]}
    for seed in (0, 1):
        for label in ("uniform-0.25-fp32", "int8-only"):  # int8: calibration is fixed too
            sha = by_study["uniform", seed]["fixed_models"][label]
            assert sha in by_study["tpe-warm", seed]["feasible_models"]

    before = (out / "results.csv").read_bytes()
    compare(tiny_task, **args)  # type: ignore[arg-type]
    assert (out / "results.csv").read_bytes() == before  # the rerun reproduces the table
    with pytest.raises(UserError, match="other settings"):
        compare(tiny_task, **{**args, "budget": "200%"})  # type: ignore[arg-type]
