"""What a gate returns when a plan is not to be trained (its own module: the fidelities and
the gates both return it, and the gates import the run that imports the fidelities)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Rejection:
    """Why a plan is not trained, with the latency that goes to the study as its constraint
    (so the sampler learns the region) and what was measured on the way."""

    reason: str
    latency_ms: float
    facts: dict[str, Any] = field(default_factory=dict)
