"""Re-check a finished run: every Pareto model re-scored and re-timed against the baseline.

Accuracy must reproduce exactly; the latency ratio to the baseline (timed together,
interleaved, read off at the baseline latency the run recorded) must stay within a
tolerance of the ratio recorded during the search;
parameter and MAC counts must match those counted on the artifact (where its runtime
counts them: an ONNX graph).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from autoshuikou.errors import UserError
from autoshuikou.families import to_feed
from autoshuikou.measure.accuracy import artifact_metric
from autoshuikou.measure.latency import REMEASURE_SECONDS, measure_ratios
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.report.summary import load_summary
from autoshuikou.tasks import Task, load_task
from autoshuikou.util import read_json, require

RATIO_TOLERANCE = 0.10  # the promise: a fresh process reproduces the ratio to +-10%
CHECKS = ("metric", "ratio", "counts")
RESTORE = (
    "restore the trial's folder from a backup (a trial's files are written once, when it "
    "runs); `autoshuikou show` lists the models the run still holds"
)


def _recorded(path: Path) -> dict[str, Any]:
    """A trial's metrics.json with what is compared; one message if it is damaged or old."""
    record = require(read_json(path, RESTORE), ("metric", "params", "macs"), path, RESTORE)
    ratio = "final.ratio" if "final" in record else "latency_ratio"
    return require(record, (ratio,), path, RESTORE)


def _recorded_task(run_dir: Path, name: str) -> Task:
    """The task the run's config.yaml names (a no-code one too), else the task ``name``."""
    from autoshuikou.study.config import CONFIG_NAME, SearchConfig, read_config_file
    from autoshuikou.tasks import task_for

    file = run_dir / CONFIG_NAME
    if file.is_file():
        config = SearchConfig(**read_config_file(file))
        if config.model is not None or config.task is not None:
            return task_for(config)
    return load_task(name)


def verify_run(
    run_dir: Path,
    task_spec: str | None = None,
    seconds: float = REMEASURE_SECONDS,
    task: Task | None = None,
) -> list[dict[str, Any]]:
    """Re-measure the Pareto models; one row of checks per model, printed."""
    summary = load_summary(run_dir)
    require(summary, ("task", "runtime.threads", "baseline.path"), run_dir / "summary.json")
    settings = RuntimeSettings(
        threads=int(summary["runtime"]["threads"]),
        runtime=str(summary["runtime"].get("runtime", "onnxruntime")),
    )
    # Counts are checked where the runtime counts on its artifact; others came from the module.
    runtime = settings.backend
    baseline = run_dir / summary["baseline"]["path"]
    if not baseline.is_file():
        raise UserError(
            f"the baseline model {baseline} is missing: the models are timed against it",
            "restore it from a backup, or rerun the same `autoshuikou search` command: it "
            "builds the baseline again",
        )
    rows: list[dict[str, Any]] = []
    points, models, records = [], [], []
    for point in summary["pareto"]:
        if point["path"] is None:
            print(
                f"trial {point['trial']}: skipped, it ran on another machine ({point.get('ran_on')})"
            )
            continue
        model = run_dir / point["path"]
        if model.is_file():
            points.append(point)
            models.append(model)
            records.append(_recorded(model.parent / "metrics.json"))
            continue
        # A deleted model: one message and a failed row; the others are verified.
        print(f"trial {point['trial']}: FAILED, missing {model}")
        problem = UserError(f"trial {point['trial']}: {model} is missing", RESTORE)
        print(f"error: {problem}", file=sys.stderr)
        rows.append({"trial": point["trial"], "missing": str(model)} | dict.fromkeys(CHECKS, False))
    # The files are checked first: the task may take long to build.
    if task is None:
        task = load_task(task_spec) if task_spec else _recorded_task(run_dir, summary["task"])
    example = to_feed(task.inputs)
    # Timed together, in turns, as the search's final re-measurement timed them.
    # Read off at the baseline latency the run recorded, as the search's re-measurement was.
    all_stats = (
        measure_ratios(
            models,
            baseline,
            example,
            settings,
            seconds,
            at_reference_ms=float(summary["baseline"]["latency_ms"]),
        )
        if models
        else []
    )
    for point, model, recorded, stats in zip(points, models, records, all_stats, strict=True):
        ratio = stats.ratio
        metric = artifact_metric(model, task, settings)
        counts = runtime.counts(model, example)
        counts_ok = counts is None or counts == (recorded["params"], recorded["macs"])
        # An interrupted run was not re-measured at the end: check the ratio its trial
        # measured during the search (noisier: fewer timing windows).
        expected = recorded["final"]["ratio"] if "final" in recorded else recorded["latency_ratio"]
        drift = ratio / expected - 1
        checks = {
            "metric": metric == recorded["metric"],
            "ratio": abs(drift) <= RATIO_TOLERANCE,
            "counts": counts_ok,
        }
        rows.append(
            {
                "trial": point["trial"],
                "value": metric,
                "measured_ratio": ratio,
                "median_ratio": stats.median_ratio,
                "drift": drift,
                **checks,
            }
        )
        print(
            f"trial {point['trial']}: metric {metric:.4f} (recorded {recorded['metric']:.4f}) "
            f"ratio {ratio:.3f} (recorded {expected:.3f}, {drift:+.1%}; window median "
            f"{stats.median_ratio:.3f}, gamma {stats.speed_exponent:.2f}) "
            f"{'OK' if all(checks.values()) else 'FAILED ' + ', '.join(k for k, v in checks.items() if not v)}"
        )
    ok = all(row[c] for row in rows for c in CHECKS)
    print(
        f"{'all' if ok else 'NOT all'} {len(rows)} Pareto models reproduce (ratio tolerance +-{RATIO_TOLERANCE:.0%})"
    )
    return rows
