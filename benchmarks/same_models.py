"""Build fixed plans on the digits task and print each model file's SHA-256 (same API before/after)."""

import hashlib
import tempfile
from pathlib import Path

from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import channel_groups, prune
from autoshuikou.compress.quantize import Int8Format, calibration_batches
from autoshuikou.plan import DistillSettings
from autoshuikou.runtimes.onnxruntime import OnnxRuntime
from autoshuikou.study.prepare import layer_names
from autoshuikou.tasks import load_task

task = load_task("digits")
ex = task.example_input
groups = channel_groups(task.model, ex)
layers = layer_names(task)
cal = calibration_batches(task.train_data)
plans = [
    (
        {g.name: 0.5 for g in groups},
        [],
        DistillSettings(epochs=1, lr=3e-3, temperature=4.0, alpha=0.7),
        8,
    ),
    (
        {g.name: 0.25 for g in groups},
        layers[:-1],
        DistillSettings(epochs=1, lr=1e-3, temperature=2.0, alpha=0.9, features={"layer3": 0.5}),
        4,
    ),
    ({}, layers, DistillSettings(), 1),
]
for fmt in (Int8Format("QDQ", "u8", True), Int8Format("QOperator", "s8", False)):
    for i, (ratios, int8, ds, rt) in enumerate(plans):
        student = prune(task.model, ex, ratios, rt)
        distill(student, task.model, task, ds, seed=0)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "m.onnx"
            OnnxRuntime().build(student, ex, int8, cal, fmt, out)
            print(fmt.name, i, hashlib.sha256(out.read_bytes()).hexdigest()[:16], flush=True)
