"""What the steps of one search share, prepared once before the first trial."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage

from autoshuikou.measure.latency_model import LatencyModel
from autoshuikou.report.progress import Progress
from autoshuikou.study.collapse import CollapseLine
from autoshuikou.study.config import SearchConfig
from autoshuikou.study.context import RunContext
from autoshuikou.study.objectives import (
    Objective,
)
from autoshuikou.study.students import (
    StudentStore,
)
from autoshuikou.study.workers import (
    StaleWatch,
)

if TYPE_CHECKING:  # the fidelities read the Run: imported for the annotation only
    from autoshuikou.study.fidelity import Fidelity


@dataclass
class Run:
    """What the steps of one search share."""

    config: SearchConfig
    ctx: RunContext
    identity: dict[str, Any]  # task, model, hardware, version: part of the study's fingerprint
    name: str
    objectives: tuple[Objective, ...]
    fixed: dict[str, dict[str, Any]]  # label -> Plan dict
    latency_model: LatencyModel | None
    margin: float | None  # predicted over budget x (1 + margin): rejected
    progress: Progress
    started: float
    setup_seconds: dict[str, float]  # baseline, latency profiling: before the first trial
    fidelity: Fidelity  # --fidelity with "auto" resolved
    students: StudentStore | None  # recent trained students (None: --config reuse_students off)
    storage: BaseStorage  # opened before any work: an unreachable one refuses the run first
    fingerprint: dict[str, Any]  # what the study is for: joiners must match it
    from_python: bool  # the Task came from Python (config.yaml cannot name it)
    watch: StaleWatch = field(default_factory=StaleWatch)  # heartbeats of other workers
    # Where a student counts as collapsed after its first epoch (None: not checked).
    collapse: CollapseLine | None = None
