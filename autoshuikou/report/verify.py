"""Re-check a finished run: every Pareto model re-scored and re-timed against the baseline.

Accuracy must reproduce exactly; the latency ratio to the baseline (timed together,
interleaved) must stay within a tolerance of the ratio recorded during the search;
parameter and MAC counts must match the ONNX graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoshuikou.measure.accuracy import artifact_metric
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.measure.size import graph_counts
from autoshuikou.report.summary import load_summary
from autoshuikou.tasks import load_task
from autoshuikou.util import read_json

RATIO_TOLERANCE = 0.15


def verify_run(run_dir: Path, task_spec: str | None = None, seconds: float = 3.0) -> bool:
    summary = load_summary(run_dir)
    task = load_task(task_spec or summary["task"])
    settings = RuntimeSettings(threads=int(summary["runtime"]["threads"]))
    baseline = run_dir / summary["baseline"]["path"]
    example = task.example_input.float().numpy()
    ok = True
    rows: list[dict[str, Any]] = []
    for point in summary["pareto"]:
        model = run_dir / point["path"]
        recorded = read_json(model.parent / "metrics.json")
        metric = artifact_metric(model, task, settings)
        candidate, reference = measure_interleaved(
            [model, baseline], example, settings, seconds=seconds
        )
        ratio = candidate.median_ms / reference.median_ms
        counts = graph_counts(model, example.shape)
        drift = ratio / recorded["latency_ratio"] - 1
        checks = {
            "metric": metric == recorded["metric"],
            "ratio": abs(drift) <= RATIO_TOLERANCE,
            "counts": (counts.params, counts.macs) == (recorded["params"], recorded["macs"]),
        }
        ok &= all(checks.values())
        rows.append(
            {"trial": point["trial"], "metric": metric, "ratio": ratio, "drift": drift, **checks}
        )
        print(
            f"trial {point['trial']}: metric {metric:.4f} (recorded {recorded['metric']:.4f}) "
            f"ratio {ratio:.3f} (recorded {recorded['latency_ratio']:.3f}, {drift:+.1%}) "
            f"{'OK' if all(checks.values()) else 'FAILED ' + ', '.join(k for k, v in checks.items() if not v)}"
        )
    print(
        f"{'all' if ok else 'NOT all'} {len(rows)} Pareto models reproduce (ratio tolerance +-{RATIO_TOLERANCE:.0%})"
    )
    return ok
