"""One trial: plan -> prune -> distill -> export + quantize -> measure the artifact."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from autoshuikou.compress.batchnorm import recalibrate_batchnorm
from autoshuikou.compress.distill import Rung, distill
from autoshuikou.compress.prune import count_macs_params, prune
from autoshuikou.families import Feed
from autoshuikou.measure.accuracy import artifact_scores
from autoshuikou.measure.energy import energy_per_inference_mj
from autoshuikou.measure.latency import LatencyStats, measure_interleaved, timing_lock
from autoshuikou.measure.memory import peak_memory_mb
from autoshuikou.measure.runtime import open_runner
from autoshuikou.measure.size import artifact_bytes
from autoshuikou.plan import Plan
from autoshuikou.study.context import RunContext
from autoshuikou.util import read_json, sha256_file, write_json

Stage = Callable[[str], None]
# Beside each kept model: the pruned, fine-tuned PyTorch student (its state dict; the plan
# rebuilds its architecture from the teacher's), so that a user can keep training it.
STUDENT_NAME = "student.pt"


def build_artifact(
    ctx: RunContext,
    plan: Plan,
    out: Path,
    stage: Stage = lambda _s: None,
    epochs: float | None = None,
    rungs: Sequence[Rung] = (),
    student_out: Path | None = None,
    inspect: Callable[[torch.nn.Module], None] | None = None,
    trained: dict[str, torch.Tensor] | None = None,
    calibration: Sequence[Feed] | None = None,
    pruned: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Compress the teacher by ``plan`` into ``out`` (the runtime's artifact); returns build
    facts. ``epochs`` overrides the plan's fine-tuning (0: untrained, for timing); ``rungs``
    check the student part-way (see ``distill``; stopped at one, nothing is built and the
    facts say ``stopped_at_rung``); ``student_out`` receives the pruned,
    fine-tuned PyTorch student's state dict (rebuilt by ``deploy.load_student``);
    ``inspect`` is given the student before it is exported. ``trained``: the state dict of
    this plan's student already fine-tuned (``study.students``), loaded instead of training.
    ``calibration``: the int8 calibration inputs, if not the study's. ``pruned``: this plan's
    student as ``prune`` made it (its untrained build's copy, ``study.screening``), used
    instead of pruning the teacher again; it is trained in place."""
    started = time.monotonic()
    example = ctx.inputs
    epochs = plan.distill.epochs if epochs is None else epochs
    if pruned is None:
        stage("pruning")
        gradients = ctx.label_gradients() if plan.importance == "taylor" else None
        student = prune(ctx.teacher, example, plan.prune, plan.round_to, ctx.family, gradients)
    else:
        student = pruned
    torch_macs, torch_params = count_macs_params(student, example)
    distill_started = time.monotonic()
    history: list[dict[str, float]] = []
    cache = ctx.teacher_cache
    hits_before = cache.hits if cache is not None else 0
    if trained is not None:
        stage("the same student as an earlier trial: not trained again")
        student.load_state_dict(trained)
        student.eval()
    else:
        stage(f"distilling {epochs:g} epochs on {ctx.device}" if epochs else "no fine-tuning")
        # Training holds the host's timing lock shared: no worker times a model while another
        # trains (which would load the cores), while several workers may train at once.
        with timing_lock(shared=True):
            distill(
                student,
                ctx.teacher,
                ctx.task,
                plan.distill,
                seed=ctx.seed,
                history=history,
                epochs=epochs,
                device=ctx.device,
                on_epoch=lambda i, n: stage(f"distilling, epoch {i}/{n} on {ctx.device}"),
                rungs=rungs,
                teacher_cache=cache,
            )
    distill_s = time.monotonic() - distill_started
    cached_steps = cache.hits - hits_before if cache is not None else 0
    if any(rung.stopped for rung in rungs):  # stopped at a rung: nothing to build
        return {"distill_seconds": round(distill_s, 2), "stopped_at_rung": True}
    if trained is None and epochs:
        # BatchNorm statistics of the weights as trained, not a moving average over weights
        # that kept changing: +0.7 points of top-1 on average on the digits' plans, more on
        # the shortest fine-tunings (benchmarks/finetune.py). The saved student has them.
        recalibrate_batchnorm(student, ctx.task, ctx.seed)
    if inspect is not None:
        inspect(student)
    if student_out is not None:
        torch.save({k: v.cpu() for k, v in student.state_dict().items()}, student_out)
    stage("quantizing")
    ctx.settings.backend.build(
        student,
        example,
        plan.int8_layers,
        ctx.calibration if calibration is None else calibration,
        ctx.baseline.int8_format,
        out,
        ctx.family,
    )
    return {
        "distill_seconds": round(distill_s, 2),
        "build_seconds": round(time.monotonic() - started - distill_s, 2),
        "torch_macs": torch_macs,
        "torch_params": torch_params,
        "distill_losses": history[-1] if history else None,
        "teacher_steps_cached": cached_steps,  # training steps that skipped the teacher
    }


def artifact_counts(
    ctx: RunContext, model: Path, module_counts: tuple[int, int]
) -> tuple[int, int]:
    """(params, MACs): counted on the artifact itself where its runtime can (an ONNX graph),
    else those of the PyTorch module the artifact was built from."""
    return ctx.settings.backend.counts(model, ctx.example_input) or module_counts


# What a trial's search-time latency was timed on (metrics.json's "latency_timed_on").
TIMED_THIS_ARTIFACT = "this artifact"
# A plan's latency does not depend on its weights: the graph, its shapes and its kernels are
# those of its untrained build, timed before fine-tuning (``study.screening``). The trained
# artifact differs from it by no more than one file timed twice does (mean 0.3% against
# 0.7% on digits: benchmarks/strategies.py timing-once), so it is not timed again (1.3 s a
# trial). The front's models are still timed themselves at the end (``study.final``).
TIMED_UNTRAINED = "the untrained build of this plan (same graph, before fine-tuning)"
# The fp32 reference is the baseline file itself: its latency is the baseline's (ratio 1).
TIMED_AS_BASELINE = "the baseline model (the same file, measured when the study began)"


@dataclass(frozen=True)
class Timing:
    """An artifact timed against the baseline, interleaved, and which artifact it was."""

    candidate: LatencyStats
    reference: LatencyStats
    timed_on: str

    @property
    def ratio(self) -> float:
        return self.candidate.median_ms / self.reference.median_ms


def time_against_baseline(ctx: RunContext, model: Path, seconds: float, timed_on: str) -> Timing:
    candidate, reference = measure_interleaved(
        [model, ctx.baseline.model_path], ctx.example_input, ctx.settings, seconds=seconds
    )
    return Timing(candidate, reference, timed_on)


def baseline_measurements(ctx: RunContext, model: Path) -> dict[str, Any] | None:
    """The baseline's own measurements when ``model`` is the baseline file byte for byte (the
    fp32 reference plan builds exactly that): the same file scores the same and times at
    ratio 1 by definition, so it is not scored and timed again (30 s a study on
    bbc-minilm). None for any other file, or when energy is measured (the baseline holds
    none)."""
    base = ctx.baseline.model_path
    if ctx.energy is not None or not base.is_file():
        return None
    if model.stat().st_size != base.stat().st_size or sha256_file(model) != sha256_file(base):
        return None
    recorded = read_json(base.parent / "metrics.json")
    if not {"metric", "latency", "peak_memory_mb"} <= recorded.keys():
        return None
    return {
        "metric": recorded["metric"],
        **({"scores": recorded["scores"]} if recorded.get("scores") else {}),
        "latency_ms": ctx.baseline.latency_ms,
        "latency_ratio": 1.0,
        "latency_raw": recorded["latency"],
        "baseline_latency_raw": recorded["latency"],
        "latency_timed_on": TIMED_AS_BASELINE,
        "peak_memory_mb": recorded["peak_memory_mb"],
    }


def measure_artifact(
    ctx: RunContext,
    model: Path,
    module_counts: tuple[int, int],
    stage: Stage = lambda _s: None,
    timing: Timing | None = None,
) -> dict[str, Any]:
    """Metric, latency (interleaved with the baseline), size, counts and memory of ``model``;
    with ``timing``, the latency is that one (the plan's untrained build), not timed again."""
    started = time.monotonic()
    same = baseline_measurements(ctx, model)
    if same is not None:
        stage("the baseline model itself: its measurements are the baseline's")
        params, macs = artifact_counts(ctx, model, module_counts)
        return {
            **same,
            "size_bytes": artifact_bytes(model),
            "macs": macs,
            "params": params,
            "measuring_seconds": round(time.monotonic() - started, 2),
        }
    stage("scoring")
    metric, scores = artifact_scores(model, ctx.task, ctx.settings)
    if timing is None:
        stage("timing")
        timing = time_against_baseline(ctx, model, ctx.measure_seconds, TIMED_THIS_ARTIFACT)
    ratio = timing.ratio
    params, macs = artifact_counts(ctx, model, module_counts)
    energy = {}
    if ctx.energy is not None:
        with timing_lock(), open_runner(model, ctx.settings) as run:
            energy["energy_mj"] = energy_per_inference_mj(run, ctx.example_input, ctx.energy)
    return {
        **energy,
        "metric": metric,
        **({"scores": scores} if scores else {}),
        # Drift-corrected: the ratio to the baseline timed alongside, times the baseline's
        # reference latency. The ratio is what holds when the machine's speed drifts.
        "latency_ms": ratio * ctx.baseline.latency_ms,
        "latency_ratio": ratio,
        "latency_raw": timing.candidate.to_dict(),
        "baseline_latency_raw": timing.reference.to_dict(),
        "latency_timed_on": timing.timed_on,
        "size_bytes": artifact_bytes(model),
        "macs": macs,
        "params": params,
        "peak_memory_mb": peak_memory_mb(
            model, ctx.memory_shapes, ctx.settings.threads, ctx.settings.runtime
        ),
        "measuring_seconds": round(time.monotonic() - started, 2),
    }


PHASES = ("screening", "training", "building", "measuring")
# What the rungs' checks took (each counted as screening: training is net of them).
CHECK_SECONDS = ("screen_check_seconds", "collapse_check_seconds")


def rung_facts(rungs: Sequence[Rung]) -> dict[str, Any]:
    """What every rung saw of the student, in the order they looked."""
    facts: dict[str, Any] = {}
    for rung in sorted(rungs, key=lambda r: r.epochs):
        facts.update(rung.facts)
    return facts


def time_spent(metrics: dict[str, Any]) -> dict[str, float]:
    """Where a trial's seconds went, by phase: screening is timing the untrained artifact
    and scoring at the rung (which happens during training, so training is net of it)."""
    check = sum(float(metrics.get(key, 0.0)) for key in CHECK_SECONDS)
    return {
        "screening": round(float(metrics.get("screen_seconds", 0.0)) + check, 2),
        "training": round(float(metrics.get("distill_seconds", 0.0)) - check, 2),
        "building": float(metrics.get("build_seconds", 0.0)),
        "measuring": float(metrics.get("measuring_seconds", 0.0)),
    }


def run_trial(
    ctx: RunContext,
    number: int,
    plan: Plan,
    stage: Stage = lambda _s: None,
    extra: dict[str, Any] | None = None,
    rungs: Sequence[Rung] = (),
    timing: Timing | None = None,
    trained: dict[str, torch.Tensor] | None = None,
    pruned: torch.nn.Module | None = None,
) -> dict[str, Any] | None:
    """Build and measure one plan; files land atomically in ``trials/<number>/``. None:
    a rung stopped its training (nothing was built, nothing is left behind). With
    ``timing`` (its untrained build's), the trained artifact is not timed again; with
    ``trained`` (its student's weights), the student is not fine-tuned again; with
    ``pruned`` (its untrained build's student), the teacher is not pruned again."""
    final = ctx.trials_dir / f"{number:04d}"
    work = ctx.trials_dir / f".{number:04d}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    artifact = work / ctx.artifact_name
    try:
        build = build_artifact(
            ctx,
            plan,
            artifact,
            stage,
            rungs=rungs,
            student_out=work / STUDENT_NAME,
            trained=trained,
            pruned=pruned,
        )
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a stopped trial leaves nothing behind
        raise
    if build.get("stopped_at_rung"):
        shutil.rmtree(work, ignore_errors=True)
        return None
    module_counts = (build["torch_params"], build["torch_macs"])
    metrics = measure_artifact(ctx, artifact, module_counts, stage, timing)
    b = ctx.baseline
    metrics.update(
        trial=number,
        metric_name=ctx.task.metric_name,
        family=ctx.family.name,
        metric_retained=metrics["metric"] / b.metric if b.metric else None,
        speedup=1 / metrics["latency_ratio"],
        budget_ms=ctx.budget_ms,
        feasible=metrics["latency_ms"] <= ctx.budget_ms
        and (ctx.min_metric is None or metrics["metric"] >= ctx.min_metric),
        baseline={
            "metric": b.metric,
            "latency_ms": b.latency_ms,
            "size_bytes": b.size_bytes,
            "macs": b.macs,
            "params": b.params,
        },
        runtime=ctx.settings.to_dict(),
        hardware=ctx.hardware,
        int8_format=b.int8_format.to_dict(),
        trial_seconds=round(time.monotonic() - started, 2),
        **build,
        # What the rungs saw of the student supersedes the untrained build's screen_* facts.
        **{**(extra or {}), **rung_facts(rungs)},
    )
    metrics["seconds"] = time_spent(metrics)
    metrics["model_sha256"] = sha256_file(artifact)
    write_json(work / "plan.json", plan.to_dict())
    write_json(work / "metrics.json", metrics)
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    return metrics
