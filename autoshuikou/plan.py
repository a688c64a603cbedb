"""The Plan: every per-layer choice of one trial, with a JSON round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRECISIONS = ("fp32", "int8")
# Which channels a pruned group keeps: lowest L2 norm removed, or lowest first-order Taylor
# score |weight x gradient of the label loss| (see compress.prune).
IMPORTANCES = ("magnitude", "taylor")


@dataclass(frozen=True)
class DistillSettings:
    """How the pruned student is fine-tuned against the original teacher.

    loss = alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * CE(labels)
           + sum(weight * MSE(projection(student feature), teacher feature))
    """

    epochs: int = 0  # 0: no fine-tuning
    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.9
    features: dict[str, float] = field(default_factory=dict)  # layer -> feature-loss weight
    # Share of the fine-tuning steps over which the learning rate ramps up linearly: Adam's
    # first full-size steps knock a pretrained transformer off its weights (see encoder.yaml).
    warmup: float = 0.0


@dataclass(frozen=True)
class Plan:
    prune: dict[str, float]  # channel group -> fraction of its channels removed
    precision: dict[str, str]  # layer -> "fp32" | "int8"
    distill: DistillSettings = field(default_factory=DistillSettings)
    round_to: int = 1  # kept channel counts are multiples of this
    importance: str = "magnitude"  # one of IMPORTANCES

    def without_training(self) -> Plan:
        """The same architecture and precisions, no fine-tuning: enough for latency."""
        return Plan(
            prune=self.prune,
            precision=self.precision,
            round_to=self.round_to,
            importance=self.importance,
        )

    @property
    def int8_layers(self) -> list[str]:
        return [layer for layer, p in self.precision.items() if p == "int8"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "prune": dict(self.prune),
            "precision": dict(self.precision),
            "round_to": self.round_to,
            "importance": self.importance,
            "distill": {
                "epochs": self.distill.epochs,
                "lr": self.distill.lr,
                "temperature": self.distill.temperature,
                "alpha": self.distill.alpha,
                "features": dict(self.distill.features),
                "warmup": self.distill.warmup,
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        """Rebuild from :meth:`to_dict` output, accepting only the known keys and types."""
        distill = data.get("distill", {})
        precision = {str(k): str(v) for k, v in data["precision"].items()}
        bad = sorted(v for v in precision.values() if v not in PRECISIONS)
        if bad:
            raise ValueError(f"unknown precision {bad[0]!r}; expected one of {PRECISIONS}")
        importance = str(data.get("importance", "magnitude"))
        if importance not in IMPORTANCES:
            raise ValueError(f"unknown importance {importance!r}; expected one of {IMPORTANCES}")
        return cls(
            prune={str(k): float(v) for k, v in data["prune"].items()},
            precision=precision,
            round_to=int(data.get("round_to", 1)),
            importance=importance,
            distill=DistillSettings(
                epochs=int(distill.get("epochs", 0)),
                lr=float(distill.get("lr", 1e-3)),
                temperature=float(distill.get("temperature", 4.0)),
                alpha=float(distill.get("alpha", 0.9)),
                features={str(k): float(v) for k, v in distill.get("features", {}).items()},
                warmup=float(distill.get("warmup", 0.0)),
            ),
        )
