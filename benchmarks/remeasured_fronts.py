"""The final fronts of a comparison, timed again together: hypervolumes free of drift.

    python benchmarks/remeasured_fronts.py runs/compare --task digits
    python benchmarks/remeasured_fronts.py runs/cmp-resnet18 --task benchmarks/tasks.py:resnet18_digits

`autoshuikou compare` reads each study's search-time timings. Every study times its models
against the same baseline, interleaved, but studies run minutes apart, and on a shared
machine the ratio of the same int8 model to the fp32 baseline can move by tens of percent
between such runs (docs/benchmarks.md, "Timing a plan once"). This takes the final Pareto
models of every study of the comparison (the summary's front, whose files are kept) and
times them all in one measurement, taking turns against the saved baseline
(``measure_ratios``, read off at the baseline's recorded latency, as `search` re-measures
its front), then recomputes each study's final hypervolume with the same reference point
as the comparison. Prints a JSON line per study and, per strategy, the hypervolumes
before and after with one-sided Mann-Whitney U p-values between strategies.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from autoshuikou.compare.metrics import greater_p_value, hypervolume
from autoshuikou.families import to_feed
from autoshuikou.measure.latency import measure_ratios
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.tasks import load_task
from autoshuikou.util import read_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--task", default="digits", help="the comparison's --task")
    parser.add_argument("--seconds", type=float, default=0.1, help="per timing window")
    args = parser.parse_args()
    report = read_json(args.compare_dir / "compare.json")
    reference = report["hypervolume_reference"]
    ref_xy = (reference["latency_ratio"], reference["metric_retained"])
    baseline = report["baseline"]
    runtime = report["runtime"]
    settings = RuntimeSettings(threads=int(runtime["threads"]), runtime=str(runtime["runtime"]))
    example = to_feed(load_task(args.task).inputs)
    studies = [(s["strategy"], s["seed"], s["hypervolume"]) for s in report["studies"]]
    models: list[tuple[int, Path, float]] = []  # (study index, artifact, metric retained)
    with tempfile.TemporaryDirectory() as tmp:
        for index, (strategy, seed, _) in enumerate(studies):
            run = args.compare_dir / f"{strategy}-seed{seed}"
            for point in read_json(run / "summary.json")["pareto"]:
                copy = Path(tmp) / f"{index}-{point['trial']}{Path(point['path']).suffix}"
                shutil.copyfile(run / point["path"], copy)
                models.append((index, copy, float(point["metric_retained"])))
        saved = (args.compare_dir / f"{s}-seed{n}" / str(baseline["path"]) for s, n, _ in studies)
        base = next(path for path in saved if path.exists())  # one baseline, copied to each
        stats = measure_ratios(
            [path for _, path, _ in models],
            base,
            example,
            settings,
            args.seconds,
            at_reference_ms=float(baseline["latency_ms"]),
        )
    after: dict[str, list[float]] = {}
    before: dict[str, list[float]] = {}
    for index, (strategy, seed, searched) in enumerate(studies):
        points = [
            (s.ratio, retained)
            for (i, _, retained), s in zip(models, stats, strict=True)
            if i == index
        ]
        remeasured = hypervolume(points, ref_xy)
        after.setdefault(strategy, []).append(remeasured)
        before.setdefault(strategy, []).append(searched)
        print(
            json.dumps(
                {
                    "strategy": strategy,
                    "seed": seed,
                    "front_models": len(points),
                    "hypervolume_search_time": round(searched, 5),
                    "hypervolume_remeasured": round(remeasured, 5),
                }
            )
        )
    summary: dict[str, object] = {
        name: {
            "search_time": f"{statistics.mean(before[name]):.4f} ± {statistics.stdev(before[name]):.4f}",
            "remeasured": f"{statistics.mean(after[name]):.4f} ± {statistics.stdev(after[name]):.4f}",
        }
        for name in after
    }
    for a, b in itertools.permutations(after, 2):
        summary[f"p ({a} > {b})"] = {
            "search_time": greater_p_value(before[a], before[b]),
            "remeasured": greater_p_value(after[a], after[b]),
        }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
