"""Benchmark suite: search strategies side by side, and what makes a trial cheaper.

    python benchmarks/strategies.py                     # the commands and their run times
    python benchmarks/strategies.py side-by-side        # issue 5's comparison (digits, 3 seeds)
    python benchmarks/strategies.py fidelity --task benchmarks/tasks.py:resnet18_digits --seeds 10
    python benchmarks/strategies.py timing-once | teacher-cache | workers
    python benchmarks/strategies.py predictor | decided-out | rungs | searches  RUN_FOLDERS...

The first two run `autoshuikou compare`, which prints its table; the analyses read the
studies a comparison (or a search) recorded. Results: docs/results/strategies.md and
docs/results/cheaper-trials.md.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import Command, cli, main, table

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from autoshuikou.compare.run import StudyOutcome

DESCRIPTION = "Search strategies side by side, many workers, and cheaper trials."

ISSUE5_STRATEGIES = "tpe-warm,tpe,nsga2,random:60,no-distill,uniform"


# -- side-by-side and fidelity: `autoshuikou compare` as the results ran it ---------------


def add_side_by_side(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="digits")
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--trials", default="30")
    parser.add_argument("--seeds", default="3")
    parser.add_argument("--strategies", default=ISSUE5_STRATEGIES)
    parser.add_argument("--out", default="runs/compare-digits-50pct")


def run_side_by_side(args: argparse.Namespace) -> int:
    """TPE from the uniform plans (the default), TPE from scratch, NSGA-II, random search,
    no distillation and the uniform plans alone, every study timed against one copied
    baseline; `compare` prints the hypervolume table and writes its figures to --out."""
    return cli(
        [
            "compare",
            "--task",
            args.task,
            "--budget",
            args.budget,
            "--trials",
            args.trials,
            "--seeds",
            args.seeds,
            "--strategies",
            args.strategies,
            "--out",
            args.out,
        ]
    )


def add_fidelity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="digits", help="e.g. benchmarks/tasks.py:resnet18_digits")
    parser.add_argument("--seeds", default="5")
    parser.add_argument("--strategies", default="tpe-warm,full-fidelity")
    parser.add_argument("--out", default=None, help="default: runs/fidelity-<task>")


def run_fidelity(args: argparse.Namespace) -> int:
    """The default (a plan timed once untrained, the accuracy predictor or the half-epoch
    rung, the teacher cache, precision twins sharing a student) against full fidelity (every
    plan trained, the latency model profiled first: the default before issue 13), budget
    50%, 30 trials, seeds in the outer loop."""
    name = args.task.rsplit(":", 1)[-1].replace("/", "-")
    out = args.out or f"runs/fidelity-{name}"
    return cli(
        [
            "compare",
            "--task",
            args.task,
            "--strategies",
            args.strategies,
            "--seeds",
            args.seeds,
            "--out",
            out,
        ]
    )


# -- searches: search folders read as `compare` reads studies (was searches_side_by_side.py)


def add_searches(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", type=Path, help="`autoshuikou search` run folders")
    parser.add_argument("--reference", default="0.50,0.90", help="latency ratio,retained")


def _outcome(run: Path, reference: tuple[float, float]) -> tuple[StudyOutcome, dict[str, Any]]:
    """The search in ``run`` read as `compare` reads a study, and its summary's facts."""
    import optuna

    from autoshuikou.compare.metrics import hypervolume
    from autoshuikou.compare.run import read_outcome
    from autoshuikou.study.storage import journal_storage
    from autoshuikou.util import read_json

    summary = read_json(run / "summary.json")
    study = optuna.load_study(study_name=None, storage=journal_storage(run))
    profiling = float(summary["time"]["setup_seconds"].get("profiling", 0.0))
    read = read_outcome(study, run.name, 0, reference, setup_seconds=profiling)
    final = hypervolume(
        [(p["latency_ratio"], p["metric_retained"]) for p in summary["pareto"]], reference
    )
    facts = {
        "run": str(run),
        "fidelity": summary.get("fidelity"),
        "trained": summary["time"]["trials_trained"],
        "decided_out": summary["time"]["trials_screened_out"],
        "wall_seconds": round(read.total_seconds, 1),
        "hypervolume_searched": round(read.hypervolume, 5),
        "hypervolume_remeasured": round(final, 5),
    }
    return read, facts


def run_searches(args: argparse.Namespace) -> int:
    """For each `autoshuikou search` run folder (e.g. the no-code ResNet-50 case): the
    fidelity, the trials trained and decided out, the wall time as `compare` counts it
    (first trial started to last finished, plus the latency profiling), the hypervolume of
    the feasible (latency ratio, metric retained) front as searched and after the final
    re-measurement, and when the search first reached the FIRST folder's final hypervolume
    as searched (seconds and share of that folder's wall time)."""
    import optuna

    from autoshuikou.compare.run import seconds_to_reach

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    x, y = (float(v) for v in args.reference.split(","))
    first: StudyOutcome | None = None
    rows = []
    for run in args.runs:
        read, facts = _outcome(run, (x, y))
        first = first or read
        reached = seconds_to_reach(read, first.hypervolume)
        facts["reaches_first_final_at"] = None if reached is None else round(reached, 1)
        facts["share"] = None if reached is None else round(reached / first.total_seconds, 3)
        print(json.dumps(facts))
        rows.append(tuple(facts.values()))
    print()
    print(
        table(
            [
                "run",
                "fidelity",
                "trained",
                "decided out",
                "wall time (s)",
                "hypervolume as searched",
                "after the final re-measurement",
                "first folder's final reached (s)",
                "share of its wall time",
            ],
            rows,
        )
    )
    return 0


# -- workers: trials per minute with 1 and 2 workers on one study (was workers.py) --------


def add_workers(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--budget", default="50%")


def _run_workers(count: int, trials: int, budget: str, out: str) -> float:
    import subprocess

    cmd = [
        sys.executable,
        "-m",
        "autoshuikou",
        "search",
        "--budget",
        budget,
        "--trials",
        str(trials),
        "--out",
        out,
        "--study-name",
        f"workers-{count}",
    ]
    started = time.monotonic()
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(count)
    ]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(
            f"a worker failed: {[p.stderr.read().decode()[-500:] for p in procs if p.stderr]}"
        )
    return time.monotonic() - started


def run_workers(args: argparse.Namespace) -> int:
    """Each configuration searches the default task in a fresh study folder (journal file),
    with the latency model and teacher already cached (run `autoshuikou profile` first so
    neither is timed)."""
    with tempfile.TemporaryDirectory() as out:
        one = _run_workers(1, args.trials, args.budget, out)
        two = _run_workers(2, args.trials, args.budget, out)
    print(
        table(
            ["trials", "1 worker", "2 workers", "2 vs 1"],
            [
                (
                    args.trials,
                    f"{one:.0f} s, {args.trials / one * 60:.1f} trials/min",
                    f"{two:.0f} s, {args.trials / two * 60:.1f} trials/min",
                    f"{one / two:.2f}x",
                )
            ],
        )
    )
    return 0


# -- predictor: how well the learned accuracy predictor did (was predictor_quality.py) ----


def add_predictor(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "folders", nargs="+", type=Path, help="`compare` folders, or one search's run folder"
    )
    parser.add_argument("--strategy", action="append", help="default: tpe-warm and predictor")


def _quality(folder: Path, strategies: list[str]) -> dict[str, Any]:
    import numpy as np
    import optuna
    from scipy.stats import spearmanr

    from autoshuikou.study.predictor import ERROR_ATTR, PREDICTED_ATTR, SIGNAL_ATTR
    from autoshuikou.study.refine import REFINE_ATTR
    from autoshuikou.study.storage import journal_storage

    signals, trained, misses, within = [], [], [], 0
    if (folder / "study.journal").exists():
        studies = [folder]
    else:
        studies = [d for s in strategies for d in sorted(folder.glob(f"{s}-seed*")) if d.is_dir()]
    for study_dir in studies:
        study = optuna.load_study(study_name=None, storage=journal_storage(study_dir))
        for trial in study.trials:
            attrs = trial.user_attrs
            if "metric" not in attrs or REFINE_ATTR in attrs:
                continue
            if SIGNAL_ATTR in attrs:
                signals.append(attrs[SIGNAL_ATTR])
                trained.append(attrs["metric"])
            if PREDICTED_ATTR in attrs:
                miss = attrs["metric"] - attrs[PREDICTED_ATTR]
                misses.append(miss)
                within += abs(miss) <= attrs[ERROR_ATTR]
    errors = np.array(misses)
    return {
        "folder": str(folder),
        "studies": [d.name for d in studies],
        "trained_with_signal": len(signals),
        "spearman_signal_vs_trained": round(float(spearmanr(signals, trained)[0]), 3),
        "predicted_then_trained": len(misses),
        "mean_abs_error": round(float(np.abs(errors).mean()), 4),
        "median_abs_error": round(float(np.median(np.abs(errors))), 4),
        "bias": round(float(errors.mean()), 4),
        "within_one_standard_error": round(within / len(misses), 3),
    }


def run_predictor(args: argparse.Namespace) -> int:
    """Over the studies of --strategy in each `compare` folder (studies named
    <strategy>-seed<N>), or one search's run folder: how well the signal (the untrained
    student's score after BatchNorm recalibration) ranks the trained models (Spearman), and,
    for the plans the predictor judged and then trained, how far its prediction was from the
    trained metric and how often within one of its standard errors."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for folder in args.folders:
        q = _quality(folder, args.strategy or ["tpe-warm", "predictor"])
        print(json.dumps(q))
        rows.append(
            (
                q["folder"],
                len(q["studies"]),
                q["trained_with_signal"],
                q["spearman_signal_vs_trained"],
                q["predicted_then_trained"],
                q["mean_abs_error"],
                q["median_abs_error"],
                q["bias"],
                q["within_one_standard_error"],
            )
        )
    print()
    print(
        table(
            [
                "folder",
                "studies",
                "trained with a signal",
                "Spearman, signal vs trained",
                "predicted, then trained",
                "mean abs error",
                "median abs error",
                "bias",
                "within one standard error",
            ],
            rows,
        )
    )
    return 0


# -- decided-out: train the plans a search decided out, and see (was decided_out.py) ------


def add_decided_out(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--task", default="digits", help="the comparison's --task")
    parser.add_argument("--strategy", default="tpe-warm")


def run_decided_out(args: argparse.Namespace) -> int:
    """For every study of --strategy in a `compare` folder, trains each plan the predictor or
    the rung decided out, fully, as the search would have (the plan's own settings, the
    study's seed and int8 format, its saved baseline), scores the deployed artifact, and adds
    it to the study's front at its untrained timing. The sampler would have gone on
    differently after a trained plan; this measures the decisions, not that path."""
    import optuna
    import yaml
    from optuna.trial import TrialState

    from autoshuikou.compare.metrics import hypervolume, pareto_front
    from autoshuikou.compare.run import METRIC_FLOOR, read_outcome
    from autoshuikou.measure.accuracy import artifact_metric
    from autoshuikou.plan import Plan
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.front import screened
    from autoshuikou.study.predictor import PREDICTED_ATTR
    from autoshuikou.study.prepare import prepare_context
    from autoshuikou.study.storage import journal_storage
    from autoshuikou.study.trial import build_artifact
    from autoshuikou.tasks import load_task
    from autoshuikou.util import read_json

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task(args.task)
    before, after = [], []
    rows: list[tuple[object, ...]] = []
    for run in sorted(args.compare_dir.glob(f"{args.strategy}-seed*")):
        seed = int(yaml.safe_load((run / "config.yaml").read_text())["seed"])
        summary = read_json(run / "summary.json")
        study = optuna.load_study(study_name=None, storage=journal_storage(run))
        reference = (summary["budget_ms"] / summary["baseline"]["latency_ms"], METRIC_FLOOR)
        outcome = read_outcome(study, args.strategy, seed, reference)
        decided = [
            t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if screened(t)
        ]
        added = []
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp) / "run"
            shutil.copytree(run / "baseline", work / "baseline")
            ctx, _ = prepare_context(task, None, work, seed, 1, 1.0, Progress(io.StringIO()))
            assert ctx.baseline.int8_format.name == summary["int8_format"], "another int8 format"
            for t in decided:
                plan = Plan.from_dict(read_json(run / "trials" / f"{t.number:04d}" / "plan.json"))
                path = Path(tmp) / f"{t.number}{ctx.settings.backend.suffix}"
                build_artifact(ctx, plan, path)
                metric = artifact_metric(path, task, ctx.settings)
                retained = metric / summary["baseline"]["metric"]
                added.append((t.number, t.user_attrs["screen_latency_ratio"], retained))
                print(
                    json.dumps(
                        {
                            "run": run.name,
                            "trial": t.number,
                            "predicted": t.user_attrs.get(PREDICTED_ATTR),
                            "at_rung": t.user_attrs.get("screen_metric"),
                            "trained": round(metric, 4),
                        }
                    ),
                    flush=True,
                )
        points = [*outcome.points, *((x, y) for _, x, y in added)]
        joined = [n for n, x, y in added if (x, y) in pareto_front(points) and x < reference[0]]
        with_them = hypervolume(points, reference)
        before.append(outcome.hypervolume)
        after.append(with_them)
        rows.append(
            (run.name, len(decided), joined, round(outcome.hypervolume, 5), round(with_them, 5))
        )
        print(
            json.dumps(
                {
                    "run": run.name,
                    "decided_out": len(decided),
                    "would_join_front": joined,
                    "hypervolume": round(outcome.hypervolume, 5),
                    "with_them": round(with_them, 5),
                }
            ),
            flush=True,
        )
    if before:
        rows.append(
            (
                f"mean of {len(before)} studies",
                None,
                None,
                round(statistics.mean(before), 5),
                round(statistics.mean(after), 5),
            )
        )
    print()
    print(
        table(
            [
                "study",
                "plans decided out",
                "would have joined the front",
                "hypervolume",
                "with them",
            ],
            rows,
        )
    )
    return 0


# -- rungs: the least wall time a screening study could take (was rung_floor.py) ----------


def add_rungs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--strategy", default="screening", help="e.g. tpe-warm on an encoder")
    parser.add_argument("--against", default="full-fidelity")


def _trial_seconds(trial: FrozenTrial) -> float:
    return float(sum((trial.user_attrs.get("seconds") or {}).values()))


def _floor(study: optuna.Study, trials: int) -> dict[str, float]:
    from optuna.trial import TrialState

    from autoshuikou.study.front import counted

    always = 0.0  # references, uniform plans, rejections: paid whatever the rung decides
    always_counted = 0
    screened_out: list[float] = []
    for t in study.trials:
        anchor = "reference" in t.user_attrs or "warm_start" in t.user_attrs
        if anchor or (t.state == TrialState.PRUNED and not counted(t)):
            always += _trial_seconds(t)
            always_counted += int(anchor and counted(t))
        elif t.state == TrialState.PRUNED:
            screened_out.append(_trial_seconds(t))
    per_plan = sum(screened_out) / len(screened_out)
    return {
        "always_trained_seconds": round(always, 1),
        "screened_out_plan_seconds": round(per_plan, 1),
        "floor_seconds": round(always + (trials - always_counted) * per_plan, 1),
    }


def run_rungs(args: argparse.Namespace) -> int:
    """For each study of --strategy in a `compare` folder: the seconds of the trials that
    are always trained (the two references and the uniform plans; trials rejected on latency
    too), plus, for every other counted trial, the mean cost of a plan screened out at the
    rung in that study: the study's time had the rung screened out every sampled plan (a
    front of the uniform plans alone), as a share of the same seed's --against wall time
    (profiling included, as `compare` counts it). Below 40% or not tells whether the issue-13
    target is reachable at this rung."""
    import optuna

    from autoshuikou.study.storage import journal_storage
    from autoshuikou.util import read_json

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    report = read_json(args.compare_dir / "compare.json")
    trials = int(report["setup"]["trials"])
    full = {
        s["seed"]: s["total_seconds"] for s in report["studies"] if s["strategy"] == args.against
    }
    rows = []
    for s in report["studies"]:
        if s["strategy"] != args.strategy:
            continue
        run = args.compare_dir / f"{args.strategy}-seed{s['seed']}"
        study = optuna.load_study(study_name=None, storage=journal_storage(run))
        result = _floor(study, trials)
        share = result["floor_seconds"] / full[s["seed"]] if s["seed"] in full else None
        print(json.dumps({"seed": s["seed"], **result, f"share_of_{args.against}": share}))
        rows.append(
            (
                s["seed"],
                result["always_trained_seconds"],
                result["screened_out_plan_seconds"],
                result["floor_seconds"],
                None if share is None else f"{share:.0%}",
            )
        )
    print()
    print(
        table(
            [
                "seed",
                "always trained (s)",
                "a plan screened out (s)",
                "floor (s)",
                f"share of {args.against}",
            ],
            rows,
        )
    )
    return 0


# -- timing-once: a plan's untrained build against its trained artifact (was untrained_timing.py)


def add_timing_once(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="digits")
    parser.add_argument("--plans", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per plan")


def run_timing_once(args: argparse.Namespace) -> int:
    """For --plans plans drawn at random from the task's space: the untrained artifact, the
    fine-tuned one (the plan's own distillation, seed 0) and a byte copy of the untrained one,
    timed with the fp32 baseline interleaved in one measurement. The copy gives the noise
    floor: two timings of the very same file."""
    import math

    import optuna

    from autoshuikou.measure.latency import measure_interleaved
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.prepare import prepare_context
    from autoshuikou.study.trial import build_artifact
    from autoshuikou.tasks import load_task

    task = load_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        ctx, _ = prepare_context(task, None, Path(tmp) / "run", 0, 1, args.seconds, Progress())
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        trained_diffs, noise = [], []
        for number in range(args.plans):
            plan = ctx.space.suggest(study.ask())
            if plan.distill.epochs <= 0:
                continue
            folder = Path(tmp) / f"plan{number}"
            folder.mkdir()
            untrained, trained, copied = (
                folder / f"{name}{ctx.settings.backend.suffix}"
                for name in ("untrained", "trained", "copy")
            )
            build_artifact(ctx, plan, untrained, epochs=0)
            build_artifact(ctx, plan, trained)
            shutil.copyfile(untrained, copied)
            stats = measure_interleaved(
                [untrained, trained, copied, ctx.baseline.model_path],
                ctx.example_input,
                ctx.settings,
                seconds=args.seconds,
            )
            u, t, c = (s.median_ms / stats[3].median_ms for s in stats[:3])
            trained_diffs.append(math.log(t / u))
            noise.append(math.log(c / u))
            print(
                json.dumps(
                    {
                        "plan": number,
                        "epochs": plan.distill.epochs,
                        "int8_layers": len(plan.int8_layers),
                        "ratio_untrained": round(u, 4),
                        "ratio_trained": round(t, 4),
                        "ratio_copy": round(c, 4),
                    }
                ),
                flush=True,
            )
            shutil.rmtree(folder)

    def describe(diffs: list[float]) -> str:
        median = 100 * (math.exp(statistics.median(diffs)) - 1)
        mean_abs = 100 * statistics.mean(abs(d) for d in diffs)
        max_abs = 100 * max(abs(d) for d in diffs)
        return f"{median:.2f}%, {mean_abs:.2f}%, {max_abs:.2f}%"

    print()
    print(
        table(
            [
                "task",
                "plans",
                "trained vs untrained: median, mean abs, max",
                "same file twice: median, mean abs, max",
            ],
            [(args.task, len(trained_diffs), describe(trained_diffs), describe(noise))],
        )
    )
    return 0


# -- teacher-cache: fine-tuning with and without the teacher's cached outputs (was teacher_cache.py)


def add_teacher_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="digits")
    parser.add_argument("--plans", type=int, default=8)


def run_teacher_cache(args: argparse.Namespace) -> int:
    """For --plans plans drawn at random from the task's space, each plan's distillation (its
    own epochs, seed 0) runs twice in a row: once without the cache (the teacher at every
    step) and once with a cache that earlier plans of this run filled (as a search's later
    trials find it); whether the two students' weights are bit-identical."""
    import optuna
    import torch

    from autoshuikou.compress.distill import distill
    from autoshuikou.compress.prune import prune
    from autoshuikou.compress.teacher_cache import TeacherCache
    from autoshuikou.report.progress import Progress
    from autoshuikou.study.prepare import prepare_context
    from autoshuikou.tasks import load_task

    task = load_task(args.task)
    with tempfile.TemporaryDirectory() as tmp:
        ctx, _ = prepare_context(task, None, Path(tmp) / "run", 0, 1, 0.2, Progress())
        sampler = optuna.samplers.RandomSampler(seed=0)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        cache = TeacherCache(2**30)
        totals = {"without": 0.0, "with": 0.0}
        identical_count = plans = 0
        for number in range(args.plans):
            plan = ctx.space.suggest(study.ask())
            if plan.distill.epochs <= 0:
                continue
            pruned = prune(ctx.teacher, ctx.inputs, plan.prune, plan.round_to, ctx.family)
            seconds, weights = {}, {}
            hits_before = cache.hits
            for label, used in (("without", None), ("with", cache)):
                student = copy.deepcopy(pruned)
                started = time.perf_counter()
                distill(student, ctx.teacher, task, plan.distill, seed=0, teacher_cache=used)
                seconds[label] = time.perf_counter() - started
                totals[label] += seconds[label]
                weights[label] = list(student.state_dict().values())
            identical = all(
                torch.equal(a, b) for a, b in zip(weights["without"], weights["with"], strict=True)
            )
            plans += 1
            identical_count += identical
            print(
                json.dumps(
                    {
                        "plan": number,
                        "epochs": plan.distill.epochs,
                        "seconds_without": round(seconds["without"], 2),
                        "seconds_with": round(seconds["with"], 2),
                        "steps_cached": cache.hits - hits_before,
                        "identical_weights": identical,
                    }
                ),
                flush=True,
            )
    print()
    print(
        table(
            [
                "task",
                "plans",
                "distillation without",
                "with the cache",
                "with / without",
                "students identical",
                "cache MB",
            ],
            [
                (
                    task.name,
                    plans,
                    f"{totals['without']:.1f} s",
                    f"{totals['with']:.1f} s",
                    f"{totals['with'] / totals['without']:.2f}",
                    f"{identical_count} of {plans}",
                    round(cache.bytes / 2**20, 2),
                )
            ],
        )
    )
    return 0


COMMANDS = [
    Command(
        "side-by-side",
        "strategies side by side with `compare` (issue 5: digits, 6 strategies, 3 seeds)",
        "45 min",
        add_side_by_side,
        run_side_by_side,
    ),
    Command(
        "fidelity",
        "the default against full fidelity with `compare` (digits 5 seeds; --task, --seeds)",
        "20 min (ResNet-18 10 seeds: 75 min; bbc-minilm 3 seeds: 2 h)",
        add_fidelity,
        run_fidelity,
    ),
    Command(
        "workers",
        "trials per minute with 1 and 2 workers on one study",
        "8 min",
        add_workers,
        run_workers,
    ),
    Command(
        "timing-once",
        "a plan's untrained build timed against its trained artifact and a copy of itself",
        "3 min (digits)",
        add_timing_once,
        run_timing_once,
    ),
    Command(
        "teacher-cache",
        "distillation with and without the teacher's cached outputs, students compared",
        "2 min (digits)",
        add_teacher_cache,
        run_teacher_cache,
    ),
    Command(
        "predictor",
        "how well the accuracy predictor ranked and predicted, read from recorded studies",
        "1 min",
        add_predictor,
        run_predictor,
    ),
    Command(
        "decided-out",
        "the plans a comparison's default decided out, trained fully: would they join the front?",
        "5-20 min (a plan's fine-tuning each)",
        add_decided_out,
        run_decided_out,
    ),
    Command(
        "rungs",
        "the least time a screening study could take at the half-epoch rung (its floor)",
        "1 min",
        add_rungs,
        run_rungs,
    ),
    Command(
        "searches",
        "`autoshuikou search` run folders read as `compare` reads studies, side by side",
        "1 min",
        add_searches,
        run_searches,
    ),
]

if __name__ == "__main__":
    sys.exit(main("benchmarks/strategies.py", DESCRIPTION, COMMANDS))
