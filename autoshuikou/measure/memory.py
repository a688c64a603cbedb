"""Peak memory of an inference session, measured in a fresh process.

The number is the extra peak resident memory (RSS) of a Python process that loads the
model into its runtime and runs one batch-1 inference, over the same process before
loading: weights, arenas and kernel buffers, without the interpreter and libraries.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path


def _peak_rss_kb() -> int:
    # VmHWM belongs to this process image; ru_maxrss would carry over the parent's peak
    # across fork + exec.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# One float input's shape, or each named input's (shape, numpy dtype name).
InputShapes = list[int] | dict[str, tuple[list[int], str]]


def _zeros(shapes: InputShapes) -> object:
    import numpy as np

    if isinstance(shapes, dict):
        return {name: np.zeros(shape, dtype=dtype) for name, (shape, dtype) in shapes.items()}
    return np.zeros(shapes, dtype=np.float32)


def _measure_here(
    model: Path, shape: InputShapes, threads: int, runtime: str, origin: list[str]
) -> int:
    # The runtime's library is imported before the "before" reading: only the model's
    # own memory (weights, arenas, kernel buffers) is counted.
    from autoshuikou.measure.runtime import RuntimeSettings, open_runner
    from autoshuikou.runtimes import register_origin

    register_origin(runtime, origin)  # a runtime registered outside autoshuikou too

    settings = RuntimeSettings(threads=threads, runtime=runtime)
    settings.backend  # noqa: B018  (imports the runtime's library)
    before = _peak_rss_kb()
    with open_runner(model, settings) as run:
        run(_zeros(shape))  # type: ignore[arg-type]
    return max(0, _peak_rss_kb() - before)


def input_shapes(feed: dict[str, object]) -> InputShapes:
    """What the child process needs to rebuild ``feed`` (names, shapes, dtypes)."""
    import numpy as np

    arrays = {name: np.asarray(a) for name, a in feed.items()}
    return {name: (list(a.shape), a.dtype.name) for name, a in arrays.items()}


def peak_memory_mb(
    model: Path, shape: InputShapes, threads: int, runtime: str = "onnxruntime"
) -> float:
    """Run :func:`_measure_here` in a child process; returns MiB."""
    from autoshuikou.runtimes import runtime_origin

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoshuikou.measure.memory",
            str(model),
            json.dumps(shape),
            str(threads),
            runtime,
            json.dumps(runtime_origin(runtime)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return round(int(result.stdout.strip().splitlines()[-1]) / 1024, 2)


if __name__ == "__main__":
    shapes = json.loads(sys.argv[2])
    if isinstance(shapes, dict):
        shapes = {name: (shape, dtype) for name, (shape, dtype) in shapes.items()}
    origin = json.loads(sys.argv[5])
    print(_measure_here(Path(sys.argv[1]), shapes, int(sys.argv[3]), sys.argv[4], origin))
