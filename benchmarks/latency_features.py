"""Benchmark: which latency-model features predict unseen plans best (offline analysis).

    python benchmarks/latency_features.py --collect runs/lm-resnet18.json [--probes 105] [--tests 30]
    python benchmarks/latency_features.py --analyse runs/lm-resnet18.json [--fit-probes 105]

--collect times random plans of a task (default: ResNet-18 at 64x64) once: probes as the
profiler times them (0.5 s), unseen plans as a trial (1 s) and as the final re-measurement
(median of 5-15 windows); it saves each plan's layer MACs and output sizes. --analyse fits
every candidate on the probes and scores it on the unseen plans against both truths, so
feature ideas can be compared on the same labels without timing anything again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, WhiteKernel

sys.path.insert(0, str(Path(__file__).parent))  # so "benchmarks/tasks.py:..." imports

from autoshuikou.compress.prune import prune, trace_layers
from autoshuikou.measure.latency import measure_interleaved, measure_ratio
from autoshuikou.measure.latency_model import (
    _fit,
    absolute_percentage_errors,
    features,
    fit_latency_model,
    layer_macs,
)
from autoshuikou.plan import Plan
from autoshuikou.report.progress import Progress
from autoshuikou.study.prepare import prepare_context
from autoshuikou.study.profile import PROBE_SECONDS, probe_plans
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks import load_task

Row = dict[str, Any]


def output_sizes(model: torch.nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Elements of each Conv/Linear layer's output."""
    sizes: dict[str, int] = {}
    trace_layers(model, x, lambda name, _m, out: sizes.__setitem__(name, int(out.numel())))
    return sizes


def collect(task_name: str, probes: int, tests: int, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ctx, _ = prepare_context(
            load_task(task_name), None, Path(tmp) / "run", 0, 1, 1.0, Progress()
        )
        x = ctx.task.example_input
        rows: list[Row] = []
        for split, plans in (
            ("probe", probe_plans(ctx, probes, 0)),
            ("test", ctx.space.random_plans(tests, 12345)),
        ):
            for plan in plans:
                student = prune(ctx.teacher, x, plan.prune, plan.round_to)
                outputs = output_sizes(student, x)
                path = Path(tmp) / f"plan{ctx.settings.backend.suffix}"
                build_artifact(ctx, plan.without_training(), path)
                base = ctx.baseline.model_path
                seconds = PROBE_SECONDS if split == "probe" else 1.0
                c, r = measure_interleaved([path, base], ctx.example_input, ctx.settings, seconds)
                row: Row = {
                    "split": split,
                    "plan": plan.without_training().to_dict(),
                    "macs": layer_macs(student, x),
                    "outputs": outputs,
                    "ratio": c.median_ms / r.median_ms,
                }
                if split == "test":
                    row["windows"] = measure_ratio(
                        path, base, ctx.example_input, ctx.settings
                    ).ratio
                rows.append(row)
                print(f"{split} {len(rows)}: ratio {row['ratio']:.3f}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"task": task_name, "layers": list(ctx.space.precision), "rows": rows})
        )


def analyse(path: Path, fit_probes: int | None = None) -> None:
    data = json.loads(path.read_text())
    layers: list[str] = data["layers"]
    probes = [r for r in data["rows"] if r["split"] == "probe"][:fit_probes]
    tests = [r for r in data["rows"] if r["split"] == "test"]
    plan = {id(r): Plan.from_dict(r["plan"]) for r in data["rows"]}

    def product(kind: str) -> Callable[[Row], list[float]]:
        return lambda r: list(features(kind, layers, r["macs"], plan[id(r)]))

    def with_outputs(r: Row) -> list[float]:
        return (
            product("per_layer")(r)[:-2]
            + [r["outputs"].get(la, 0) / 1e5 for la in layers]
            + product("per_layer")(r)[-2:]
        )

    chosen = fit_latency_model(
        layers,
        [r["macs"] for r in probes],
        [plan[id(r)] for r in probes],
        [r["ratio"] for r in probes],
    )
    print(
        f"{data['task']}: {len(probes)} probes, {len(tests)} unseen plans; the product picks "
        f"{chosen.kind} (cross-validated {chosen.holdout_mape:.1%} / {chosen.holdout_p90:.1%})"
    )
    truths = {k: np.array([r[k] for r in tests]) for k in ("ratio", "windows")}
    err = absolute_percentage_errors(truths["ratio"], truths["windows"])
    print(
        f"the two truths disagree: median {np.median(err):.1%}, 90th percentile {np.percentile(err, 90):.1%}"
    )

    def report(name: str, predicted: np.ndarray) -> None:
        parts = []
        for label, truth in truths.items():
            e = absolute_percentage_errors(predicted, truth)
            parts.append(f"{label}: {np.median(e):.1%} / {np.percentile(e, 90):.1%}")
        print(f"  {name:<34} " + "  ".join(parts))

    report(
        f"the product's choice ({chosen.kind})",
        np.array([chosen.predict_ratio(r["macs"], plan[id(r)]) for r in tests]),
    )
    y = np.array([r["ratio"] for r in probes])
    for name, feats in (
        ("global", product("global")),
        ("per_layer", product("per_layer")),
        ("per_layer + output size per layer", with_outputs),
        ("per_layer_int8", product("per_layer_int8")),
    ):
        coef = _fit(np.array([feats(r) for r in probes]), y)  # the profiler's own NNLS fit
        report(name, np.array([feats(r) for r in tests]) @ coef)
    x = np.array([product("per_layer_int8")(r) for r in probes])
    xt = np.array([product("per_layer_int8")(r) for r in tests])
    kernel = (
        ConstantKernel() * DotProduct()
        + ConstantKernel() * RBF(np.ones(x.shape[1]))
        + WhiteKernel()
    )
    warnings.filterwarnings("ignore")
    for name, model in (
        (
            "GP on per_layer_int8 features",
            GaussianProcessRegressor(kernel, normalize_y=True, random_state=0),
        ),
        ("random forest", RandomForestRegressor(300, random_state=0)),
        ("extra trees", ExtraTreesRegressor(300, random_state=0)),
        ("gradient boosting", GradientBoostingRegressor(random_state=0)),
    ):
        report(name, model.fit(x, y).predict(xt))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--collect", type=Path)
    parser.add_argument("--analyse", type=Path)
    parser.add_argument("--task", default="benchmarks/tasks.py:resnet18_64")
    parser.add_argument("--probes", type=int, default=105)
    parser.add_argument("--tests", type=int, default=30)
    parser.add_argument(
        "--fit-probes", type=int, default=None, help="fit on the first N probes only"
    )
    args = parser.parse_args()
    if args.collect:
        collect(args.task, args.probes, args.tests, args.collect)
        analyse(args.collect, args.fit_probes)
    elif args.analyse:
        analyse(args.analyse, args.fit_probes)
    else:
        parser.error("give --collect FILE or --analyse FILE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
