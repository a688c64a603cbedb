"""Latency of a searched model at another input size (the ResNet-50 case: searched at 64 px,
reported at 224 px too, the size the founding case study quotes).

The exported model's PyTorch student (pruned, fine-tuned) is rebuilt into the runtime's
artifact at the new size with the same plan (the same layers int8, in the int8 format the
run chose, calibrated on the run's training images resized to that size), the teacher
likewise in fp32, and the two are timed in turns, as `autoshuikou verify` does:

    python benchmarks/resnet50_at_224.py EXPORTED_DIR --size 224

Prints and writes EXPORTED_DIR/latency_<size>px.json: both latencies, the ratio, sizes.
Weights do not depend on the input size, so sizes are those of the search.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import autoshuikou
from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.families import to_feed
from autoshuikou.measure.latency import measure_ratios
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.measure.size import artifact_bytes
from autoshuikou.plan import Plan
from autoshuikou.runtimes import Int8Format
from autoshuikou.study.config import SearchConfig, read_config_file
from autoshuikou.tasks import task_for
from autoshuikou.util import read_json


def time_at(exported: Path, size: int, seconds: float = 0.5) -> dict[str, Any]:
    config = SearchConfig(**read_config_file(exported / "config.yaml"))
    task = task_for(replace(config, input_size=str(size)))  # images resized to ``size``
    plan = Plan.from_dict(read_json(exported / "plan.json"))
    metrics = read_json(exported / "metrics.json")
    fmt = Int8Format.from_dict(metrics["int8_format"])
    settings = RuntimeSettings(threads=int(metrics["runtime"]["threads"]))
    student = autoshuikou.load(exported, student=True).module
    assert student is not None
    calibration = calibration_batches(
        task.train_data, task.family_impl.calibration_samples, task.family_impl
    )
    with tempfile.TemporaryDirectory() as tmp:
        small, base = Path(tmp) / "model.onnx", Path(tmp) / "baseline.onnx"
        backend = settings.backend
        backend.build(student, task.inputs, plan.int8_layers, calibration, fmt, small)
        backend.build(task.model, task.inputs, [], calibration, fmt, base)
        (stats,) = measure_ratios([small], base, to_feed(task.inputs), settings, seconds)
        result = {
            "input_size": size,
            "trial": read_json(exported / "export.json")["trial"],
            "latency_ms": stats.candidate_ms,
            "baseline_latency_ms": stats.reference_ms,
            "latency_ratio": stats.median_ratio,
            "windows": len(stats.windows),
            "size_bytes": artifact_bytes(small),
            "baseline_size_bytes": artifact_bytes(base),
        }
    (exported / f"latency_{size}px.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("exported", type=Path, help="a folder written by `autoshuikou export`")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=0.5, help="per timing window")
    args = parser.parse_args()
    r = time_at(args.exported, args.size, args.seconds)
    print(
        f"trial {r['trial']} at {r['input_size']} px: {r['latency_ms']:.2f} ms vs fp32 "
        f"{r['baseline_latency_ms']:.2f} ms (ratio {r['latency_ratio']:.1%}, {r['windows']} "
        f"windows); {r['size_bytes'] / 1e6:.1f} MB vs {r['baseline_size_bytes'] / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
