"""How deployed models are run: which runtime, with how many threads (see autoshuikou.runtimes)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoshuikou.runtimes import Runner, Runtime


@dataclass(frozen=True)
class RuntimeSettings:
    """Settings every measurement and the deployed model share. The budget refers to them."""

    threads: int = 1
    runtime: str = "onnxruntime"

    @property
    def backend(self) -> Runtime:
        # Imported here: the runtime's library loads only when a model is built or run.
        from autoshuikou.runtimes import get_runtime

        return get_runtime(self.runtime)

    def to_dict(self) -> dict[str, object]:
        return {"threads": self.threads, "runtime": self.runtime, **self.backend.describe()}


def open_runner(path: Path, settings: RuntimeSettings) -> AbstractContextManager[Runner]:
    """Load an artifact in the settings' runtime: ``with open_runner(p, s) as run: run(x)``."""
    return settings.backend.open(path, settings.threads)
