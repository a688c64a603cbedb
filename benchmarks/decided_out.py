"""What did screening's "no" cost? Train the plans a search decided out, and see.

    python benchmarks/decided_out.py runs/cmp17-resnet18 --task benchmarks/tasks.py:resnet18_digits
    python benchmarks/decided_out.py runs/cmp15-bbc --task bbc-minilm

The default search does not train a plan fully when a trained trial at least as fast and
small beats it: beats its predicted metric (``study.predictor``) or its score at the
half-epoch rung (``study.screening``). For every study of --strategy in a folder written
by `autoshuikou compare`, this trains each plan decided out that way, fully, as the
search would have (the plan's own settings, the study's seed and int8 format,
its saved baseline), scores the deployed artifact, and adds it to the study's front at its
untrained timing (the latency the search would have kept). It prints a JSON line per
study: the plans, how many would have joined the front, and the study's final hypervolume
without and with them (compare's reference point). The sampler would have gone on
differently after a trained plan; this measures the decisions, not that path.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import tempfile
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--task", default="digits", help="the comparison's --task")
    parser.add_argument("--strategy", default="tpe-warm")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task(args.task)
    before, after = [], []
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
        print(
            json.dumps(
                {
                    "studies": len(before),
                    "hypervolume_mean": round(statistics.mean(before), 5),
                    "with_them_mean": round(statistics.mean(after), 5),
                }
            )
        )


if __name__ == "__main__":
    main()
