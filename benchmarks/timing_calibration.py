"""Does the untrained build's int8 calibration change what it is timed and sized for?

    python benchmarks/timing_calibration.py --task benchmarks/tasks.py:resnet18_digits

The search times each plan on its untrained build, calibrated on
``screening.TIMING_CALIBRATION_SAMPLES`` samples instead of the study's 256: its scales
only, not its graph or kernels, should differ. For ``--plans`` plans drawn at random (those
with int8 layers), this builds the untrained artifact both ways and prints per plan whether
the graphs have the same nodes, both sizes, the build seconds, and the latency ratio
few/full timed twice with the baseline interleaved, once in each order (the second model of
a pair can time faster: the two orders bracket that effect).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import optuna

from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.report.progress import Progress
from autoshuikou.study.prepare import prepare_context
from autoshuikou.study.screening import TIMING_CALIBRATION_SAMPLES
from autoshuikou.study.trial import build_artifact
from autoshuikou.tasks import load_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--plans", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0, help="per timing")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ctx, _ = prepare_context(
            load_task(args.task), None, work / "run", 0, 1, args.seconds, Progress(io.StringIO())
        )
        few = [
            {k: v[:TIMING_CALIBRATION_SAMPLES] for k, v in f.items()} for f in ctx.calibration[:1]
        ]
        study = optuna.create_study(
            directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3)
        )
        seconds: dict[str, list[float]] = {"full": [], "few": []}
        for number in range(args.plans):
            plan = ctx.space.suggest(study.ask())
            if not plan.int8_layers:
                continue
            paths = {}
            for name, calibration in (("full", ctx.calibration), ("few", few)):
                paths[name] = work / f"{name}{number}{ctx.settings.backend.suffix}"
                started = time.monotonic()
                build_artifact(ctx, plan, paths[name], epochs=0, calibration=calibration)
                seconds[name].append(time.monotonic() - started)
            nodes = [
                [(n.op_type, n.name) for n in onnx.load(str(paths[k])).graph.node]
                for k in ("full", "few")
            ]
            base = ctx.baseline.model_path
            full_first = measure_interleaved(
                [paths["full"], paths["few"], base], ctx.example_input, ctx.settings, args.seconds
            )
            few_first = measure_interleaved(
                [paths["few"], paths["full"], base], ctx.example_input, ctx.settings, args.seconds
            )
            print(
                json.dumps(
                    {
                        "plan": number,
                        "int8_layers": len(plan.int8_layers),
                        "same_nodes": nodes[0] == nodes[1],
                        "bytes_full": paths["full"].stat().st_size,
                        "bytes_few": paths["few"].stat().st_size,
                        "few_over_full_timed_second": round(
                            full_first[1].median_ms / full_first[0].median_ms, 3
                        ),
                        "few_over_full_timed_first": round(
                            few_first[0].median_ms / few_first[1].median_ms, 3
                        ),
                    }
                ),
                flush=True,
            )
        print(
            json.dumps(
                {
                    "build_seconds_full": round(statistics.mean(seconds["full"]), 3),
                    "build_seconds_few": round(statistics.mean(seconds["few"]), 3),
                }
            )
        )


if __name__ == "__main__":
    main()
