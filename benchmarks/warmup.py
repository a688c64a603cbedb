"""What does a learning-rate warmup change? A study's plans trained again with one.

    python benchmarks/warmup.py runs/cmp21-bbc/tpe-warm-seed0 --task bbc-minilm --warmup 0.1 \
        --decided runs/cmp21-decided.log

Every plan of the study that reached the rung (``study.screening``) is pruned again and
fine-tuned with its own settings and the study's seed, but with ``--warmup`` (the share of
the steps over which the learning rate ramps up, ``DistillSettings.warmup``); it is scored
in PyTorch at the rung as the search scores it (top-1, and the validation loss against
the labels and the KL divergence from the teacher) and its deployed artifact after the
whole fine-tuning. One JSON line per plan, next to what the study recorded: its score at
the rung and its trained metric (for a plan the rung stopped: the one `decided_out.py`
printed, read from --decided). The summary compares the trained metrics with and without
the warmup and the rank correlation of the rung's scores with them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F
import yaml
from scipy.stats import spearmanr

from autoshuikou.families import call, primary
from autoshuikou.measure.accuracy import artifact_metric
from autoshuikou.plan import Plan
from autoshuikou.report.progress import Progress
from autoshuikou.study.prepare import prepare_context
from autoshuikou.study.screening import SCREEN_EPOCHS
from autoshuikou.study.storage import journal_storage
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks import Task, load_task
from autoshuikou.util import read_json


def rung_scores(model: torch.nn.Module, task: Task, teacher: torch.Tensor) -> dict[str, float]:
    """Top-1, label loss and KL from the teacher's logits ``teacher`` on the validation set."""
    model.eval()
    logits, targets = [], []
    with torch.no_grad():
        for inputs, target in task.batches("val_data"):
            logits.append(primary(call(model, inputs)))
            targets.append(target)
    student, labels = torch.cat(logits), torch.cat(targets)
    kl = F.kl_div(
        F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True, reduction="batchmean"
    )
    return {
        "top1": round(float(task.score(student, labels)), 4),
        "loss": round(float(F.cross_entropy(student, labels)), 4),
        "kl": round(float(kl), 4),
    }


def decided_metrics(log: Path | None, run: str) -> dict[int, float]:
    """The trained metrics `decided_out.py` printed for ``run``'s stopped plans."""
    if log is None:
        return {}
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return {r["trial"]: r["trained"] for r in rows if r.get("run") == run and "trial" in r}


def _spearman(rows: list[dict[str, Any]], rung: str, trained: str) -> float:
    """Rank correlation of the rung's top-1 (``rung``) with the trained metric over ``rows``."""
    scores = [r[rung]["top1"] if isinstance(r[rung], dict) else r[rung] for r in rows]
    return round(float(spearmanr(scores, [r[trained] for r in rows])[0]), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="a search run folder (holds study.journal)")
    parser.add_argument("--task", required=True)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--decided", type=Path, help="decided_out.py's output for this study")
    parser.add_argument("--limit", type=int, help="only the first N plans")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    task = load_task(args.task)
    seed = int(yaml.safe_load((args.run / "config.yaml").read_text())["seed"])
    study = optuna.load_study(study_name=None, storage=journal_storage(args.run))
    stopped = decided_metrics(args.decided, args.run.name)
    with torch.no_grad():
        teacher = torch.cat(
            [primary(call(task.model.eval(), x)) for x, _ in task.batches("val_data")]
        )
    plans = [
        t
        for t in study.trials
        if "screen_metric" in t.user_attrs and "reference" not in t.user_attrs
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "run"
        shutil.copytree(args.run / "baseline", work / "baseline")
        ctx, _ = prepare_context(task, None, work, seed, 1, 1.0, Progress(io.StringIO()))
        for t in plans[: args.limit]:
            plan = Plan.from_dict(read_json(args.run / "trials" / f"{t.number:04d}" / "plan.json"))
            warm = dataclasses.replace(
                plan, distill=dataclasses.replace(plan.distill, warmup=args.warmup)
            )
            at_rung: list[dict[str, float]] = []
            path = Path(tmp) / f"{t.number}{ctx.settings.backend.suffix}"

            def check(model: torch.nn.Module, into: list[dict[str, float]] = at_rung) -> None:
                into.append(rung_scores(model, task, teacher))

            build_artifact(ctx, warm, path, rung=(SCREEN_EPOCHS, check))
            row = {
                "trial": t.number,
                "warm_start": "warm_start" in t.user_attrs,
                "stopped": "metric" not in t.user_attrs,
                "lr": t.params.get("distill:lr"),
                "epochs": t.params.get("distill:epochs"),
                "rung_recorded": round(t.user_attrs["screen_metric"], 4),
                "trained_recorded": t.user_attrs.get("metric", stopped.get(t.number)),
                "rung": at_rung[0] if at_rung else None,
                "trained": round(artifact_metric(path, task, ctx.settings), 4),
            }
            rows.append(row)
            print(json.dumps({"run": args.run.name, **row}), flush=True)
    both = [r for r in rows if r["trained_recorded"] is not None and r["rung"] is not None]
    with contextlib.suppress(statistics.StatisticsError):
        print(
            json.dumps(
                {
                    "run": args.run.name,
                    "warmup": args.warmup,
                    "plans": len(both),
                    "trained_mean_recorded": round(
                        statistics.mean(r["trained_recorded"] for r in both), 4
                    ),
                    "trained_mean": round(statistics.mean(r["trained"] for r in both), 4),
                    "better": sum(r["trained"] > r["trained_recorded"] for r in both),
                    "worse": sum(r["trained"] < r["trained_recorded"] for r in both),
                    "spearman_rung_recorded": _spearman(both, "rung_recorded", "trained_recorded"),
                    "spearman_rung": _spearman(both, "rung", "trained"),
                }
            )
        )


if __name__ == "__main__":
    main()
