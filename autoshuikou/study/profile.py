"""`autoshuikou profile`: learn this machine's latency model for a task by probing it.

Each probe is a random plan from the search space, pruned and quantized but not
fine-tuned (weights do not change latency), timed interleaved with the baseline. The
model is cached per hardware/runtime fingerprint, task weights, search space and int8
format; `search` builds it on first use and rebuilds it when any of those change.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from autoshuikou.compress.prune import prune
from autoshuikou.measure.latency import measure_ratios
from autoshuikou.measure.latency_model import LatencyModel, fit_latency_model, layer_macs
from autoshuikou.plan import Plan
from autoshuikou.report.progress import Progress, Tick
from autoshuikou.runtimes import DEFAULT_RUNTIME
from autoshuikou.space.bind import uniform_plans
from autoshuikou.study.baseline import machine_cache_key
from autoshuikou.study.context import RunContext
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks._cache import cache_dir
from autoshuikou.util import file_lock, read_json, write_json

PROBES = 60  # at least; more for deep models (probe_count)
PROBES_PER_LAYER = 7


def probe_count(ctx: RunContext) -> int:
    """The per-layer models have two or three coefficients per layer: deep models need more
    probes (ResNet-18, same labels: 105 probes 10.7% median error, 140 probes 9.2%). Each
    probe costs a build and its timing windows, so the count is capped to what fits in
    PROFILE_SECONDS (ResNet-18 at 32 px: 147 probes took 302 s, 73 took 145 s), never below
    MIN_PROBES; the cross-validation then says how good the smaller model is, and a model
    that is not good enough rejects nothing (search.MAX_TRUSTED_P90)."""
    wanted = max(PROBES, PROBES_PER_LAYER * len(ctx.space.precision))
    started = time.monotonic()
    measure_probes(ctx, [ctx.space.fastest_plan()])  # one probe, built and timed as profiling does
    per_probe = time.monotonic() - started
    return max(MIN_PROBES, min(wanted, int(PROFILE_SECONDS / per_probe)))


MIN_PROBES = 20
PROFILE_SECONDS = 100.0  # builds and timing (the fastest plan builds quickest), then the fit


PROBE_SECONDS = 0.5  # per probe, split into PROBE_WINDOWS windows
PROBE_WINDOWS = 3
PROBE_GROUP_BYTES = 512 * 2**20  # artifacts kept on disk at once while their windows take turns


# Bumped when probing or fitting changes, so models cached by older versions are rebuilt.
# 2: probes cover every latency level; model shapes chosen by cross-validation.
# 3: each probe timed in several windows spread over its group.
MODEL_VERSION = "3"


def model_key(ctx: RunContext) -> str:
    return machine_cache_key(
        ctx, ctx.space.round_to, int8=ctx.baseline.int8_format.name, version=MODEL_VERSION
    )


def probe_plans(ctx: RunContext, count: int, seed: int) -> list[Plan]:
    """The plans a search starts from (uniform ratios, fp32 and int8) and the fastest one,
    then half covering plans (every latency level, see ``covering_plans``) and half random
    ones as the sampler draws them, shuffled so that every cross-validation fold mixes them.

    Random plans alone cluster at middling latency: on the deep-pruning space the model
    then over-predicted the uniform 50% plans by 50% and rejected the search's best model.
    """
    space = ctx.space
    fixed = [*uniform_plans(space).values(), space.fastest_plan()][:count]
    covering = (count - len(fixed)) // 2
    plans = [
        *fixed,
        *space.covering_plans(covering, seed),
        *space.random_plans(count - len(fixed) - covering, seed),
    ]
    order = np.random.default_rng(seed).permutation(len(plans))
    return [plans[i] for i in order]


def measure_probes(
    ctx: RunContext,
    plans: list[Plan],
    seconds: float = PROBE_SECONDS,
    windows: int = PROBE_WINDOWS,
    tick: Tick = lambda: None,
) -> list[dict[str, Any]]:
    """Build each plan without fine-tuning and time it against the baseline.

    This machine flips between speed states lasting seconds, in which the ratios differ by
    10-30% (the slow state adds a fixed cost per inference that small models feel most).
    One window per probe labels each probe with whatever state it fell into; a probe's
    ``windows`` windows are instead taken in turns with the other probes of its group
    (all probes for small models), so they sample the states as the whole profile does.
    """
    rows = []
    suffix = ctx.settings.backend.suffix
    group = max(1, PROBE_GROUP_BYTES // max(1, ctx.baseline.model_path.stat().st_size))
    with tempfile.TemporaryDirectory() as tmp:
        for start in range(0, len(plans), group):
            chunk = [plan.without_training() for plan in plans[start : start + group]]
            paths = [Path(tmp) / f"probe{k}{suffix}" for k in range(len(chunk))]
            for plan, path in zip(chunk, paths, strict=True):
                build_artifact(ctx, plan, path)
                tick()
            ratios = measure_ratios(
                paths,
                ctx.baseline.model_path,
                ctx.example_input,
                ctx.settings,
                seconds=seconds / windows,
                min_windows=windows,
                max_windows=windows,
            )
            for plan, stats in zip(chunk, ratios, strict=True):
                student = prune(ctx.teacher, ctx.inputs, plan.prune, plan.round_to, ctx.family)
                rows.append(
                    {
                        "plan": plan,
                        "macs": layer_macs(student, ctx.inputs),
                        "ratio": stats.ratio,
                    }
                )
    return rows


def build_latency_model(
    ctx: RunContext,
    probes: int | None = None,
    seed: int = 0,
    windows: int = PROBE_WINDOWS,
    progress: Progress | None = None,
) -> LatencyModel:
    layers = list(ctx.space.precision)
    plans = probe_plans(ctx, probes or probe_count(ctx), seed)
    with (progress or Progress()).steps("building probes", len(plans)) as tick:
        rows = measure_probes(ctx, plans, windows=windows, tick=tick)
    return fit_latency_model(
        layers, [r["macs"] for r in rows], [r["plan"] for r in rows], [r["ratio"] for r in rows]
    )


def cache_path(ctx: RunContext) -> Path:
    return cache_dir() / "latency" / f"{model_key(ctx)}.json"


def _build_and_save(ctx: RunContext, probes: int, progress: Progress) -> LatencyModel:
    path = cache_path(ctx)
    progress.line(
        f"profiling this machine's latency for {ctx.task.name} ({probes} probes, cached afterwards) ..."
    )
    started = time.monotonic()
    model = build_latency_model(ctx, probes, progress=progress)
    seconds = round(time.monotonic() - started, 1)
    write_json(path, {**model.to_dict(), "hardware": ctx.hardware, "seconds": seconds})
    progress.line(
        f"latency model ({model.kind}) built in {seconds:.0f} s: cross-validated median error "
        f"{model.holdout_mape:.1%}, 90th percentile {model.holdout_p90:.1%} -> {path}"
    )
    return model


def load_or_build_latency_model(ctx: RunContext, progress: Progress) -> LatencyModel:
    """The cached model for this machine and task, built (about a minute) when missing."""
    path = cache_path(ctx)
    with file_lock(path.with_suffix(".lock")):
        if path.exists():
            return LatencyModel.from_dict(read_json(path))
        return _build_and_save(ctx, probe_count(ctx), progress)


def profile(
    task: str | None,
    space: str | None,
    out: Path,
    threads: int,
    probes: int | None = None,
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[LatencyModel, Path]:
    """`autoshuikou profile`: (re)build the latency model for a task on this machine."""
    from autoshuikou.study.config import SearchConfig
    from autoshuikou.study.prepare import context_for
    from autoshuikou.tasks import load_task

    # The baseline is measured as a search with these settings would measure it.
    config = SearchConfig(task=task, space=space, out=out, threads=threads, runtime=runtime)
    loaded = load_task(config.task)
    run_dir = Path(config.out) / f"{loaded.name}-{runtime}-profile"
    progress = Progress()
    ctx, _ = context_for(loaded, config, run_dir, progress)
    with file_lock(cache_path(ctx).with_suffix(".lock")):
        model = _build_and_save(ctx, probes or probe_count(ctx), progress)
    return model, cache_path(ctx)
