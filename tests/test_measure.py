import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from autoshuikou.measure.energy import energy_per_inference_mj, find_energy_counter
from autoshuikou.measure.fingerprint import fingerprint_key, hardware_fingerprint
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.memory import peak_memory_mb
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.runtimes.onnxruntime.export import export_onnx
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
from autoshuikou.measure.latency import timing_lock
with timing_lock(shared=True):  # what a worker holds while it trains
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


def _fake_zone(root: Path, name: str, energy: int, max_range: int = 10**9) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "energy_uj").write_text(str(energy))
    (zone / "max_energy_range_uj").write_text(str(max_range))
    return zone


def test_energy_is_unavailable_without_powercap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOSHUIKOU_POWERCAP", str(tmp_path / "missing"))
    counter, why = find_energy_counter()
    assert counter is None and "does not exist" in why
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("AUTOSHUIKOU_POWERCAP", str(tmp_path / "empty"))
    assert find_energy_counter()[0] is None


def test_energy_per_inference_from_rapl_counters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = _fake_zone(tmp_path, "intel-rapl:0", 5_000)
    _fake_zone(tmp_path, "intel-rapl:0:0", 0)  # a sub-zone: already inside the package
    monkeypatch.setenv("AUTOSHUIKOU_POWERCAP", str(tmp_path))
    counter, _ = find_energy_counter()
    assert counter is not None and counter.zones == (package,)

    def run(_x: np.ndarray) -> np.ndarray:  # each inference costs 2 mJ on the fake counter
        value = int((package / "energy_uj").read_text())
        (package / "energy_uj").write_text(str(value + 2_000))
        return _x

    mj = energy_per_inference_mj(run, np.zeros(1, np.float32), counter, seconds=0.05)
    assert mj == pytest.approx(2.0)
    # A counter that wrapped around between the readings.
    assert counter.joules_between([10**9 - 1_000], [3_000]) == pytest.approx(0.004)


def test_ratio_read_off_at_the_baseline_latency_holds_across_machine_phases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from autoshuikou.measure import latency

    # A slow phase adds 40 us per inference and 10%: the small model's ratio rises in it.
    def timed(fast_ms: float, slow: bool) -> latency.LatencyStats:
        ms = fast_ms * 1.1 + 0.04 if slow else fast_ms
        return latency.LatencyStats(ms, ms, ms, 10)

    def measure(slow_windows: int) -> latency.RatioStats:
        phases = itertools.cycle([True] * slow_windows + [False] * (20 - slow_windows))

        def fake(models, _x, _settings, _seconds):  # type: ignore[no-untyped-def]
            slow = next(phases)
            return [timed(0.1, slow), timed(0.3, slow)]

        monkeypatch.setattr(latency, "measure_interleaved", fake)
        return latency.measure_ratio(
            Path("small.onnx"),
            Path("ref.onnx"),
            np.zeros(1),
            RuntimeSettings(),
            at_reference_ms=0.3,
        )

    mostly_slow, mostly_fast = measure(slow_windows=15), measure(slow_windows=5)
    # The plain medians differ by 20% (one phase each); read off at 0.3 ms both give the
    # fast phase's ratio.
    assert mostly_slow.median_ratio / mostly_fast.median_ratio > 1.2
    assert mostly_slow.ratio == pytest.approx(1 / 3) and mostly_fast.ratio == pytest.approx(1 / 3)
    assert mostly_slow.speed_exponent > 0


def test_ratios_of_several_models_are_timed_in_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshuikou.measure import latency

    calls: list[str] = []
    medians = {"a.onnx": 2.0, "b.onnx": 1.0, "ref.onnx": 4.0}

    def fake(models, _x, _settings, _seconds):  # type: ignore[no-untyped-def]
        calls.append(models[0].name)
        return [latency.LatencyStats(medians[m.name], 0, 0, 10) for m in models]

    monkeypatch.setattr(latency, "measure_interleaved", fake)
    a, b = latency.measure_ratios(
        [Path("a.onnx"), Path("b.onnx")], Path("ref.onnx"), np.zeros(1), RuntimeSettings()
    )
    assert (a.ratio, b.ratio) == (0.5, 0.25)
    # One window each per round, so each model's windows spread over the whole measurement.
    assert calls == ["a.onnx", "b.onnx"] * latency.REMEASURE_MIN_WINDOWS
    assert len(a.windows) == latency.REMEASURE_MIN_WINDOWS
