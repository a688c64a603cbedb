"""The search's objectives, in one list: the study's directions, its Pareto points and the
reports all follow it, so an objective is added in one place."""

from __future__ import annotations

from dataclasses import dataclass, fields

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from autoshuikou.errors import UserError
from autoshuikou.study.pareto import Point
from autoshuikou.study.record import TrialRecord


@dataclass(frozen=True)
class Objective:
    name: str  # as stored in the study (its "objectives" user attribute)
    direction: StudyDirection
    attr: str  # the TrialRecord field it reads
    label: str  # for people


METRIC = Objective("metric", StudyDirection.MAXIMIZE, "metric", "metric")
LATENCY = Objective("latency", StudyDirection.MINIMIZE, "latency_ms", "latency ms")
SIZE = Objective("size", StudyDirection.MINIMIZE, "size_bytes", "size bytes")
ENERGY = Objective("energy", StudyDirection.MINIMIZE, "energy_mj", "mJ per inference")
# Pareto dominance (study.pareto) reads the first value as maximized, the rest minimized.
ALL = (METRIC, LATENCY, SIZE, ENERGY)
STUDY_ATTR = "objectives"  # the study user attribute naming its objectives

_RECORD_FIELDS = {f.name for f in fields(TrialRecord)}
assert all(o.attr in _RECORD_FIELDS for o in ALL), "an objective reads a TrialRecord field"


def objectives_for(energy: bool) -> tuple[Objective, ...]:
    """Metric, latency and size; energy per inference too with ``energy``."""
    return (METRIC, LATENCY, SIZE, ENERGY) if energy else (METRIC, LATENCY, SIZE)


def directions(objectives: tuple[Objective, ...]) -> list[StudyDirection]:
    return [o.direction for o in objectives]


def point(source: TrialRecord | FrozenTrial, objectives: tuple[Objective, ...]) -> Point:
    """The objective values of a record (or a completed trial's record), in order."""
    record = source if isinstance(source, TrialRecord) else TrialRecord.from_trial(source)
    values = []
    for o in objectives:
        value = getattr(record, o.attr)
        if value is None:
            raise ValueError(f"the record has no {o.attr}, which the {o.name} objective reads")
        values.append(float(value))
    return tuple(values)


def study_objectives(study: optuna.Study) -> tuple[Objective, ...]:
    """The objectives a study was created with."""
    names = study.user_attrs.get(STUDY_ATTR)
    if names is None:  # made before the names were stored (or its creator is storing them)
        return objectives_for(len(study.directions) == len(objectives_for(True)))
    by_name = {o.name: o for o in ALL}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(
            f"study {study.study_name!r} has objectives this version does not know: {unknown}",
            "use the autoshuikou version that created the study, or pass a new --study-name",
        )
    return tuple(by_name[n] for n in names)
