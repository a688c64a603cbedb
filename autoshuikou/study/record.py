"""What a trial stores in the study: one typed record, written once, read by field.

A completed trial's measurements live in its Optuna user attributes (so that
optuna-dashboard shows them and a study can be read without the run folder). The key
names are the field names below and must not change: existing studies are read by them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any

from optuna.trial import FrozenTrial

# The plan a trial ran (``Plan.to_dict()``), kept in the study for every trained, rejected
# or screened trial: any worker can refine, rebuild or summarise it without the files of the
# machine that ran it.
TRIAL_PLAN_ATTR = "trial_plan"


class RecordError(LookupError):
    """A trial (or metrics file) lacks a field of :class:`TrialRecord`."""


@dataclass(frozen=True)
class TrialRecord:
    """A trained and measured trial, as its user attributes hold it.

    Fields without a default are always written; those with one are left out when None
    (no energy counter, no latency prediction, studies older than the field).
    """

    metric: float
    latency_ms: float  # drift-corrected: latency_ratio x the study's baseline latency
    latency_ratio: float
    size_bytes: int
    macs: int
    params: int
    peak_memory_mb: float
    feasible: bool
    speedup: float
    metric_retained: float | None  # None where the baseline's metric is 0
    trial_seconds: float
    latency_spread: float
    model_sha256: str | None = None  # None in studies made before models were hashed
    energy_mj: float | None = None
    latency_predicted_ms: float | None = None
    prediction_error: float | None = None  # predicted / measured - 1
    refined_from: int | None = None  # the trial whose plan this one trained longer
    metric_before_refine: float | None = None  # that trial's metric, at search time

    def to_attrs(self) -> dict[str, Any]:
        """The user attributes to set on the trial, keyed as studies have always been."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.default is MISSING or getattr(self, f.name) is not None
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], what: str = "the record") -> TrialRecord:
        """The record in ``attrs``; other keys (worker, reference, ...) are ignored."""
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in attrs]
        if missing:
            raise RecordError(
                f"{what} has no {', '.join(missing)}: only trained and measured trials carry a record"
            )
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in attrs.items() if k in names})

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        return cls.from_attrs(trial.user_attrs, f"trial {trial.number} ({trial.state.name})")

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> TrialRecord:
        """The record of a trial's metrics (``run_trial``'s result, its metrics.json)."""
        predicted = metrics.get("latency_predicted_ms")
        return cls.from_attrs(
            {
                **metrics,
                "latency_spread": metrics["latency_raw"]["spread"],
                "prediction_error": None
                if predicted is None
                else predicted / metrics["latency_ms"] - 1,
            },
            f"the metrics of trial {metrics.get('trial')}",
        )


@dataclass(frozen=True)
class TrialTags:
    """What a trial was queued or run as: set before the objective, on every kind of trial."""

    reference: str | None = None  # "fp32" or "int8": the uncompressed references
    fixed: str | None = None  # a fixed plan's label (the baselines `compare` runs)
    warm_start: str | None = None  # a uniform plan the study starts from
    worker: str | None = None  # host:pid of the worker that ran it
    rejected: str | None = None  # why the plan was rejected before fine-tuning
    error: str | None = None  # why the trial failed

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialTags:
        attrs = trial.user_attrs
        return cls(**{f.name: attrs[f.name] for f in fields(cls) if f.name in attrs})
