"""The reference: the uncompressed fp32 artifact, the int8 format this CPU runs fastest,
and the fastest model the search space can reach. Measured once per run directory.

The two hardware choices (int8 format, channel rounding) are cached per machine
fingerprint, model and space: every later run on this machine (`profile`, `search`,
another worker) makes the same choices, so they also share one cached latency model.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from autoshuikou.compress.prune import count_macs_params, prune
from autoshuikou.families import Feed, to_feed
from autoshuikou.measure.accuracy import artifact_metric, artifact_scores
from autoshuikou.measure.fingerprint import fingerprint_key
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.memory import peak_memory_mb
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.measure.size import artifact_bytes
from autoshuikou.plan import Plan
from autoshuikou.runtimes import Int8Format
from autoshuikou.study.context import BaselineInfo, RunContext
from autoshuikou.study.trial import artifact_counts, build_artifact
from autoshuikou.tasks import Task
from autoshuikou.tasks._cache import cache_dir
from autoshuikou.util import file_lock, read_json, write_json

# A format may lose at most this much of the best candidate's metric (relative).
FORMAT_METRIC_TOLERANCE = 0.005
FORMAT_TIE = 0.05
ROUND_TO_CANDIDATES = (1, 4, 8, 16)
ROUND_TO_PLANS = 3
ROUND_TO_TIE = 0.02  # of the baseline's latency: below timing noise, so a tie


def model_digest(model: nn.Module) -> str:
    """A hash of the weights: the same teacher gives the same digest on any machine."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def int8_candidates(ctx: RunContext) -> tuple[Int8Format, ...]:
    """The runtime's int8 formats in the forms the model family can use."""
    forms = ctx.task.family_impl.int8_forms
    candidates = tuple(f for f in ctx.settings.backend.int8_formats if f.quant_format in forms)
    return candidates or ctx.settings.backend.int8_formats


def choose_int8_format(
    fp32: Path,
    teacher: nn.Module,
    layers: list[str],
    task: Task,
    calibration: list[Feed],
    settings: RuntimeSettings,
    workdir: Path,
    formats: Sequence[Int8Format],
) -> tuple[Int8Format, list[dict[str, Any]]]:
    """Quantize the whole model in every candidate format; keep the fastest that is accurate.

    Which format is fast differs between CPUs (u8 activations were ~3x faster than s8 on
    one AVX-512 VNNI machine), so this is measured, never assumed.
    """
    paths = []
    rows: list[dict[str, Any]] = []
    runtime = settings.backend
    for fmt in formats:
        path = workdir / f"{fmt.name}{runtime.suffix}"
        runtime.build(teacher, task.inputs, layers, calibration, fmt, path, task.family_impl)
        paths.append(path)
        rows.append(
            {
                "format": fmt.to_dict(),
                "name": fmt.name,
                "metric": artifact_metric(path, task, settings),
            }
        )
    stats = measure_interleaved([*paths, fp32], to_feed(task.inputs), settings, seconds=3.0)
    for row, stat in zip(rows, stats, strict=False):
        row["latency_ratio_to_fp32"] = stat.median_ms / stats[-1].median_ms
        row["latency"] = stat.to_dict()
    best_metric = max(row["metric"] for row in rows)
    accurate = [
        r for r in rows if r["metric"] >= best_metric - FORMAT_METRIC_TOLERANCE * abs(best_metric)
    ]
    fastest = min(r["latency_ratio_to_fp32"] for r in accurate)
    # Formats within timing noise of the fastest are ties: the most accurate of them wins,
    # then the first in the fixed candidate order, so reruns choose the same format.
    ties = [r for r in accurate if r["latency_ratio_to_fp32"] <= fastest * (1 + FORMAT_TIE)]
    chosen = max(ties, key=lambda r: r["metric"])
    for row in rows:
        row["chosen"] = row is chosen
    return Int8Format.from_dict(chosen["format"]), rows


def choose_round_to(ctx: RunContext, workdir: Path) -> tuple[int, list[dict[str, Any]]]:
    """The channel multiple this machine's kernels run best, measured.

    The same random plans are built with each candidate rounding (no fine-tuning) and timed
    against the baseline. Latency grows with MACs plus a fixed cost, so a line
    latency = a + b * MACs is fitted to all builds, and each rounding is scored by how far
    its builds run above or below that line (median). Roundings within ROUND_TO_TIE of the
    best are ties, and the finest of them wins: it leaves the search more widths.
    """
    plans = ctx.space.with_round_to(1).random_plans(ROUND_TO_PLANS, seed=1)  # ratios only
    example = ctx.inputs
    teacher_macs, _ = count_macs_params(ctx.teacher, example)
    seconds = min(0.5, ctx.measure_seconds)
    builds: list[tuple[int, float, float]] = []  # (round_to, MAC ratio, latency ratio)
    # A rounding that leaves a plan's widths unchanged gives the same model: reuse its
    # timing, so noise cannot split identical models (they tie; the finer wins).
    timed: dict[tuple[int, tuple[tuple[int, ...], ...]], tuple[float, float]] = {}
    for round_to in ROUND_TO_CANDIDATES:
        for i, plan in enumerate(plans):
            student = prune(ctx.teacher, example, plan.prune, round_to, ctx.family)
            key = (i, tuple(tuple(p.shape) for p in student.parameters()))
            if key not in timed:
                path = workdir / f"round{round_to}-{i}{ctx.settings.backend.suffix}"
                probe = Plan(prune=plan.prune, precision=plan.precision, round_to=round_to)
                facts = build_artifact(ctx, probe, path)
                candidate, reference = measure_interleaved(
                    [path, ctx.baseline.model_path], ctx.example_input, ctx.settings, seconds
                )
                timed[key] = (
                    facts["torch_macs"] / teacher_macs,
                    candidate.median_ms / reference.median_ms,
                )
            builds.append((round_to, *timed[key]))
    return pick_round_to(builds)


def pick_round_to(builds: list[tuple[int, float, float]]) -> tuple[int, list[dict[str, Any]]]:
    """(round_to, rows) from (round_to, MAC ratio, latency ratio) builds; see choose_round_to."""
    macs = np.array([b[1] for b in builds])
    latency = np.array([b[2] for b in builds])
    slope, intercept = np.polyfit(macs, latency, 1)
    residual = latency - (intercept + slope * macs)
    rows: list[dict[str, Any]] = []
    for round_to in sorted({b[0] for b in builds}):
        mine = [i for i, b in enumerate(builds) if b[0] == round_to]
        rows.append(
            {
                "round_to": round_to,
                "excess_latency": float(np.median(residual[mine])),
                "mac_ratios": [round(float(macs[i]), 4) for i in mine],
                "latency_ratios": [round(float(latency[i]), 4) for i in mine],
            }
        )
    best = min(r["excess_latency"] for r in rows)
    chosen = next(r for r in rows if r["excess_latency"] <= best + ROUND_TO_TIE)
    for row in rows:
        row["chosen"] = row is chosen
    return int(chosen["round_to"]), rows


def machine_cache_key(ctx: RunContext, round_to: int | None, **extra: str) -> str:
    """Key of a per-machine cache entry for this model and space: hardware/runtime
    fingerprint, weights, input shape and what the space prunes and quantizes (latency does
    not depend on the fine-tuning settings), plus ``extra``."""
    parts = {
        "hardware": fingerprint_key(ctx.hardware),
        "model": model_digest(ctx.teacher),
        "input": ctx.task.input_shape,
        "space": repr(
            (round_to, sorted(ctx.space.prune.items()), sorted(ctx.space.precision.items()))
        ),
        **extra,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def choices_path(ctx: RunContext) -> Path:
    """Where this machine's int8 format and rounding for this model and space are cached."""
    # The rounding as written (None for auto): the choice is what this entry holds.
    return cache_dir() / "choices" / f"{machine_cache_key(ctx, ctx.space.space.round_to)}.json"


def _fastest_ratio(ctx: RunContext, baseline: Path, tmp: Path) -> float:
    """The fastest plans' best latency as a share of the baseline's, timed interleaved with
    it. They need the format and rounding; no fine-tuning, latency only. Most pruned in
    int8 and in fp32: on a small model int8 can be the slower one."""
    suffix = ctx.settings.backend.suffix
    plans = {json.dumps(ctx.space.fastest_plan(int8=q).to_dict()): q for q in (True, False)}
    fastest = [tmp / f"fastest-{i}{suffix}" for i in range(len(plans))]
    for path, int8 in zip(fastest, plans.values(), strict=True):
        build_artifact(ctx, ctx.space.fastest_plan(int8=int8), path)
    *fast, ref = measure_interleaved([*fastest, baseline], ctx.example_input, ctx.settings, 2.0)
    return min(f.median_ms for f in fast) / ref.median_ms


def _saved_baseline(ctx: RunContext, identity: dict[str, Any]) -> RunContext | None:
    """``ctx`` with the baseline ``baseline/`` holds, if it was measured for this task,
    machine and rounding; else None."""
    directory = ctx.run_dir / "baseline"
    metrics_path = directory / "metrics.json"
    model_path = directory / ctx.artifact_name
    if not metrics_path.exists():
        return None
    saved = read_json(metrics_path)
    fixed_rounding = ctx.space.space.round_to
    if (
        saved.get("identity") != identity
        or not model_path.exists()
        or fixed_rounding not in (None, saved.get("round_to"))
    ):
        return None
    info = BaselineInfo(
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
    return replace(ctx, space=ctx.space.with_round_to(saved["round_to"])).with_baseline(info)


def prepare_baseline(ctx: RunContext, identity: dict[str, Any]) -> RunContext:
    """Load ``baseline/`` if it was measured for this task and machine, else measure it:
    ``ctx`` with the baseline, and its space's rounding where the space said ``auto``."""
    saved = _saved_baseline(ctx, identity)
    if saved is not None:
        return saved
    directory = ctx.run_dir / "baseline"
    model_path = directory / ctx.artifact_name
    directory.mkdir(parents=True, exist_ok=True)
    candidates = int8_candidates(ctx)
    # fp32 build: no layer in int8, so the format is unused.
    ctx.settings.backend.build(
        ctx.teacher, ctx.inputs, [], [], candidates[0], model_path, ctx.family
    )
    metric, scores = artifact_scores(model_path, ctx.task, ctx.settings)
    (latency,) = measure_interleaved([model_path], ctx.example_input, ctx.settings, seconds=3.0)
    teacher_macs, teacher_params = count_macs_params(ctx.teacher, ctx.inputs)
    params, macs = artifact_counts(ctx, model_path, (teacher_params, teacher_macs))
    info = BaselineInfo(
        model_path=model_path,
        metric=metric,
        latency_ms=latency.median_ms,
        latency_spread=latency.spread,
        size_bytes=artifact_bytes(model_path),
        macs=macs,
        params=params,
        int8_format=candidates[0],  # until the machine's choice is known
        fastest_latency_ms=float("nan"),
    )
    cached_choices = choices_path(ctx)
    with tempfile.TemporaryDirectory() as tmp, file_lock(cached_choices.with_suffix(".lock")):
        ctx, choices = _machine_choices(ctx.with_baseline(info), candidates, Path(tmp))
        fastest = _fastest_ratio(ctx, model_path, Path(tmp))
    ctx = ctx.with_baseline(replace(ctx.baseline, fastest_latency_ms=fastest * latency.median_ms))
    write_json(directory / "int8_formats.json", choices["formats"])
    if choices["rounding"]:
        write_json(directory / "round_to.json", choices["rounding"])
    write_json(
        directory / "metrics.json",
        {
            "identity": identity,
            "metric_name": ctx.task.metric_name,
            "metric": metric,
            **({"scores": scores} if scores else {}),
            "latency_ms": latency.median_ms,
            "latency": latency.to_dict(),
            "size_bytes": info.size_bytes,
            "macs": info.macs,
            "params": info.params,
            "peak_memory_mb": peak_memory_mb(
                model_path, ctx.memory_shapes, ctx.settings.threads, ctx.settings.runtime
            ),
            "int8_format": ctx.baseline.int8_format.to_dict(),
            "fastest_plan_latency_ms": ctx.baseline.fastest_latency_ms,
            "round_to": ctx.space.round_to,
            "round_to_measured": bool(choices["rounding"]),
            # Measured by an earlier run on this machine (same model and space), not this one.
            "choices_from_cache": choices["from_cache"],
            "runtime": ctx.settings.to_dict(),
            "hardware": ctx.hardware,
        },
    )
    return ctx


def _machine_choices(
    ctx: RunContext, candidates: Sequence[Int8Format], tmp: Path
) -> tuple[RunContext, dict[str, Any]]:
    """The int8 format and (for ``round_to: auto``) the rounding this machine runs best for
    this model and space: measured once per machine and cached (``choices_path``); ``ctx``
    with both set, and the record (``from_cache``: the cache file it came from, or None
    where this run measured it; ``rounding``: the roundings timed, where the space left
    the rounding to the machine)."""
    cached = choices_path(ctx)
    if cached.exists():
        choices = read_json(cached)
        fmt = Int8Format.from_dict(choices["int8_format"])
        ctx = ctx.with_baseline(replace(ctx.baseline, int8_format=fmt))
        if ctx.space.round_to is None:
            ctx = replace(ctx, space=ctx.space.with_round_to(choices["round_to"]))
            return ctx, {**choices, "from_cache": str(cached)}
        return ctx, {**choices, "rounding": [], "from_cache": str(cached)}
    layers = ctx.settings.backend.layers(ctx.teacher, ctx.inputs, ctx.family)
    # Formats are compared on the int8 reference: the layers the space lets run in int8.
    layers = [layer for layer in layers if "int8" in ctx.space.precision.get(layer, ("int8",))]
    fmt, formats = choose_int8_format(
        ctx.baseline.model_path,
        ctx.teacher,
        layers,
        ctx.task,
        ctx.calibration,
        ctx.settings,
        tmp,
        candidates,
    )
    ctx = ctx.with_baseline(replace(ctx.baseline, int8_format=fmt))
    rounding: list[dict[str, Any]] = []
    if ctx.space.round_to is None:
        round_to, rounding = choose_round_to(ctx, tmp)
        ctx = replace(ctx, space=ctx.space.with_round_to(round_to))
    choices = {
        "int8_format": fmt.to_dict(),
        "formats": formats,
        "round_to": ctx.space.round_to,
        "rounding": rounding,
        "hardware": ctx.hardware,
    }
    write_json(cached, choices)
    return ctx, {**choices, "from_cache": None}
