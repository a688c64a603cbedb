"""`autoshuikou compare`: several strategies on one task and budget, seeds x strategies studies,
then one table, one CSV and the charts.

Fairness: every study uses the same task, budget, trial count and seeds, and the same
measured baseline (copied from the first study), so every latency is a ratio to the same
model timed interleaved on this machine. Trials are counted the way `search` counts them
(the two reference models included), and seeds run in the outer loop, so slow phases of a
shared machine spread over all strategies. Reading the numbers uses search-time measurements
only, so rerunning the same command reproduces the table from the saved studies.
"""

from __future__ import annotations

import csv
import io
import platform
import shlex
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.compare.metrics import (
    XY,
    dominates_or_equals,
    first_reaching,
    greater_p_value,
    hypervolume_curve,
    pareto_front,
)
from autoshuikou.compare.strategies import (
    DEFAULT_STRATEGIES,
    FULL,
    Strategy,
    parse_strategies,
    write_no_distill_space,
)
from autoshuikou.errors import UserError
from autoshuikou.report.plots import plot_fronts, plot_hypervolume, plot_hypervolume_seconds
from autoshuikou.report.progress import Progress
from autoshuikou.space.bind import uniform_plans
from autoshuikou.study.budget import parse_budget
from autoshuikou.study.config import DEFAULTS, SearchConfig
from autoshuikou.study.front import counted_trials
from autoshuikou.study.pareto import is_feasible
from autoshuikou.study.record import TrialRecord, TrialTags
from autoshuikou.study.search import search
from autoshuikou.study.storage import journal_storage
from autoshuikou.tasks import Task, load_task
from autoshuikou.util import atomic_write_bytes, read_json, write_json

METRIC_FLOOR = 0.9  # hypervolume counts models keeping at least 90% of the baseline metric


@dataclass
class StudyOutcome:
    """One strategy on one seed, read back from its study."""

    strategy: str
    seed: int
    trials: int
    feasible: int
    hypervolume: float
    best_metric: float | None
    best_metric_retained: float | None
    first_feasible_trial: int | None
    first_feasible_seconds: float | None
    total_seconds: float
    setup_seconds: float  # latency profiling, where the strategy uses it (charged though cached)
    curve: list[float] = field(repr=False)
    seconds: list[float] = field(repr=False)  # when each trial of ``curve`` finished
    points: list[XY] = field(repr=False)  # feasible (latency ratio, metric retained)
    fixed_points: dict[str, XY] = field(repr=False)  # feasible baselines by label
    fixed_models: dict[str, str] = field(repr=False)  # their model files' SHA-256
    feasible_models: list[str] = field(repr=False)  # SHA-256 of every feasible model


def _xy(record: TrialRecord) -> XY:
    assert record.metric_retained is not None, "a baseline metric of 0 leaves nothing to compare"
    return (record.latency_ratio, record.metric_retained)


def search_clock(trials: list[FrozenTrial]) -> Callable[[datetime], float]:
    """Seconds the study was being searched up to a moment. Each search process (the
    trials' ``worker``) runs from its first trial's start to its last trial's end; time
    that no process covers, a search stopped and resumed later, does not count, and
    processes running side by side count once. A failed trial counts to its start: a
    killed run's orphan is marked failed when the next run starts, not when it died."""
    spans: dict[object, tuple[datetime, datetime]] = {}
    for t in trials:
        if t.datetime_start is None:
            continue
        failed = t.state == TrialState.FAIL
        end = t.datetime_complete if t.datetime_complete and not failed else t.datetime_start
        worker = t.user_attrs.get("worker")
        first, last = spans.get(worker, (t.datetime_start, end))
        spans[worker] = (min(first, t.datetime_start), max(last, end))
    merged: list[tuple[datetime, datetime]] = []
    for first, last in sorted(spans.values()):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))

    def clock(moment: datetime) -> float:
        return sum(
            (min(last, moment) - first).total_seconds() for first, last in merged if first < moment
        )

    return clock


def read_outcome(
    study: optuna.Study,
    strategy: str,
    seed: int,
    reference: XY,
    baselines: bool = False,
    setup_seconds: float = 0.0,
) -> StudyOutcome:
    """``baselines``: collect the fixed plans and the int8 reference as baseline points.
    Times are the seconds the study was searched (:func:`search_clock`), plus ``setup_seconds``."""
    finished = sorted(counted_trials(study), key=lambda t: t.number)
    # Time runs over every trial, those rejected on latency included: they cost seconds too.
    clock = search_clock(study.get_trials(deepcopy=False))
    # Screened-out trials count as trials (points None: never trained, never on a front).
    records = {t.number: TrialRecord.from_trial(t) for t in finished if is_feasible(t)}
    tags = {t.number: TrialTags.from_trial(t) for t in finished}
    points: list[XY | None] = [_xy(records[t.number]) if is_feasible(t) else None for t in finished]
    curve = hypervolume_curve(points, reference)
    feasible = [records[t.number] for t in finished if is_feasible(t)]
    first = next((i for i, t in enumerate(finished) if is_feasible(t)), None)
    best = max(feasible, key=lambda r: r.metric, default=None)

    def since_start(trial: FrozenTrial) -> float:
        assert trial.datetime_complete is not None
        return setup_seconds + clock(trial.datetime_complete)

    # The int8 reference is the int8-only baseline.
    baseline_labels = {
        t.number: tags[t.number].fixed or "int8-only"
        for t in finished
        if baselines
        and is_feasible(t)
        and (tags[t.number].fixed is not None or tags[t.number].reference == "int8")
    }
    return StudyOutcome(
        strategy=strategy,
        seed=seed,
        trials=len(finished),
        feasible=len(feasible),
        hypervolume=curve[-1] if curve else 0.0,
        best_metric=None if best is None else best.metric,
        best_metric_retained=None if best is None else best.metric_retained,
        first_feasible_trial=None if first is None else first + 1,
        first_feasible_seconds=None if first is None else since_start(finished[first]),
        total_seconds=setup_seconds + clock(datetime.max),
        setup_seconds=setup_seconds,
        curve=curve,
        seconds=[since_start(t) for t in finished],
        points=[p for p in points if p is not None],
        fixed_points={label: _xy(records[n]) for n, label in baseline_labels.items()},
        fixed_models={label: str(records[n].model_sha256) for n, label in baseline_labels.items()},
        feasible_models=sorted(r.model_sha256 for r in feasible if r.model_sha256 is not None),
    )


def _versions() -> dict[str, str]:
    names = ("autoshuikou", "optuna", "torch", "onnxruntime", "numpy", "scipy", "torch-pruning")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return {"python": platform.python_version(), **found}


# A rerun may add strategies, seeds or trials (each study resumes or starts); these must
# not change, or one table would mix measurements made under different conditions.
FIXED_SETUP = ("task", "budget", "space", "measure_seconds", "runtime")


def _check_setup(out: Path, setup: dict[str, Any]) -> None:
    path = out / "compare.json"
    if not path.exists():
        return
    saved = read_json(path).get("setup", {})
    diffs = [
        f"{k}: {saved.get(k)!r} -> {setup[k]!r}" for k in FIXED_SETUP if saved.get(k) != setup[k]
    ]
    if diffs:
        raise UserError(
            f"{out} holds a comparison with other settings ({'; '.join(diffs)})",
            "rerun the original command to resume it, or pass another --out",
        )


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _mean(values: list[float | None], fmt: str) -> str:
    known = [v for v in values if v is not None]
    missing = len(values) - len(known)
    if not known:
        return "never"
    text = format(statistics.mean(known), fmt)
    return text + (f" ({missing} seed(s) never)" if missing else "")


def seconds_to_reach(outcome: StudyOutcome, target: float) -> float | None:
    """Seconds (setup included) until ``outcome``'s hypervolume first reaches ``target``."""
    reached = first_reaching(outcome.curve, target)
    return None if reached is None else outcome.seconds[reached - 1]


def time_shares(
    outcomes: list[StudyOutcome], against: list[StudyOutcome]
) -> list[dict[str, float | None]]:
    """Per seed: when each outcome reached the final hypervolume of ``against`` on the same
    seed, in seconds and as a share of that study's whole time."""
    shares = []
    for o in outcomes:
        home = next((a for a in against if a.seed == o.seed), None)
        if home is None:
            continue
        reached = seconds_to_reach(o, home.hypervolume)
        shares.append(
            {
                "seed": o.seed,
                "seconds": reached,
                "share": None if reached is None else reached / home.total_seconds,
            }
        )
    return shares


def mean_curve_reaches(
    outcomes: list[StudyOutcome], against: list[StudyOutcome]
) -> dict[str, float | None]:
    """When the mean over seeds of ``outcomes``' hypervolume against seconds (each study at a
    given second: the best of its trials finished by then) first reaches the mean final
    hypervolume of ``against``; with that as a share of ``against``'s mean wall time. Seeds
    do not pair plans beyond the warm start, so this averages over them instead."""
    target = statistics.mean(a.hypervolume for a in against)
    wall = statistics.mean(a.total_seconds for a in against)

    def at(o: StudyOutcome, second: float) -> float:
        return max((h for s, h in zip(o.seconds, o.curve, strict=True) if s <= second), default=0.0)

    for second in sorted({s for o in outcomes for s in o.seconds}):
        if statistics.mean(at(o, second) for o in outcomes) >= target:
            return {"target": target, "seconds": second, "share": second / wall}
    return {"target": target, "seconds": None, "share": None}


def summarize(
    outcomes: list[StudyOutcome],
    strategies: list[Strategy],
    target_strategy: str | None,
    time_target: str | None = None,
) -> dict[str, Any]:
    """Per-strategy aggregates, rank tests of the default against each (both ways), uniform
    dominance; with ``time_target``, when each strategy reached that strategy's final
    hypervolume on the same seed, in seconds and as a share of its wall time."""
    by_name = {s.name: [o for o in outcomes if o.strategy == s.name] for s in strategies}
    default = next((s.name for s in strategies if s.is_default), None)
    target = None
    if target_strategy and by_name.get(target_strategy):
        target = statistics.mean(o.hypervolume for o in by_name[target_strategy])
    rows = []
    for s in strategies:
        runs = by_name[s.name]
        hvs = [o.hypervolume for o in runs]
        reach = [first_reaching(o.curve, target) for o in runs] if target is not None else []
        rows.append(
            {
                "strategy": s.name,
                "trials": s.trials,
                "seeds": len(runs),
                "hypervolume": hvs,
                "best_metric": [o.best_metric for o in runs],
                "first_feasible_trial": [o.first_feasible_trial for o in runs],
                "first_feasible_seconds": [o.first_feasible_seconds for o in runs],
                "total_seconds": [o.total_seconds for o in runs],
                "trials_to_target": reach,
                "p_default_greater": None
                if default is None or s.name == default
                else greater_p_value([o.hypervolume for o in by_name[default]], hvs),
                "p_greater_than_default": None
                if default is None or s.name == default
                else greater_p_value(hvs, [o.hypervolume for o in by_name[default]]),
                "time_to_target": time_shares(runs, by_name[time_target])
                if time_target and by_name.get(time_target)
                else [],
                "mean_to_target": mean_curve_reaches(runs, by_name[time_target])
                if time_target and by_name.get(time_target) and runs
                else None,
            }
        )
    dominance = []
    if default is not None:
        for o in outcomes:
            home = next((d for d in by_name[default] if d.seed == o.seed), None)
            if home is None:
                continue
            front = pareto_front(home.points)
            for label, point in o.fixed_points.items():
                # The very same model file among the default's feasible trials is equal to
                # it: the two positions differ only by timing noise.
                same = o.fixed_models.get(label) in home.feasible_models
                beaten = any(dominates_or_equals(f, point) for f in front)
                dominance.append(
                    {
                        "seed": o.seed,
                        "baseline": label,
                        "point": point,
                        "dominated": beaten or same,
                        "how": "dominated" if beaten else "same model" if same else "not dominated",
                    }
                )
    return {
        "default": default,
        "target_strategy": target_strategy,
        "target_hypervolume": target,
        "time_target": time_target,
        "rows": rows,
        "uniform_dominance": dominance,
    }


def markdown_table(summary: dict[str, Any], reference: XY) -> str:
    default = summary["default"]
    lines = [
        f"Hypervolume of the feasible (latency ratio, metric retained) front, reference point "
        f"({reference[0]:.3f}, {reference[1]:.2f}): the budget and {reference[1]:.0%} of the "
        "baseline metric. Mean ± standard deviation over seeds; times in seconds of searching "
        "from the study's first trial (a stopped and resumed study's pause left out).",
        "",
        "| strategy | trials | seeds | hypervolume | best metric | first feasible (trial) "
        f"| first feasible (s) | total (s) | p ({default} > this) | p (this > {default}) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        p, q = row["p_default_greater"], row["p_greater_than_default"]
        lines.append(
            f"| {row['strategy']} | {row['trials']} | {row['seeds']} | {_mean_sd(row['hypervolume'])} "
            f"| {_mean(row['best_metric'], '.4f')} | {_mean(row['first_feasible_trial'], '.1f')} "
            f"| {_mean(row['first_feasible_seconds'], '.0f')} | {_mean(row['total_seconds'], '.0f')} "
            f"| {'-' if p is None else f'{p:.3f}'} | {'-' if q is None else f'{q:.3f}'} |"
        )
    time_target = summary.get("time_target")
    if time_target:
        lines += [
            "",
            f"Wall time until the hypervolume reaches {time_target}'s final one on the same "
            f"seed (seconds, latency profiling included where used; share of {time_target}'s "
            "wall time):",
            "",
        ]
        for row in summary["rows"]:
            reach = ", ".join(
                "never" if r["seconds"] is None else f"{r['seconds']:.0f} s ({r['share']:.0%})"
                for r in row["time_to_target"]
            )
            lines.append(f"- {row['strategy']}: {reach}")
        means = [r for r in summary["rows"] if r.get("mean_to_target")]
        if means:
            lines += [
                "",
                f"Mean over seeds: wall time until the seeds' mean hypervolume reaches "
                f"{time_target}'s mean final one ({means[0]['mean_to_target']['target']:.4f}); "
                f"share of {time_target}'s mean wall time:",
                "",
            ]
            for row in means:
                m = row["mean_to_target"]
                reach = (
                    "never" if m["seconds"] is None else f"{m['seconds']:.0f} s ({m['share']:.0%})"
                )
                lines.append(f"- {row['strategy']}: {reach}")
    target = summary["target_hypervolume"]
    if target is not None:
        lines += [
            "",
            f"Trials until the hypervolume reaches {summary['target_strategy']}'s final mean "
            f"({target:.4f}), per seed:",
            "",
        ]
        for row in summary["rows"]:
            reach = ", ".join("never" if r is None else str(r) for r in row["trials_to_target"])
            lines.append(f"- {row['strategy']}: {reach}")
    dominance = summary["uniform_dominance"]
    if dominance:
        beaten = sum(d["dominated"] for d in dominance)
        same = sum(d["how"] == "same model" for d in dominance)
        lines += [
            "",
            f"Uniform baselines within the budget dominated by, or equal to, a point of "
            f"{default}'s front on the same seed: {beaten} of {len(dominance)} ({same} of them "
            f"equal: the same model file is among {default}'s feasible trials, timed apart).",
        ]
        lines += [
            f"- seed {d['seed']} {d['baseline']} at ({d['point'][0]:.3f}, {d['point'][1]:.4f}): "
            f"{d['how'].upper()}"
            for d in dominance
            if d["how"] != "dominated"
        ]
    return "\n".join(lines) + "\n"


def _csv(outcomes: list[StudyOutcome]) -> bytes:
    columns = [
        "strategy",
        "seed",
        "trials",
        "feasible",
        "hypervolume",
        "best_metric",
        "best_metric_retained",
        "first_feasible_trial",
        "first_feasible_seconds",
        "total_seconds",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for o in outcomes:
        writer.writerow({k: v for k, v in asdict(o).items() if k in columns})
    return buffer.getvalue().encode()


def _finished(out: Path, name: str) -> int:
    """Finished trials of a study of this comparison; 0 if it was never started."""
    if not (out / name / "summary.json").exists():
        return 0
    study = optuna.load_study(study_name=name, storage=journal_storage(out / name))
    return len(counted_trials(study))


def _profiling_seconds(summary_path: Path) -> float:
    """What building the latency model cost the study (0 where it used none)."""
    setup = read_json(summary_path).get("time", {}).get("setup_seconds", {})
    return float(setup.get("profiling", 0.0))


def _copy_baseline(out: Path, study_names: list[str], target: Path) -> None:
    """Give a new study the baseline already measured for this comparison."""
    if (target / "baseline").exists():
        return
    for name in study_names:
        source = out / name / "baseline"
        if (source / "metrics.json").exists():
            shutil.copytree(source, target / "baseline")
            return


def compare(
    task: Task | str | None = None,
    budget: str = DEFAULTS.budget,
    trials: int = DEFAULTS.trials,
    seeds: int = 3,
    out: str | Path = "runs/compare",
    strategies: str = DEFAULT_STRATEGIES,
    space: str | Path | None = None,
    measure_seconds: float = DEFAULTS.measure_seconds,
    progress: Progress | None = None,
    runtime: str = DEFAULTS.runtime,
    device: str = DEFAULTS.device,
) -> dict[str, Any]:
    """Run every strategy on every seed (resuming finished studies), then write the report."""
    progress = progress or Progress()
    parsed = parse_budget(budget)
    if trials < 1 or seeds < 1:
        raise UserError("--trials and --seeds must be at least 1", "e.g. --trials 30 --seeds 3")
    chosen = parse_strategies(strategies, trials)
    if not isinstance(task, Task):
        task = load_task(task)
    out = Path(out)
    # What every study shares; each strategy and seed derives its own. The table reads
    # search-time measurements, so the fronts are not re-measured; and it compares the
    # searches, so no front is refined (the same longer training would follow each).
    shared = SearchConfig(
        budget=budget,
        out=out,
        measure_seconds=measure_seconds,
        runtime=runtime,
        final_remeasure=False,
        device=device,
        refine=0,
    )
    setup = {
        "task": task.name,
        "budget": parsed.text,
        "trials": trials,
        "seeds": seeds,
        "strategies": [f"{s.name}:{s.trials}" for s in chosen],
        "space": None if space is None else str(space),
        "measure_seconds": measure_seconds,
        "runtime": runtime,
        "device": device,
    }
    _check_setup(out, setup)
    out.mkdir(parents=True, exist_ok=True)
    no_distill_space = (
        write_no_distill_space(space, out / "spaces" / "no-distill.yaml")
        if any(s.no_distill for s in chosen)
        else None
    )
    names = [f"{s.name}-seed{seed}" for seed in range(seeds) for s in chosen]
    started = datetime.now().isoformat(timespec="seconds")
    for seed in range(seeds):
        for s in chosen:
            name = f"{s.name}-seed{seed}"
            if _finished(out, name) >= s.trials:
                progress.line(f"== {s.name}, seed {seed}: done ({out / name})")
                continue
            progress.line(f"== {s.name}, seed {seed}: {s.trials} trials -> {out / name}")
            _copy_baseline(out, names, out / name)
            config = replace(
                shared,
                trials=s.trials,
                space=no_distill_space if s.no_distill else space,
                study_name=name,
                seed=seed,
                sampler=s.sampler,
                warm_start=s.warm_start,
                fidelity=s.fidelity,
                predict=s.predict,
                teacher_cache_mb=shared.teacher_cache_mb if s.teacher_cache else 0,
                reuse_students=s.reuse_students,
            )
            search(task, config, progress, uniform_plans if s.uniform else None)

    first_summary = read_json(
        next(out / n / "summary.json" for n in names if (out / n / "summary.json").exists())
    )
    budget_ratio = first_summary["budget_ms"] / first_summary["baseline"]["latency_ms"]
    reference = (budget_ratio, METRIC_FLOOR)
    outcomes = []
    for seed in range(seeds):
        for s in chosen:
            name = f"{s.name}-seed{seed}"
            study = optuna.load_study(study_name=name, storage=journal_storage(out / name))
            profiling = _profiling_seconds(out / name / "summary.json")
            outcomes.append(read_outcome(study, s.name, seed, reference, s.uniform, profiling))
    target = next((s.name for s in chosen if s.sampler == "random" and not s.uniform), None)
    summary = summarize(
        outcomes, chosen, target, FULL if FULL in [s.name for s in chosen] else None
    )
    table = markdown_table(summary, reference)
    atomic_write_bytes(out / "results.csv", _csv(outcomes))
    atomic_write_bytes(out / "table.md", table.encode())
    _plots(out, outcomes, chosen, reference, task.name, parsed.text)
    write_json(
        out / "compare.json",
        {
            "setup": setup,
            "command": shlex.join(["autoshuikou", *sys.argv[1:]])
            if Path(sys.argv[0]).name in ("autoshuikou", "__main__.py")
            else None,
            "started": started,
            "versions": _versions(),
            "hardware": first_summary["hardware"],
            "runtime": first_summary["runtime"],
            "baseline": first_summary["baseline"],
            "hypervolume_reference": {
                "latency_ratio": reference[0],
                "metric_retained": reference[1],
            },
            "summary": summary,
            "studies": [asdict(o) for o in outcomes],
        },
    )
    progress.line(table)
    progress.line(
        f"wrote {out}/table.md, results.csv, fronts.png, hypervolume.png, "
        "hypervolume_seconds.png, compare.json"
    )
    return summary


def _plots(
    out: Path,
    outcomes: list[StudyOutcome],
    strategies: list[Strategy],
    reference: XY,
    task: str,
    budget: str,
) -> None:
    fronts: dict[str, list[XY]] = {}
    curves: dict[str, list[list[float]]] = {}
    for s in strategies:
        runs = [o for o in outcomes if o.strategy == s.name]
        if s.uniform:
            continue
        fronts[f"{s.name} (all seeds)"] = pareto_front([p for o in runs for p in o.points])
        curves[s.name] = [o.curve for o in runs]
    fixed: dict[str, list[XY]] = {}
    for o in outcomes:
        for label, point in o.fixed_points.items():
            kind = "uniform fp32" if label.endswith("fp32") else "uniform int8, int8-only"
            fixed.setdefault(kind, []).append(point)
    title = f"{task}, budget {budget}"
    plot_fronts(out / "fronts.png", fronts, fixed, reference[0], reference[1], title)
    plot_hypervolume(out / "hypervolume.png", curves, title)
    timed = {
        s.name: [(o.seconds, o.curve) for o in outcomes if o.strategy == s.name]
        for s in strategies
        if not s.uniform
    }
    plot_hypervolume_seconds(out / "hypervolume_seconds.png", timed, title)
