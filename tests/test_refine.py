"""Which front models are trained again after the search (study.refine)."""

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.plan import DistillSettings, Plan
from autoshuikou.study.refine import (
    Candidate,
    refine_targets,
    refined_plan,
    refinement_done,
    within_reach,
)

FRONT = [
    Candidate(trial=4, metric=0.775, latency_ms=0.83),  # the best
    Candidate(trial=5, metric=0.770, latency_ms=0.86),  # slower and worse: never picked
    Candidate(trial=9, metric=0.760, latency_ms=0.78),  # within 10% of trial 4: skipped
    Candidate(trial=12, metric=0.700, latency_ms=0.74),  # the best at <= 0.747 ms
    Candidate(trial=6, metric=0.400, latency_ms=0.51),
]


def test_refinement_walks_down_the_front_each_step_at_least_ten_percent_faster() -> None:
    assert refine_targets(FRONT, 1) == [4]
    assert refine_targets(FRONT, 2) == [4, 12]
    assert refine_targets(FRONT, 3) == [4, 12, 6]
    assert refine_targets(FRONT, 9) == [4, 12, 6]  # nothing faster than trial 6 is left
    assert refine_targets(FRONT, 0) == [] and refine_targets([], 3) == []


def test_a_refined_plan_changes_only_the_epochs() -> None:
    plan = Plan(
        prune={"g": 0.5},
        precision={"conv": "int8"},
        distill=DistillSettings(epochs=4, lr=3e-3, alpha=0.2),
        round_to=8,
        importance="taylor",
    )
    longer = refined_plan(plan, 24)
    assert longer.distill.epochs == 24
    assert longer.to_dict() | {"distill": {}} == plan.to_dict() | {"distill": {}}
    assert {k: v for k, v in longer.to_dict()["distill"].items() if k != "epochs"} == {
        k: v for k, v in plan.to_dict()["distill"].items() if k != "epochs"
    }


def test_only_interrupted_dead_or_queued_refinements_are_run_again() -> None:
    def trial(state: TrialState, **attrs: object) -> FrozenTrial:
        values = [0.5, 1.0, 100.0] if state == TrialState.COMPLETE else None
        plan = {"distill": {"epochs": 40}}
        return optuna.trial.create_trial(
            state=state, values=values, user_attrs=attrs | {"plan": plan}
        )

    assert refinement_done(trial(TrialState.COMPLETE), 40)
    assert refinement_done(trial(TrialState.PRUNED), 40)
    failed = trial(TrialState.FAIL, error="RuntimeError: boom")
    assert refinement_done(failed, 40)  # no loop
    assert not refinement_done(trial(TrialState.FAIL), 40)  # Ctrl-C, dead worker
    assert not refinement_done(trial(TrialState.WAITING), 40)


def test_raising_the_refine_epochs_refines_again() -> None:
    plan = {"distill": {"epochs": 40}}
    done = optuna.trial.create_trial(
        state=TrialState.COMPLETE, values=[0.5, 1.0, 100.0], user_attrs={"plan": plan}
    )
    assert refinement_done(done, 40)
    assert not refinement_done(done, 80) and not refinement_done(done, 20)


def test_a_model_just_under_the_goal_is_within_reach_of_refinement() -> None:
    # Without a goal every model is; with one, those at most REFINE_REACH of the baseline
    # metric under it (the baseline scores 0.9: 0.018 of reach).
    assert within_reach(0.5, None, 0.9)
    assert within_reach(0.95, 0.95, 0.9) and within_reach(0.933, 0.95, 0.9)
    assert not within_reach(0.93, 0.95, 0.9)
