"""The run summary: built from the study (pure), written as JSON, printed as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoshuikou.errors import UserError
from autoshuikou.measure.latency import REMEASURE_MAX_WINDOWS, REMEASURE_MIN_WINDOWS
from autoshuikou.util import read_json, sha256_file


def format_table(summary: dict[str, Any]) -> str:
    base = summary["baseline"]
    name = summary["metric_name"]
    header = f"{'model':<16}{name:>14}{'retained':>10}{'latency ms':>12}{'speedup':>9}{'size KiB':>10}{'MMACs':>9}"
    energy = any("energy_mj" in p for p in summary["pareto"])
    header += f"{'mJ/inf':>9}" if energy else ""
    rows = [header, "-" * len(header)]

    def row(label: str, m: dict[str, Any]) -> str:
        text = (
            f"{label:<16}{m['metric']:>14.4f}"
            + (f"{m['metric'] / base['metric']:>10.2%}" if base["metric"] else f"{'-':>10}")
            + f"{m['latency_ms']:>12.3f}{base['latency_ms'] / m['latency_ms']:>8.2f}x"
            f"{m['size_bytes'] / 1024:>10.0f}{m['macs'] / 1e6:>9.2f}"
        )
        if energy:
            text += f"{m['energy_mj']:>9.3f}" if "energy_mj" in m else f"{'-':>9}"
        return text

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
        name = summary["pareto"][0]["path"].rsplit("/", 1)[-1]
        runtime = summary.get("runtime", {}).get("runtime", "onnxruntime")
        lines.append(
            f"Pareto-optimal models ({runtime}): {summary['run_dir']}/trials/<trial>/{name}"
        )
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
    if summary.get("front_remeasured") is False and summary["pareto"]:
        lines.append(
            "latencies are the search's own timings (each trial's metrics.json says of which "
            "artifact: latency_timed_on); the front was not re-measured at the end: "
            "`autoshuikou verify` times the models themselves"
        )
    spent = summary.get("time")
    if spent:  # where the time went (summaries older than the breakdown have none)
        setup = ", ".join(f"{k} {v:.0f} s" for k, v in spent["setup_seconds"].items())
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in spent["trial_seconds"].items())
        lines.append(
            f"time: {summary['wall_seconds_this_run']:.0f} s this run (setup: {setup}); "
            f"trials: {phases}; {spent['trials_trained']} trained, "
            f"{spent['trials_screened_out']} screened out; final re-measurement "
            f"{spent.get('remeasure_seconds', 0):.0f} s"
        )
    if summary.get("noisy_machine"):
        lines.append(
            f"warning: latency ratios moved by {summary['ratio_spread_median']:.0%} (median) between "
            "timing windows: this machine is noisy; ratios are read off over "
            f"{REMEASURE_MIN_WINDOWS}-{REMEASURE_MAX_WINDOWS} windows at the baseline's "
            "recorded latency, times drift more"
        )
    return "\n".join(lines)


def load_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.exists():
        raise UserError(
            f"{path} does not exist", "point at a run directory written by `autoshuikou search`"
        )
    try:
        summary: dict[str, Any] = read_json(path)
    except ValueError as exc:
        raise UserError(
            f"{path} is damaged: {exc}", "rerun the same `autoshuikou search` command"
        ) from exc
    return summary


def artifact_problems(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """Pareto models that are missing or whose bytes no longer match their checksum."""
    problems = []
    for point in summary["pareto"]:
        model = run_dir / point["path"]
        if not model.exists():
            problems.append(f"trial {point['trial']}: {model} is missing")
        elif sha256_file(model) != point["model_sha256"]:
            problems.append(f"trial {point['trial']}: {model} is damaged (checksum mismatch)")
    return problems
