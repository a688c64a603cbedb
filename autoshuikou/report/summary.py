"""The run summary: built from the study (pure), written as JSON, printed as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autoshuikou.errors import UserError
from autoshuikou.measure.latency import REMEASURE_MAX_WINDOWS, REMEASURE_MIN_WINDOWS
from autoshuikou.util import read_json, require, sha256_file


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
        where = f"  (on another machine: {point.get('ran_on')})" if point["path"] is None else ""
        if "refined_from" in point:  # both scores: the search's, then the refined one
            where += (
                f"  (refined trial {point['refined_from']}: "
                f"{point['metric_before_refine']:.4f} at search time)"
                if "metric_before_refine" in point
                else f"  (refined trial {point['refined_from']})"
            )
        rows.append(row(f"trial {point['trial']}", point) + where)
    lines = [
        f"study {summary['study_name']}: {summary['trials_complete']} trials, "
        f"{summary['trials_feasible']} within the budget of {summary['budget_ms']:.3f} ms "
        f"({summary['budget']})",
        *rows,
    ]
    paths = [p["path"] for p in summary["pareto"] if p["path"] is not None]
    if paths:
        name = paths[0].rsplit("/", 1)[-1]
        runtime = summary.get("runtime", {}).get("runtime", "onnxruntime")
        lines.append(
            f"Pareto-optimal models ({runtime}): {summary['run_dir']}/trials/<trial>/{name}"
        )
    if not summary["pareto"]:
        lines.append(_nothing_feasible(summary))
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
    if summary.get("time"):  # summaries older than the breakdown have none
        lines.append(_time_line(summary))
    if summary.get("noisy_machine"):
        lines.append(
            f"warning: latency ratios moved by {summary['ratio_spread_median']:.0%} (median) between "
            "timing windows: this machine is noisy; ratios are read off over "
            f"{REMEASURE_MIN_WINDOWS}-{REMEASURE_MAX_WINDOWS} windows at the baseline's "
            "recorded latency, times drift more"
        )
    return "\n".join(lines)


def _time_line(summary: dict[str, Any]) -> str:
    """Where the run's time went: setup, the trials by phase, re-measurement, refinement."""
    spent = summary["time"]
    setup = ", ".join(f"{k} {v:.0f} s" for k, v in spent["setup_seconds"].items())
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in spent["trial_seconds"].items())
    collapsed = spent.get("trials_collapsed")  # absent from summaries before issue 37
    refined = spent.get("trials_refined")
    return (
        f"time: {summary['wall_seconds_this_run']:.0f} s this run (setup: {setup}); "
        f"trials: {phases}; {spent['trials_trained']} trained, "
        f"{spent['trials_screened_out']} screened out"
        + (f", {collapsed} collapsed" if collapsed else "")
        + f"; final re-measurement {spent.get('remeasure_seconds', 0):.0f} s"
        + (f"; refinement {spent['refine_seconds']:.0f} s ({refined} models)" if refined else "")
    )


def _nothing_feasible(summary: dict[str, Any]) -> str:
    """Which constraint no trial met (summaries before "unmet" say the budget)."""
    unmet = summary.get("unmet") or "latency"
    if unmet == "latency":
        return "No trial met the budget. Closest trials:"
    floor = f"--min-accuracy ({summary['metric_name']} {summary.get('min_metric') or 0:.4f})"
    if unmet == "min_accuracy":
        return f"No trial within the latency budget reached {floor}. Most accurate of them:"
    return f"No trial met the latency budget or reached {floor}. Closest trials:"


# What the readers of a summary (show, verify, export) index; an older or partly written
# summary.json lacking one is one message, not a KeyError.
SUMMARY_KEYS = (
    "study_name",
    "metric_name",
    "budget",
    "budget_ms",
    "trials_complete",
    "trials_feasible",
    "run_dir",
    "pareto",
    "baseline.metric",
    "baseline.latency_ms",
    "baseline.size_bytes",
    "baseline.macs",
)
POINT_KEYS = ("trial", "path", "model_sha256", "metric", "latency_ms", "size_bytes", "macs")
REWRITE_SUMMARY = (
    "rerun the same `autoshuikou search` command: it writes summary.json again "
    "(finished trials are kept)"
)


def load_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    if not path.exists():
        raise UserError(
            f"{path} does not exist", "point at a run directory written by `autoshuikou search`"
        )
    summary = require(read_json(path, REWRITE_SUMMARY), SUMMARY_KEYS, path, REWRITE_SUMMARY)
    if not isinstance(summary["pareto"], list):
        raise UserError(f"{path} is damaged: its pareto is not a list", REWRITE_SUMMARY)
    for i, point in enumerate(summary["pareto"]):
        require(point, POINT_KEYS, path, REWRITE_SUMMARY, within=f"pareto[{i}]")
    return summary


def artifact_problems(run_dir: Path, summary: dict[str, Any]) -> list[str]:
    """Pareto models that are missing or whose bytes no longer match their checksum."""
    problems = []
    for point in summary["pareto"]:
        if point["path"] is None:
            continue  # on another machine: its files are in that machine's --out
        model = run_dir / point["path"]
        if not model.exists():
            problems.append(f"trial {point['trial']}: {model} is missing")
        elif sha256_file(model) != point["model_sha256"]:
            problems.append(f"trial {point['trial']}: {model} is damaged (checksum mismatch)")
    return problems
