"""The run summary: built from the study (pure), written as JSON, printed as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoshuikou.errors import UserError
from autoshuikou.util import read_json


def format_table(summary: dict[str, Any]) -> str:
    base = summary["baseline"]
    name = summary["metric_name"]
    header = f"{'model':<16}{name:>14}{'retained':>10}{'latency ms':>12}{'speedup':>9}{'size KiB':>10}{'MMACs':>9}"
    rows = [header, "-" * len(header)]

    def row(label: str, m: dict[str, Any]) -> str:
        return (
            f"{label:<16}{m['metric']:>14.4f}{m['metric'] / base['metric']:>10.2%}"
            f"{m['latency_ms']:>12.3f}{base['latency_ms'] / m['latency_ms']:>8.2f}x"
            f"{m['size_bytes'] / 1024:>10.0f}{m['macs'] / 1e6:>9.2f}"
        )

    rows.append(row("baseline fp32", base))
    for point in summary["pareto"]:
        rows.append(row(f"trial {point['trial']}", point))
    lines = [
        f"study {summary['study_name']}: {summary['trials_complete']} trials, "
        f"{summary['trials_feasible']} within the budget of {summary['budget_ms']:.3f} ms "
        f"({summary['budget']})",
        *rows,
    ]
    if summary["pareto"]:
        lines.append(f"Pareto-optimal models: {summary['run_dir']}/trials/<trial>/model.onnx")
    else:
        lines.append("No trial met the budget. Closest trials:")
        for c in summary["closest"]:
            lines.append(
                f"  trial {c['trial']}: {c['latency_ms']:.3f} ms "
                f"({c['latency_ms'] / summary['budget_ms']:.2f}x the budget), metric {c['metric']:.4f}"
            )
    for d in summary.get("dropped_on_remeasure", []):
        lines.append(
            f"trial {d['trial']} left the front on re-measurement: {d['latency_ms_search']:.3f} ms in the "
            f"search, {d['latency_ms_final']:.3f} ms re-measured"
        )
    if summary.get("noisy_machine"):
        lines.append(
            f"warning: latency ratios moved by {summary['ratio_spread_median']:.0%} (median) between "
            "timing windows: this machine is noisy; ratios are medians of 5-15 windows, times drift more"
        )
    return "\n".join(lines)


def load_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.exists():
        raise UserError(
            f"{path} does not exist", "point at a run directory written by `autoshuikou search`"
        )
    summary: dict[str, Any] = read_json(path)
    missing = [p["trial"] for p in summary["pareto"] if not (run_dir / p["path"]).exists()]
    if missing:
        raise UserError(
            f"Pareto models of trials {missing} are missing under {run_dir}",
            "rerun the same `autoshuikou search` command to rebuild the summary",
        )
    return summary
