"""Size of the artifact on disk. Its parameters and MACs are the runtime's to count
(``Runtime.counts``)."""

from __future__ import annotations

from pathlib import Path


def artifact_bytes(path: Path) -> int:
    return path.stat().st_size
