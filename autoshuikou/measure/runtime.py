"""How deployed models are run: which runtime, with how many threads (see autoshuikou.runtimes)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnxruntime as ort

if TYPE_CHECKING:
    from autoshuikou.runtimes import Runner, Runtime

PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class RuntimeSettings:
    """Settings every measurement and the deployed model share. The budget refers to them."""

    threads: int = 1
    runtime: str = "onnxruntime"

    @property
    def backend(self) -> Runtime:
        from autoshuikou.runtimes import get_runtime

        return get_runtime(self.runtime)

    def to_dict(self) -> dict[str, object]:
        return {"threads": self.threads, "runtime": self.runtime, **self.backend.describe()}


def open_runner(path: Path, settings: RuntimeSettings) -> AbstractContextManager[Runner]:
    """Load an artifact in the settings' runtime: ``with open_runner(p, s) as run: run(x)``."""
    return settings.backend.open(path, settings.threads)


def open_session(path: Path, settings: RuntimeSettings) -> ort.InferenceSession:
    """An ONNX Runtime session. Thread spinning is off: with it on, an idle session's
    threads keep spinning and steal the cores from the session being timed."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[PROVIDER])
