"""How deployed models are run: ONNX Runtime on the CPU with a fixed thread count."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import onnxruntime as ort

PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class RuntimeSettings:
    """Session settings every measurement and the deployed model share.

    Thread spinning is off: with it on, an idle session's threads keep spinning and steal
    the cores from the session being timed.
    """

    threads: int = 1

    def to_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "provider": PROVIDER,
            "allow_spinning": False,
            "onnxruntime": ort.__version__,
            "graph_optimization": "ORT_ENABLE_ALL",
        }


def open_session(path: Path, settings: RuntimeSettings) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[PROVIDER])
