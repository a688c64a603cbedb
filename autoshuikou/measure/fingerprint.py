"""What a latency number depends on: this CPU, the runtime, threads and batch size."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

from autoshuikou.measure.runtime import RuntimeSettings

_SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_int8",
    "fma",
    "asimddp",
    "i8mm",
)


def _cpu() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set[str]()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("flags", "Features"):
                flags.update(value.split())
    return model, sorted(f for f in _SPEED_FLAGS if f in flags)


def hardware_fingerprint(settings: RuntimeSettings, batch: int = 1) -> dict[str, object]:
    model, flags = _cpu()
    runtime = settings.backend.describe()
    return {
        "cpu": model,
        "cpu_flags": flags,
        "cpu_count": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "machine": platform.machine(),
        "runtime": settings.runtime,
        "runtime_version": runtime["runtime_version"],
        "provider": runtime["provider"],
        "threads": settings.threads,
        "batch": batch,
    }


def fingerprint_key(fingerprint: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
