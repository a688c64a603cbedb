"""Energy per inference from the machine's own counters (Linux powercap / RAPL), or nothing.

RAPL counts the whole CPU package: the reading includes anything else running, so it is
taken under the same host-wide lock as timing. Where no readable counter exists (VMs,
containers without /sys/class/powercap), energy is reported as unavailable, never estimated.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoshuikou.runtimes import Runner

# Package-level zones only ("intel-rapl:0"; AMD CPUs use the same driver and names), not
# their sub-zones ("intel-rapl:0:0", core/uncore), which the package already includes.
_ZONE = re.compile(r"^[a-z-]*rapl:\d+$")


def powercap_root() -> Path:
    return Path(os.environ.get("AUTOSHUIKOU_POWERCAP", "/sys/class/powercap"))


@dataclass(frozen=True)
class EnergyCounter:
    zones: tuple[Path, ...]

    def read_uj(self) -> list[int]:
        return [int((zone / "energy_uj").read_text()) for zone in self.zones]

    def joules_between(self, before: list[int], after: list[int]) -> float:
        """Energy between two readings, allowing for each counter wrapping around once."""
        total = 0
        for zone, b, a in zip(self.zones, before, after, strict=True):
            span = a - b
            if span < 0:
                span += int((zone / "max_energy_range_uj").read_text())
            total += span
        return total / 1e6


def find_energy_counter() -> tuple[EnergyCounter | None, str]:
    """(counter, description): the counter, or None and why there is none."""
    root = powercap_root()
    if not root.is_dir():
        return None, f"no powercap interface ({root} does not exist; common on VMs)"
    zones = sorted(p for p in root.iterdir() if _ZONE.match(p.name))
    if not zones:
        return None, f"no RAPL zone under {root}"
    try:
        counter = EnergyCounter(tuple(zones))
        counter.read_uj()
    except (OSError, ValueError) as exc:
        return None, f"RAPL counters are not readable ({exc}); they usually need root"
    return counter, f"RAPL package counters: {', '.join(z.name for z in zones)}"


def energy_per_inference_mj(
    run: Runner, example: Any, counter: EnergyCounter, seconds: float = 1.0
) -> float:
    """Millijoules per inference: package energy over ``seconds`` of back-to-back runs."""
    for _ in range(10):  # warm caches, as for timing
        run(example)
    count = 0
    before = counter.read_uj()
    deadline = time.perf_counter() + seconds
    while count < 10 or time.perf_counter() < deadline:
        run(example)
        count += 1
    return counter.joules_between(before, counter.read_uj()) * 1e3 / count
