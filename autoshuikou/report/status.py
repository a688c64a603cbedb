"""`autoshuikou status`: what a (possibly shared) study is doing right now."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import optuna

from autoshuikou.errors import UserError
from autoshuikou.study.pareto import is_feasible
from autoshuikou.study.record import TrialRecord, TrialTags
from autoshuikou.study.storage import make_storage
from autoshuikou.study.summary import time_breakdown


def study_status(run_dir: str | None, storage: str | None, study_name: str | None) -> str:
    if run_dir is None and storage is None:
        raise UserError(
            "status needs a run directory or --storage", "e.g. autoshuikou status runs/digits-50pct"
        )
    folder = Path(run_dir) if run_dir else Path(".")
    name = study_name or folder.name
    if storage is None and not (folder / "study.journal").exists():
        raise UserError(
            f"{folder} holds no study.journal", "point at runs/<study>, or pass --storage"
        )
    try:
        study = optuna.load_study(study_name=name, storage=make_storage(storage, folder))
    except KeyError as exc:
        raise UserError(f"no study named {name!r} in that storage", "check --study-name") from exc
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    tags = [TrialTags.from_trial(t) for t in trials]
    workers = sorted({str(tag.worker) for tag in tags if tag.worker is not None})
    feasible = [t for t in trials if is_feasible(t)]
    best = max(feasible, key=lambda t: TrialRecord.from_trial(t).metric, default=None)
    record = None if best is None else TrialRecord.from_trial(best)
    lines = [
        f"study {name}: {len(trials)} trials: "
        + ", ".join(
            f"{states.get(s, 0)} {s.lower()}"
            for s in ("COMPLETE", "PRUNED", "RUNNING", "FAIL", "WAITING")
        )
        + " (pruned = not trained: predicted or screened out, collapsed, or over the budget before training)",
        f"workers seen: {len(workers)} ({', '.join(workers) or 'none'})",
        "best feasible: "
        + (
            f"trial {best.number}, metric {record.metric:.4f} at {record.latency_ms:.3f} ms"
            if best and record
            else "none yet"
        ),
    ]
    spent = time_breakdown(study)
    total = sum(spent["trial_seconds"].values())
    if total:
        lines.append(
            f"trial time {total:.0f} s: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in spent["trial_seconds"].items())
            + f" ({spent['trials_trained']} trained, {spent['trials_screened_out']} screened out"
            + (f", {spent['trials_collapsed']} collapsed" if spent["trials_collapsed"] else "")
            + ")"
        )
    return "\n".join(lines)
