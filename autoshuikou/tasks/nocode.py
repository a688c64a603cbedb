"""A Task from a model name and a data path, without code: ``--model torchvision:resnet50
--weights FILE --data imagefolder:DIR``. See ``tasks.models`` and ``tasks.data``."""

from __future__ import annotations

import re
from pathlib import Path

from autoshuikou.errors import UserError
from autoshuikou.tasks._task import Task
from autoshuikou.tasks.data import DataOptions, parse_data
from autoshuikou.tasks.models import load_model


def parse_input_size(text: str | int | None) -> tuple[int, int] | None:
    """``64`` or ``64x48`` (height x width) -> (64, 64) / (64, 48)."""
    if text is None or text == "":
        return None
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) not in (1, 2) or min(size) < 1:
        raise UserError(f"--input-size {text!r} is not N or HxW pixels", "e.g. --input-size 224")
    return (size[0], size[-1])


def nocode_task(
    model: str,
    data: str | None,
    weights: str | Path | None = None,
    random_weights: bool = False,
    input_size: str | int | None = None,
    normalize: str = "imagenet",
    max_length: int = 128,
) -> Task:
    """The teacher ``model`` names, judged on ``data``; everything read is recorded in
    ``Task.provenance`` (the run's data.json, the exported README)."""
    if data is None:
        raise UserError(
            f"--model {model} needs --data: the data to distil on and score with",
            "e.g. --data imagefolder:path/to/images (one subfolder per class) or --data texts.csv",
        )
    source, ref = parse_data(data)
    names = source.class_names(ref)
    loaded = load_model(model, weights, random_weights, len(names))
    if loaded.family != source.family:
        kind = "images" if source.family == "classification" else "text"
        raise UserError(
            f"--data {data} holds {kind}, but --model {model} is a {loaded.family} model",
            "image folders go with image classifiers, text with hf:DIR encoders",
        )
    if loaded.classes != len(names):
        raise UserError(
            f"the model has {loaded.classes} outputs but --data {data} has {len(names)} classes "
            f"({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})",
            "give weights trained on these classes, or a folder with one subfolder per output",
        )
    options = DataOptions(
        input_size=parse_input_size(input_size), normalize=normalize, max_length=max_length
    )
    loaded_data = source.load(ref, loaded, options)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{loaded.name}-{Path(ref).stem}").strip("-")
    return Task(
        model=loaded.model,
        train_data=loaded_data.train,
        val_data=loaded_data.val,
        example_input=loaded_data.example_input,
        name=name,
        family=loaded.family,
        provenance={
            "model": model,
            "weights": str(Path(weights).resolve()) if weights else None,
            "random_weights": random_weights,
            "classes": loaded.classes,
            "data": loaded_data.facts,
        },
    )
