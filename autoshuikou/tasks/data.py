"""Data by path, as users have it: ``imagefolder:DIR`` (one subfolder per class), a CSV or TSV
of text and labels, or ``textfolder:DIR`` (one subfolder of .txt files per class).

Each format is one ``DataSource`` registered in ``DATA_SOURCES`` by its prefix. Train and
validation come from ``train/`` and ``val/`` subfolders when the data has them, else from
a seeded, stratified split that is recorded (``facts``, written to the run's data.json).
"""

from __future__ import annotations

import csv
import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset

from autoshuikou.errors import UserError
from autoshuikou.tasks.models import NamedModel

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
NORMALIZATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), "none": None}
SEED = 0
VAL_FRACTION = 0.2


@dataclass(frozen=True)
class DataOptions:
    input_size: tuple[int, int] | None = None  # images: (height, width); None: the images' own
    normalize: str = "imagenet"  # "imagenet", "none", or "m,m,m/s,s,s"
    max_length: int = 128  # text: tokens per sequence
    batch_size: int = 64


@dataclass
class LoadedData:
    train: DataLoader[Any]
    val: DataLoader[Any]
    example_input: Any
    facts: dict[str, Any] = field(default_factory=dict)


class DataSource(ABC):
    """One data format. Subclass it and register it in ``DATA_SOURCES``."""

    prefix: ClassVar[str]
    family: ClassVar[str]  # the model family this data feeds

    @abstractmethod
    def class_names(self, ref: str) -> list[str]:
        """The classes, cheaply (before the model is loaded), in label order."""

    @abstractmethod
    def load(self, ref: str, model: NamedModel, options: DataOptions) -> LoadedData:
        """Train and validation batches for ``model``, and one batch-1 example."""


def split(labels: Sequence[int], names: Sequence[str]) -> tuple[list[int], list[int]]:
    """A seeded, stratified VAL_FRACTION split of sample indices: (train, val)."""
    from sklearn.model_selection import train_test_split

    counts = torch.bincount(torch.tensor(list(labels)), minlength=len(names))
    few = [names[i] for i, c in enumerate(counts.tolist()) if c < 2]
    if few:
        raise UserError(
            f"class {few[0]!r} has fewer than 2 samples: it cannot be split into train and val",
            "add samples, or give train/ and val/ subfolders yourself",
        )
    n_val = max(len(names), round(VAL_FRACTION * len(labels)))
    if len(labels) - n_val < len(names):
        raise UserError(
            f"{len(labels)} samples are too few to hold out one per class for validation",
            "add samples, or give train/ and val/ subfolders yourself",
        )
    train, val = train_test_split(
        list(range(len(labels))), test_size=n_val, random_state=SEED, stratify=list(labels)
    )
    return sorted(train), sorted(val)


def _class_dirs(root: Path, what: str) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise UserError(
            f"{what} {root} has no class subfolders",
            "put each class's files in a subfolder named after the class (root/cat/1.png, ...)",
        )
    return dirs


def _folder_splits(root: Path, what: str) -> tuple[list[str], dict[str, list[Path]] | None]:
    """(class names, {"train": dirs..., "val": ...} when the folder is pre-split)."""
    if not root.is_dir():
        raise UserError(f"{what} {root} is not a folder", "give the folder holding the classes")
    train, val = root / "train", root / "val"
    if train.is_dir() and val.is_dir():
        names = [p.name for p in _class_dirs(train, what)]
        val_names = [p.name for p in _class_dirs(val, what)]
        if names != val_names:
            raise UserError(
                f"{what} {root}: train/ has classes {names} but val/ has {val_names}",
                "give train/ and val/ the same class subfolders",
            )
        return names, {"train": [train / n for n in names], "val": [val / n for n in names]}
    return [p.name for p in _class_dirs(root, what)], None


def _files(folder: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise UserError(
            f"{what}: class folder {folder} is empty (no {'/'.join(suffixes[:3])} files)",
            "remove the folder or put its samples in it",
        )
    return files


def _normalization(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if text in NORMALIZATIONS:
        return NORMALIZATIONS[text]
    try:
        mean, std = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
    except ValueError as exc:
        raise UserError(
            f"--normalize {text!r} is not imagenet, none or MEAN/STD",
            "e.g. --normalize 0.5,0.5,0.5/0.5,0.5,0.5",
        ) from exc
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise UserError(f"--normalize {text!r}: one positive std per mean", "e.g. 0.5/0.25")
    return mean, std


class ImageTensors(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Decoded images kept as uint8 (a quarter of float32); normalized per sample."""

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
    ) -> None:
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.images[i].float() / 255.0 - self.mean) / self.std, self.labels[i]


def input_channels(model: torch.nn.Module) -> int:
    """What the first convolution takes (3 where there is none)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            return int(module.in_channels)
    return 3


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class ImageFolderData(DataSource):
    prefix = "imagefolder"
    family = "classification"

    def class_names(self, ref: str) -> list[str]:
        return _folder_splits(Path(ref), "--data imagefolder:")[0]

    def load(self, ref: str, model: NamedModel, options: DataOptions) -> LoadedData:
        from PIL import Image, UnidentifiedImageError
        from torchvision.transforms import functional as TF

        root = Path(ref)
        what = "--data imagefolder:"
        names, pre_split = _folder_splits(root, what)
        channels = input_channels(model.model)
        if channels not in (1, 3):
            raise UserError(
                f"the model's first layer takes {channels} channels; image folders give 1 or 3",
                "use a file.py:function task for other inputs",
            )
        mode = "RGB" if channels == 3 else "L"
        splits = pre_split or {"all": [root / n for n in names]}
        files: dict[str, list[tuple[Path, int]]] = {
            part: [
                (f, label) for label, d in enumerate(dirs) for f in _files(d, IMAGE_SUFFIXES, what)
            ]
            for part, dirs in splits.items()
        }
        size = options.input_size
        decoded: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for part, items in files.items():
            images = []
            for path, _ in items:
                try:
                    with Image.open(path) as image:
                        if mode == "L" and image.mode not in GRAY_MODES:
                            raise UserError(
                                f"{path} is a {image.mode} image but the model's first layer "
                                "takes 1 channel (grayscale)",
                                "convert the folder to grayscale, or use a model that takes RGB",
                            )
                        converted = image.convert(mode)
                        if size is None:
                            size = (converted.height, converted.width)
                        # Shorter side to the size (as torchvision's Resize(int)), then the centre.
                        resized = (
                            TF.resize(converted, [min(size)])
                            if size[0] == size[1]
                            else TF.resize(converted, list(size))
                        )
                        images.append(TF.pil_to_tensor(TF.center_crop(resized, list(size))))
                except (UnidentifiedImageError, OSError) as exc:
                    raise UserError(
                        f"{path} is not an image PIL can read: {exc}",
                        "remove or replace the file",
                    ) from exc
            labels = torch.tensor([label for _, label in items])
            decoded[part] = (torch.stack(images), labels)
        facts: dict[str, Any] = {
            "format": "imagefolder",
            "root": str(root.resolve()),
            "classes": names,
            "mode": mode,
            "input_size": list(size or ()),
        }
        if pre_split is None:
            everything, all_labels = decoded.pop("all")
            train, val = split(all_labels.tolist(), names)
            all_files = [str(p.relative_to(root)) for p, _ in files["all"]]
            decoded = {
                "train": (everything[train], all_labels[train]),
                "val": (everything[val], all_labels[val]),
            }
            facts["split"] = f"stratified {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%}, seed {SEED}"
            facts["val_files"] = [all_files[i] for i in val]
        else:
            facts["split"] = "the folder's train/ and val/"
        norm = _normalization(options.normalize)
        mean, std = norm or ((0.0,) * channels, (1.0,) * channels)
        if len(mean) not in (1, channels):
            raise UserError(
                f"--normalize gives {len(mean)} means for {channels}-channel images",
                f"give 1 or {channels} values before and after the '/'",
            )
        facts["normalize"] = {"name": options.normalize, "mean": list(mean), "std": list(std)}
        assert size is not None  # every class holds an image
        resize = (
            f"resize the shorter side to {size[0]} px (bilinear) and crop the centre {size[0]}x{size[0]}"
            if size[0] == size[1]
            else f"resize to {size[0]}x{size[1]} (height x width, bilinear)"
        )
        facts["preprocessing"] = (
            f"convert to {mode}, {resize}, scale to [0, 1], subtract mean and divide by std "
            "per channel (normalize)"
        )
        facts["train_samples"] = len(decoded["train"][1])
        facts["val_samples"] = len(decoded["val"][1])
        m = torch.tensor(mean).view(-1, 1, 1)
        s = torch.tensor(std).view(-1, 1, 1)
        train_set = ImageTensors(*decoded["train"], m, s)
        val_set = ImageTensors(*decoded["val"], m, s)
        return LoadedData(
            train=_loader(train_set, options.batch_size, shuffle=True),
            val=_loader(val_set, 4 * options.batch_size, shuffle=False),
            example_input=val_set[0][0].unsqueeze(0).clone(),
            facts=facts,
        )


def _loader(dataset: Dataset[Any], batch_size: int, shuffle: bool) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(SEED) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


class _TextData(DataSource):
    """Texts and labels, tokenized by the model folder's tokenizer."""

    family = "encoder"

    @abstractmethod
    def read(self, ref: str) -> tuple[list[str], list[str], dict[str, list[int]] | None]:
        """(texts, label names, {"train": indices, "val": indices} when pre-split)."""

    def class_names(self, ref: str) -> list[str]:
        return _label_order(self.read(ref)[1])

    def load(self, ref: str, model: NamedModel, options: DataOptions) -> LoadedData:
        from autoshuikou.tasks.bbc_minilm import TokenizedDocs

        if model.tokenizer is None:
            raise UserError(
                f"--data {self.prefix}:{ref} is text; the model has no tokenizer",
                "text data goes with --model hf:DIR (a Hugging Face folder with its tokenizer)",
            )
        texts, raw_labels, pre_split = self.read(ref)
        names = _label_order(raw_labels)
        labels = torch.tensor([names.index(label) for label in raw_labels])
        tokens = model.tokenizer(
            texts,
            max_length=options.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = tokens["input_ids"].long(), tokens["attention_mask"].long()
        facts: dict[str, Any] = {
            "format": self.prefix,
            "source": str(Path(ref).resolve()),
            "classes": names,
            "max_length": options.max_length,
            "tokenizer": type(model.tokenizer).__name__,
            "preprocessing": f"tokenize with the model folder's tokenizer, pad and truncate to "
            f"{options.max_length} tokens; inputs input_ids and attention_mask (int64)",
        }
        if pre_split is None:
            train, val = split(labels.tolist(), names)
            facts["split"] = f"stratified {1 - VAL_FRACTION:.0%}/{VAL_FRACTION:.0%}, seed {SEED}"
            facts["val_rows"] = val
        else:
            train, val = pre_split["train"], pre_split["val"]
            facts["split"] = "the data's own train/ and val/"
        facts["train_samples"], facts["val_samples"] = len(train), len(val)
        t, v = torch.tensor(train), torch.tensor(val)
        if model.needs_head:
            fit_head(model, ids[t], mask[t], labels[t], texts, raw_labels)
            facts["head"] = (
                "linear head trained once on the frozen encoder's mean-pooled embeddings"
            )
        batch = max(1, options.batch_size // 4)
        return LoadedData(
            train=_loader(TokenizedDocs(ids[t], mask[t], labels[t]), batch, shuffle=True),
            val=_loader(TokenizedDocs(ids[v], mask[v], labels[v]), 4 * batch, shuffle=False),
            example_input=(ids[v[:1]].clone(), mask[v[:1]].clone()),
            facts=facts,
        )


def fit_head(
    model: NamedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    texts: list[str],
    raw_labels: list[str],
) -> None:
    """Train a bare encoder's linear head once per encoder and data (cached)."""
    from autoshuikou.families import EncoderClassifier
    from autoshuikou.tasks._cache import train_once
    from autoshuikou.tasks.bbc_minilm import RECIPE, train_head

    classifier = model.model
    assert isinstance(classifier, EncoderClassifier)
    digest = hashlib.sha256()
    for name, tensor in classifier.backbone.state_dict().items():
        digest.update(name.encode())
        # A prefix of each tensor tells encoders apart without copying all of them.
        digest.update(tensor.detach().flatten()[:1024].cpu().numpy().tobytes())
    digest.update(repr((texts, raw_labels, ids.shape)).encode())

    def train() -> torch.nn.Module:
        train_head(classifier, ids, mask, labels)
        return classifier.head

    state = train_once(f"head-{model.name}", f"{RECIPE}-{digest.hexdigest()}", train)
    classifier.head.load_state_dict(state)


def _label_order(labels: Sequence[str]) -> list[str]:
    """Class names in label order: numerically when every label is an integer."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


class TextTable(_TextData):
    """A CSV or TSV with a header naming a ``text`` and a ``label`` column."""

    prefix = "csv"

    def read(self, ref: str) -> tuple[list[str], list[str], dict[str, list[int]] | None]:
        path = Path(ref)
        if not path.is_file():
            raise UserError(f"--data {ref}: no such file", "check the path")
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            if "text" not in columns or "label" not in columns:
                raise UserError(
                    f"--data {ref}: the header has columns {list(columns)}, not text and label",
                    "name the columns text and label in the first row",
                )
            texts, labels = [], []
            for row in reader:
                text, label = row[columns["text"]], row[columns["label"]]
                if text is None or label is None or not label.strip():
                    raise UserError(
                        f"--data {ref}: row {reader.line_num} lacks a text or a label",
                        "give every row both",
                    )
                texts.append(text)
                labels.append(label.strip())
        if len(set(labels)) < 2:
            raise UserError(
                f"--data {ref} has {len(set(labels))} label(s)", "give 2 or more classes"
            )
        return texts, labels, None


class TextFolderData(_TextData):
    """One subfolder of .txt files per class (``train/`` and ``val/`` if present)."""

    prefix = "textfolder"

    def class_names(self, ref: str) -> list[str]:
        return _folder_splits(Path(ref), "--data textfolder:")[0]

    def read(self, ref: str) -> tuple[list[str], list[str], dict[str, list[int]] | None]:
        names, pre_split = _folder_splits(Path(ref), "--data textfolder:")
        parts = pre_split or {"all": [Path(ref) / n for n in names]}
        texts: list[str] = []
        labels: list[str] = []
        index: dict[str, list[int]] = {}
        for part, dirs in parts.items():
            start = len(texts)
            for name, folder in zip(names, dirs, strict=True):
                for path in _files(folder, (".txt",), "--data textfolder:"):
                    texts.append(path.read_text(encoding="utf-8", errors="replace"))
                    labels.append(name)
            index[part] = list(range(start, len(texts)))
        return texts, labels, (index if pre_split else None)


DATA_SOURCES: dict[str, DataSource] = {
    "imagefolder": ImageFolderData(),
    "csv": TextTable(),
    "tsv": TextTable(),
    "textfolder": TextFolderData(),
}


def parse_data(spec: str) -> tuple[DataSource, str]:
    prefix, sep, ref = spec.partition(":")
    if sep and prefix in DATA_SOURCES and ref:
        return DATA_SOURCES[prefix], ref
    if spec.lower().endswith((".csv", ".tsv")):
        return DATA_SOURCES["csv"], spec
    raise UserError(
        f"--data {spec!r} is not a data path",
        "use imagefolder:DIR (a subfolder per class), FILE.csv / FILE.tsv (text and label "
        "columns) or textfolder:DIR (a subfolder of .txt files per class)",
    )
