"""The objectives list, the typed trial record and the search's config: fast, no training."""

import argparse
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.study import StudyDirection
from optuna.trial import TrialState

from autoshuikou.cli import NEGATED, _parser, search_config
from autoshuikou.errors import UserError
from autoshuikou.study.config import DEFAULTS, SearchConfig
from autoshuikou.study.final import FrontModel, final_front
from autoshuikou.study.objectives import (
    ENERGY,
    STUDY_ATTR,
    directions,
    objectives_for,
    point,
    study_objectives,
)
from autoshuikou.study.record import RecordError, TrialRecord, TrialTags
from autoshuikou.study.storage import open_study

RECORD = TrialRecord(
    metric=0.93,
    latency_ms=0.21,
    latency_ratio=0.42,
    size_bytes=20480,
    macs=1_000_000,
    params=5000,
    peak_memory_mb=31.5,
    feasible=True,
    speedup=1 / 0.42,
    metric_retained=0.97,
    trial_seconds=3.5,
    latency_spread=0.04,
    model_sha256="ab" * 32,
)
# The user-attribute keys existing studies (and optuna-dashboard views of them) hold.
KEYS = {
    "metric",
    "latency_ms",
    "latency_ratio",
    "size_bytes",
    "macs",
    "params",
    "peak_memory_mb",
    "feasible",
    "speedup",
    "metric_retained",
    "trial_seconds",
    "latency_spread",
    "model_sha256",
}
OPTIONAL = {"energy_mj", "latency_predicted_ms", "prediction_error"}


def _completed(study: optuna.Study, record: TrialRecord, **tags: Any) -> None:
    trial = study.ask()
    for key, value in {**tags, **record.to_attrs()}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, point(record, study_objectives(study)))


def test_a_record_round_trips_through_a_study_under_the_historical_keys() -> None:
    study = optuna.create_study(directions=directions(objectives_for(energy=False)))
    _completed(study, RECORD, worker="host:1", reference="fp32")
    full = replace(RECORD, energy_mj=0.5, latency_predicted_ms=0.2, prediction_error=-0.05)
    _completed(study, full)
    first, second = study.trials
    assert set(first.user_attrs) == KEYS | {"worker", "reference"}  # None extras left out
    assert set(second.user_attrs) == KEYS | OPTIONAL
    assert TrialRecord.from_trial(first) == RECORD
    assert TrialRecord.from_trial(second) == full
    assert TrialTags.from_trial(first) == TrialTags(reference="fp32", worker="host:1")
    assert first.values == [0.93, 0.21, 20480.0]


def test_a_record_from_a_trials_metrics_as_run_trial_returns_them() -> None:
    metrics = {
        **{k: v for k, v in RECORD.to_attrs().items() if k != "latency_spread"},
        "latency_raw": {"median_ms": 0.2, "spread": 0.04},
        "latency_predicted_ms": 0.252,
        "trial": 7,
        "hardware": {"cpu": "x"},  # not part of the record
    }
    record = TrialRecord.from_metrics(metrics)
    assert record == replace(RECORD, latency_predicted_ms=0.252, prediction_error=0.252 / 0.21 - 1)


def test_a_trial_without_a_record_is_a_clear_error() -> None:
    study = optuna.create_study(directions=directions(objectives_for(energy=False)))
    trial = study.ask()
    attrs = RECORD.to_attrs()
    del attrs["latency_ms"]
    for key, value in attrs.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)
    with pytest.raises(RecordError) as err:
        TrialRecord.from_trial(study.trials[0])
    assert "trial 0 (FAIL) has no latency_ms" in str(err.value)


def test_energy_adds_a_fourth_minimized_objective() -> None:
    plain, energy = objectives_for(energy=False), objectives_for(energy=True)
    assert energy == (*plain, ENERGY)
    assert directions(energy) == [
        StudyDirection.MAXIMIZE,
        StudyDirection.MINIMIZE,
        StudyDirection.MINIMIZE,
        StudyDirection.MINIMIZE,
    ]
    assert point(replace(RECORD, energy_mj=0.5), energy) == (0.93, 0.21, 20480.0, 0.5)
    with pytest.raises(ValueError, match="energy_mj"):
        point(RECORD, energy)  # measured where no energy counter was readable
    record_fields = {f.name for f in fields(TrialRecord)}
    assert all(o.attr in record_fields for o in energy)


def test_a_study_knows_its_objectives_and_refuses_others(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    sampler = optuna.samplers.RandomSampler()

    def join(energy: bool) -> optuna.Study:
        return open_study(
            storage, tmp_path, "s", {"v": 1}, sampler, {}, objectives=objectives_for(energy)
        )

    study = join(energy=True)
    assert study.user_attrs[STUDY_ATTR] == ["metric", "latency", "size", "energy"]
    assert study_objectives(join(energy=True)) == objectives_for(energy=True)
    with pytest.raises(UserError, match="other objectives"):
        join(energy=False)
    # A study made before the names were stored: its objectives follow from its directions.
    old = optuna.create_study(directions=directions(objectives_for(energy=True)))
    assert STUDY_ATTR not in old.user_attrs
    assert study_objectives(old) == objectives_for(energy=True)


def _front_model(
    trial: int, metric: float, search_ms: float, final_ms: float, energy: float = 1.0
) -> FrontModel:
    record = replace(RECORD, metric=metric, latency_ms=search_ms, energy_mj=energy)
    return FrontModel(trial, record, final_ms / 0.5, 0.02, final_ms, feasible=True)


def test_the_final_front_uses_the_final_latency_and_the_objectives() -> None:
    # Trial 1 looked slower in the search, faster once re-measured: neither dominates.
    models = [_front_model(0, 0.95, 0.20, 0.20), _front_model(1, 0.94, 0.25, 0.18)]
    front, dropped = final_front(models, objectives_for(energy=False))
    assert [m.trial for m in front] == [0, 1] and dropped == []
    # The other way round: re-measured slower, trial 1 leaves the front...
    slower = [_front_model(0, 0.95, 0.20, 0.20), _front_model(1, 0.94, 0.18, 0.22, energy=0.5)]
    front, dropped = final_front(slower, objectives_for(energy=False))
    assert [m.trial for m in front] == [0] and [m.trial for m in dropped] == [1]
    # ... unless energy is an objective: it uses less.
    front, dropped = final_front(slower, objectives_for(energy=True))
    assert [m.trial for m in front] == [0, 1] and dropped == []


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"trials": 0}, "--trials"),
        ({"threads": 0}, "--threads"),
        ({"measure_seconds": 0.0}, "--measure-seconds"),
        ({"budget": "fast"}, "latency budget"),
        ({"fidelity": "half"}, "--fidelity"),
    ],
)
def test_a_bad_setting_is_refused_with_a_hint(settings: dict[str, Any], flag: str) -> None:
    with pytest.raises(UserError) as err:
        SearchConfig(**settings)
    assert flag in err.value.message and err.value.hint
    with pytest.raises(UserError):
        replace(DEFAULTS, **settings)  # a derived config is checked too


def _search_actions() -> list[argparse.Action]:
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    search = commands.choices["search"]
    return [a for a in search._actions if not isinstance(a, argparse._HelpAction)]


# A value other than the default, for flags whose type does not give one.
OTHER = {
    "budget": "75ms",
    "min_accuracy": "99%",
    "storage": "s.journal",
    "runtime": "torch",
    "fidelity": "full",
    "space": str(Path(__file__).parents[1] / "search_spaces" / "deep_prune.yaml"),
}


@pytest.mark.parametrize(
    "action",
    [a for a in _search_actions() if a.dest != "config"],  # --config: tests/test_config.py
    ids=lambda a: a.option_strings[0],
)
def test_every_search_flag_reaches_its_config_field(action: argparse.Action) -> None:
    field = NEGATED.get(action.dest, action.dest)
    assert field in {f.name for f in fields(SearchConfig)}, (
        f"{action.option_strings[0]} is not wired into SearchConfig (cli.search_config)"
    )
    assert action.default == getattr(DEFAULTS, field) or action.dest in NEGATED
    argv = [action.option_strings[0]]
    if action.nargs != 0:  # a flag with a value
        numeric = action.type in (int, float)
        argv.append(OTHER.get(action.dest) or (str((action.default or 0) + 2) if numeric else "x"))
    config = search_config(_parser().parse_args(["search", *argv]))
    changed = {
        f.name for f in fields(SearchConfig) if getattr(config, f.name) != getattr(DEFAULTS, f.name)
    }
    assert changed == {field}


def test_no_flags_give_the_default_config() -> None:
    assert search_config(_parser().parse_args(["search"])) == DEFAULTS


def test_the_summary_names_the_constraint_no_trial_met() -> None:
    from types import SimpleNamespace

    from autoshuikou.report.summary import _nothing_feasible
    from autoshuikou.study.summary import unmet_constraint

    study = optuna.create_study(directions=directions(objectives_for(energy=False)))

    def measured(latency_ms: float, metric: float, budget_ms: float, floor: float) -> None:
        trial = study.ask()
        for key, value in replace(RECORD, latency_ms=latency_ms, metric=metric).to_attrs().items():
            trial.set_user_attr(key, value)
        trial.set_constraint("latency", latency_ms - budget_ms)
        trial.set_constraint("metric", floor - metric)
        study.tell(trial, point(RECORD, study_objectives(study)))

    ctx = SimpleNamespace(budget_ms=0.2, min_metric=0.95)
    measured(0.1, 0.90, 0.2, 0.95)  # fast enough, not accurate enough
    measured(0.3, 0.97, 0.2, 0.95)  # accurate, too slow
    measured(0.15, 0.93, 0.2, 0.95)
    complete = study.get_trials(deepcopy=False)
    unmet, closest = unmet_constraint(complete, ctx)  # type: ignore[arg-type]
    assert unmet == "min_accuracy" and [t.number for t in closest] == [2, 0]  # most accurate
    summary = {"unmet": unmet, "metric_name": "top1", "min_metric": 0.95}
    assert _nothing_feasible(summary).startswith("No trial within the latency budget reached")
    unmet, closest = unmet_constraint(complete[1:2], ctx)  # type: ignore[arg-type]
    assert unmet == "latency" and [t.number for t in closest] == [1]
    unmet, _ = unmet_constraint(complete[:1], SimpleNamespace(budget_ms=0.05, min_metric=0.95))  # type: ignore[arg-type]
    assert unmet == "latency and min_accuracy"
    assert _nothing_feasible({"unmet": "latency"}) == "No trial met the budget. Closest trials:"
