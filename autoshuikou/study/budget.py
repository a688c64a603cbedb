"""Latency budgets: absolute ("75ms", "0.8ms", "1.5s", "500us") or relative ("50%")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from autoshuikou.errors import UserError

_UNITS_MS = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(us|µs|ms|s|%)\s*$")


@dataclass(frozen=True)
class Budget:
    text: str
    value: float
    relative: bool  # True: percent of the fp32 baseline's latency

    def resolve_ms(self, baseline_ms: float) -> float:
        return baseline_ms * self.value / 100 if self.relative else self.value

    @property
    def slug(self) -> str:
        number = f"{self.value:g}".replace(".", "p")
        return f"{number}pct" if self.relative else f"{number}ms"


def parse_budget(text: str) -> Budget:
    match = _PATTERN.match(text)
    if not match:
        raise UserError(
            f"cannot read the latency budget {text!r}",
            'give a time such as "75ms", "0.8ms", "1.5s", "500us", or a share of the '
            'uncompressed model\'s latency such as "50%"',
        )
    number, unit = float(match.group(1)), match.group(2)
    if number <= 0 or (unit == "%" and number > 1000):
        raise UserError(
            f"latency budget {text!r} is out of range",
            "use a positive time, or a percentage up to 1000%",
        )
    if unit == "%":
        return Budget(text.strip(), number, relative=True)
    return Budget(text.strip(), number * _UNITS_MS[unit], relative=False)
