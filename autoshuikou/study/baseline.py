"""The reference: the uncompressed fp32 artifact, the int8 format this CPU runs fastest,
and the fastest model the search space can reach. Measured once per run directory."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from autoshuikou.compress.export import export_onnx
from autoshuikou.compress.prune import count_macs_params
from autoshuikou.compress.quantize import Int8Format
from autoshuikou.measure.accuracy import artifact_metric
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.memory import peak_memory_mb
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.measure.size import artifact_bytes
from autoshuikou.study.context import BaselineInfo, RunContext
from autoshuikou.study.trial import artifact_counts, build_artifact
from autoshuikou.tasks import Task
from autoshuikou.util import read_json, write_json

# A format may lose at most this much of the best candidate's metric (relative).
FORMAT_METRIC_TOLERANCE = 0.005
FORMAT_TIE = 0.05


def model_digest(model: nn.Module) -> str:
    """A hash of the weights: the same teacher gives the same digest on any machine."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def choose_int8_format(
    fp32: Path,
    teacher: nn.Module,
    layers: list[str],
    task: Task,
    calibration: list[np.ndarray],
    settings: RuntimeSettings,
    workdir: Path,
) -> tuple[Int8Format, list[dict[str, Any]]]:
    """Quantize the whole model in every candidate format; keep the fastest that is accurate.

    Which format is fast differs between CPUs (u8 activations were ~3x faster than s8 on
    one AVX-512 VNNI machine), so this is measured, never assumed.
    """
    paths = []
    rows: list[dict[str, Any]] = []
    runtime = settings.backend
    for fmt in runtime.int8_formats:
        path = workdir / f"{fmt.name}{runtime.suffix}"
        runtime.build(teacher, task.example_input, layers, calibration, fmt, path)
        paths.append(path)
        rows.append(
            {
                "format": fmt.to_dict(),
                "name": fmt.name,
                "metric": artifact_metric(path, task, settings),
            }
        )
    stats = measure_interleaved(
        [*paths, fp32], task.example_input.float().numpy(), settings, seconds=3.0
    )
    for row, stat in zip(rows, stats, strict=False):
        row["latency_ratio_to_fp32"] = stat.median_ms / stats[-1].median_ms
        row["latency"] = stat.to_dict()
    best_metric = max(row["metric"] for row in rows)
    accurate = [
        r for r in rows if r["metric"] >= best_metric - FORMAT_METRIC_TOLERANCE * abs(best_metric)
    ]
    fastest = min(r["latency_ratio_to_fp32"] for r in accurate)
    # Formats within timing noise of the fastest are ties: take the first in the fixed
    # candidate order, so reruns on the same machine choose the same format.
    chosen = next(r for r in accurate if r["latency_ratio_to_fp32"] <= fastest * (1 + FORMAT_TIE))
    for row in rows:
        row["chosen"] = row is chosen
    return Int8Format.from_dict(chosen["format"]), rows


def prepare_baseline(ctx: RunContext, identity: dict[str, Any]) -> BaselineInfo:
    """Load ``baseline/`` if it was measured for this task and machine, else measure it."""
    directory = ctx.run_dir / "baseline"
    metrics_path = directory / "metrics.json"
    model_path = directory / ctx.artifact_name
    if metrics_path.exists():
        saved = read_json(metrics_path)
        if saved.get("identity") == identity and model_path.exists():
            return BaselineInfo(
                model_path=model_path,
                metric=saved["metric"],
                latency_ms=saved["latency_ms"],
                latency_spread=saved["latency"]["spread"],
                size_bytes=saved["size_bytes"],
                macs=saved["macs"],
                params=saved["params"],
                int8_format=Int8Format.from_dict(saved["int8_format"]),
                fastest_latency_ms=saved["fastest_plan_latency_ms"],
            )
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        layers = export_onnx(ctx.teacher, ctx.task.example_input, Path(tmp) / "layers.onnx")
    runtime = ctx.settings.backend
    # fp32 build: no layer in int8, so the format is unused.
    runtime.build(ctx.teacher, ctx.task.example_input, [], [], runtime.int8_formats[0], model_path)
    metric = artifact_metric(model_path, ctx.task, ctx.settings)
    (latency,) = measure_interleaved([model_path], ctx.example_input, ctx.settings, seconds=3.0)
    teacher_macs, teacher_params = count_macs_params(ctx.teacher, ctx.task.example_input)
    params, macs = artifact_counts(ctx, model_path, (teacher_params, teacher_macs))
    with tempfile.TemporaryDirectory() as tmp:
        fmt, formats = choose_int8_format(
            model_path, ctx.teacher, layers, ctx.task, ctx.calibration, ctx.settings, Path(tmp)
        )
        info = BaselineInfo(
            model_path=model_path,
            metric=metric,
            latency_ms=latency.median_ms,
            latency_spread=latency.spread,
            size_bytes=artifact_bytes(model_path),
            macs=macs,
            params=params,
            int8_format=fmt,
            fastest_latency_ms=float("nan"),
        )
        # The fastest plan needs the chosen format; no fine-tuning, latency only.
        ctx.baseline = info
        fastest = Path(tmp) / f"fastest{runtime.suffix}"
        build_artifact(ctx, ctx.space.fastest_plan(), fastest)
        fast, ref = measure_interleaved(
            [fastest, model_path], ctx.example_input, ctx.settings, seconds=2.0
        )
        info = replace(info, fastest_latency_ms=fast.median_ms / ref.median_ms * latency.median_ms)
    write_json(directory / "int8_formats.json", formats)
    write_json(
        metrics_path,
        {
            "identity": identity,
            "metric_name": ctx.task.metric_name,
            "metric": metric,
            "latency_ms": latency.median_ms,
            "latency": latency.to_dict(),
            "size_bytes": info.size_bytes,
            "macs": info.macs,
            "params": info.params,
            "peak_memory_mb": peak_memory_mb(
                model_path,
                list(ctx.example_input.shape),
                ctx.settings.threads,
                ctx.settings.runtime,
            ),
            "int8_format": fmt.to_dict(),
            "fastest_plan_latency_ms": info.fastest_latency_ms,
            "runtime": ctx.settings.to_dict(),
            "hardware": ctx.hardware,
        },
    )
    return info
