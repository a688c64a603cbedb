import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoshuikou.compress.export import export_onnx
from autoshuikou.measure.fingerprint import fingerprint_key, hardware_fingerprint
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.memory import peak_memory_mb
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.tasks import Task


@pytest.fixture
def exported(tiny_task: Task, tmp_path: Path) -> Path:
    path = tmp_path / "m.onnx"
    export_onnx(tiny_task.model, tiny_task.example_input, path)
    return path


def test_interleaved_stats_are_well_formed(exported: Path, tiny_task: Task) -> None:
    a, b = measure_interleaved(
        [exported, exported], tiny_task.example_input.numpy(), RuntimeSettings(), seconds=0.2
    )
    for stats in (a, b):
        assert stats.repeats >= 27  # at least 3 rounds of 9 kept runs
        assert 0 < stats.p10_ms <= stats.median_ms <= stats.p90_ms
        assert stats.spread >= 0


def test_peak_memory_grows_with_the_model(exported: Path, tmp_path: Path, tiny_task: Task) -> None:
    import torch

    big = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 4096), torch.nn.Linear(4096, 4096)
    )
    big_path = tmp_path / "big.onnx"
    export_onnx(big, tiny_task.example_input, big_path)  # 64 MiB of fp32 weights
    small = peak_memory_mb(exported, [1, 1, 8, 8], 1)
    large = peak_memory_mb(big_path, [1, 1, 8, 8], 1)
    assert large > small + 60


def test_fingerprint_changes_with_threads_and_runtime() -> None:
    one, two = (
        hardware_fingerprint(RuntimeSettings(threads=1)),
        hardware_fingerprint(RuntimeSettings(threads=2)),
    )
    assert fingerprint_key(one) != fingerprint_key(two)
    other_runtime = {**one, "runtime_version": "0.0.0"}
    assert fingerprint_key(one) != fingerprint_key(other_runtime)
    torch_runtime = hardware_fingerprint(RuntimeSettings(threads=1, runtime="torch"))
    assert torch_runtime["runtime"] == "torch"
    assert fingerprint_key(one) != fingerprint_key(torch_runtime)
    assert fingerprint_key(one) == fingerprint_key(hardware_fingerprint(RuntimeSettings(threads=1)))


LOCK_PROBE = """
import sys, time
from pathlib import Path
import numpy as np
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.runtime import RuntimeSettings
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both processes start timing together
measure_interleaved([Path(sys.argv[1])], np.zeros((1, 1, 8, 8), np.float32), RuntimeSettings(), seconds=0.5)
print(time.time())
"""


def test_two_processes_never_time_at_once(exported: Path, tmp_path: Path) -> None:
    """The host-wide lock serialises timing: the second finishes a whole timing after the first."""
    script = tmp_path / "probe.py"
    script.write_text(LOCK_PROBE)
    start_at = str(time.time() + 4.0)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(exported), start_at],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    ends = sorted(float(p.communicate()[0].strip().splitlines()[-1]) for p in procs)
    assert all(p.returncode == 0 for p in procs)
    assert ends[0] >= float(start_at)
    # Each timing lasts >= 0.5 s; run side by side they would end together.
    assert ends[1] - ends[0] >= 0.5


TRAINING_PROBE = """
import time
from autoshuikou.measure.latency import LOCK_PATH
from autoshuikou.util import file_lock
with file_lock(LOCK_PATH, shared=True):  # what a worker holds while it trains
    print("training", flush=True)
    time.sleep(1.5)
    print(time.time(), flush=True)
"""

TIMING_PROBE = """
import sys, time
from pathlib import Path
import numpy as np
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.runtime import RuntimeSettings
measure_interleaved([Path(sys.argv[1])], np.zeros((1, 1, 8, 8), np.float32), RuntimeSettings(), seconds=0.5)
print(time.time())
"""


def test_timing_waits_for_training_to_end(exported: Path, tmp_path: Path) -> None:
    import os

    env = {**os.environ, "AUTOSHUIKOU_LATENCY_LOCK": str(tmp_path / "host.lock")}
    (tmp_path / "train.py").write_text(TRAINING_PROBE)
    (tmp_path / "timer.py").write_text(TIMING_PROBE)
    trainer = subprocess.Popen(
        [sys.executable, str(tmp_path / "train.py")], stdout=subprocess.PIPE, text=True, env=env
    )
    assert trainer.stdout is not None and trainer.stdout.readline().strip() == "training"
    timer = subprocess.run(
        [sys.executable, str(tmp_path / "timer.py"), str(exported)],
        capture_output=True,
        text=True,
        env=env,
    )
    trained_until = float(trainer.communicate()[0].strip().splitlines()[-1])
    assert timer.returncode == 0, timer.stderr
    # Started while training held the lock; its >= 0.5 s of timing came after training ended.
    assert float(timer.stdout.strip().splitlines()[-1]) - trained_until >= 0.5
