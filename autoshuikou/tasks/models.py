"""Models by name, as users have them: ``torchvision:NAME``, ``timm:NAME``, ``hf:DIR`` or a
``FILE.pt`` holding a whole module. Nothing is ever downloaded: the weights come from a file
the user names, or are random only when asked for (``--random-weights``, timing studies).

Each way in is one ``ModelSource`` registered in ``MODEL_SOURCES`` by its prefix.
"""

from __future__ import annotations

import os
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from autoshuikou.errors import UserError

# Keys under which training scripts commonly nest the state dict in a checkpoint.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
# Whole pickled modules are loaded only if every class they name comes from these packages.
TRUSTED_MODULE_PACKAGES = ("torch", "torchvision", "timm", "transformers")


@dataclass
class NamedModel:
    """A teacher made from a name: the module, its family and number of classes."""

    model: nn.Module
    family: str  # "classification" or "encoder"
    classes: int
    name: str  # short, for the default study name
    tokenizer: Any = None  # encoders: the folder's tokenizer
    needs_head: bool = False  # a bare encoder: a linear head is trained on the data first


class ModelSource(ABC):
    """One way of naming a model. Subclass it and register it in ``MODEL_SOURCES``."""

    prefix: ClassVar[str]
    needs_weights: ClassVar[bool] = True  # a name alone is an architecture, not a model

    @abstractmethod
    def load(self, ref: str, weights: Path | None, classes: int | None) -> NamedModel:
        """The model ``ref`` names, with ``weights`` (None: random, as asked); ``classes``
        is what the data holds, used where the weights do not say (random weights)."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict, or the one a checkpoint holds, loaded with ``weights_only=True``."""
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"--weights {path} cannot be read as PyTorch weights: {str(exc).splitlines()[0]}",
            "give a file written by torch.save(model.state_dict(), path) (or a checkpoint "
            "dict holding one under 'state_dict' or 'model'); pickled objects are refused",
        ) from exc
    if isinstance(loaded, dict):
        for key in CHECKPOINT_KEYS:
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not (isinstance(loaded, dict) and loaded) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise UserError(
            f"--weights {path} holds no state dict (a mapping of names to tensors)",
            "save it with torch.save(model.state_dict(), path)",
        )
    # Saved from DataParallel / DistributedDataParallel: drop the wrapper's prefix.
    if all(k.startswith("module.") for k in loaded):
        loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    state: dict[str, torch.Tensor] = loaded
    return state


def _output_classes(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[str, int]:
    """(parameter name, classes) of the classifier: the last layer whose weight the default
    architecture has, read from the weights."""
    last = ""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear | nn.Conv2d) and f"{name}.weight" in state:
            last = f"{name}.weight"
    if not last:
        raise UserError(
            "the weights have no Linear or Conv2d layer of this architecture",
            "check that --weights were saved from the model --model names",
        )
    return last, int(state[last].shape[0])


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(state)``, strictly, or one message naming the mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} in {what}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong:
            parts.append(f"shapes differ: {_few(wrong)}")
        raise UserError(
            f"the weights do not fit {what}: {'; '.join(parts)}",
            "give weights saved from this very architecture (--model names it)",
        )
    model.load_state_dict(state)


def _few(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


class _ClassifierByName(ModelSource):
    """A classification architecture built by name; the classes come from the weights."""

    @abstractmethod
    def build(self, ref: str, classes: int) -> nn.Module: ...

    def load(self, ref: str, weights: Path | None, classes: int | None) -> NamedModel:
        if weights is None:
            model = self.build(ref, classes or 1000)
            return NamedModel(model.eval(), "classification", classes or 1000, ref)
        state = read_state_dict(weights)
        with torch.device("meta"):  # only the layer names and shapes are needed here
            default = self.build(ref, 1000)
        _, found = _output_classes(default, state)
        model = self.build(ref, found)
        load_weights(model, state, f"{self.prefix}:{ref} with {found} classes")
        return NamedModel(model.eval(), "classification", found, ref)


class Torchvision(_ClassifierByName):
    prefix = "torchvision"

    def build(self, ref: str, classes: int) -> nn.Module:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if ref not in names:
            raise UserError(
                f"torchvision has no classification model {ref!r}",
                f"use one of torchvision.models.list_models(), e.g. {', '.join(names[:4])}",
            )
        model: nn.Module = torchvision.models.get_model(ref, weights=None, num_classes=classes)
        return model


class Timm(_ClassifierByName):
    prefix = "timm"

    def build(self, ref: str, classes: int) -> nn.Module:
        try:
            import timm
        except ImportError as exc:
            raise UserError("--model timm:... needs the timm package", "pip install timm") from exc
        if ref not in timm.list_models():
            raise UserError(f"timm has no model {ref!r}", "see timm.list_models()")
        model: nn.Module = timm.create_model(ref, pretrained=False, num_classes=classes)
        return model


class HuggingFace(ModelSource):
    """A local Hugging Face folder (config.json, weights, tokenizer): a sequence classifier
    as it is, or a bare encoder (e.g. a sentence-transformers model) with a linear head
    trained on the data's embeddings (``needs_head``)."""

    prefix = "hf"
    needs_weights = False  # the folder holds them

    def load(self, ref: str, weights: Path | None, classes: int | None) -> NamedModel:
        folder = Path(ref)
        if not (folder / "config.json").is_file():
            raise UserError(
                f"--model hf:{ref}: {folder} is not a Hugging Face model folder (no config.json)",
                "point at a folder written by save_pretrained (config.json, weights, tokenizer)",
            )
        if weights is not None:
            raise UserError("--weights is not used with hf:DIR", "the folder holds the weights")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import AutoConfig, AutoModel, AutoTokenizer
        except ImportError as exc:
            raise UserError(
                "--model hf:... needs the transformers package", "pip install 'autoshuikou[text]'"
            ) from exc
        from autoshuikou.families import EncoderClassifier, SequenceClassifier

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:
            raise UserError(
                f"{folder} has no tokenizer transformers can load: {str(exc).splitlines()[0]}",
                "save the tokenizer into the folder too (tokenizer.save_pretrained(folder))",
            ) from exc
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        head = any(a.endswith("ForSequenceClassification") for a in config.architectures or [])
        if head:
            from transformers import AutoModelForSequenceClassification

            inner = AutoModelForSequenceClassification.from_pretrained(
                str(folder), local_files_only=True
            )
            model: nn.Module = SequenceClassifier(inner)
            found = int(config.num_labels)
        else:
            found = classes or 2
            model = EncoderClassifier(
                AutoModel.from_pretrained(str(folder), local_files_only=True), found
            )
        return NamedModel(
            model.eval(), "encoder", found, folder.name, tokenizer, needs_head=not head
        )


class WholeModule(ModelSource):
    """``FILE.pt`` from ``torch.save(model)``: loaded only where every class it names is a
    module of torch, torchvision, timm or transformers (``weights_only`` with exactly those
    classes allowed). A pickle naming other code would run that code when loaded, and a
    TorchScript file has a frozen structure that cannot be pruned: both are refused."""

    prefix = "file"
    needs_weights = False

    def load(self, ref: str, weights: Path | None, classes: int | None) -> NamedModel:
        path = Path(ref)
        if not path.is_file():
            raise UserError(f"--model {ref}: no such file", "check the path")
        if weights is not None:
            raise UserError("--weights is not used with --model FILE.pt", "the file holds them")
        if zipfile.is_zipfile(path) and any(
            n.split("/", 2)[1:2] == ["code"] for n in zipfile.ZipFile(path).namelist()
        ):
            raise UserError(
                f"{path} is a TorchScript file: its structure is frozen, channels cannot be removed",
                "give the nn.Module instead: --model torchvision:NAME --weights FILE, or a "
                "file.py:function task that builds it",
            )
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as exc:
            raise UserError(
                f"{path} cannot be read as a file written by torch.save: {exc}",
                "save the model with torch.save(model, path), or give its state dict with "
                "--model torchvision:NAME --weights FILE",
            ) from exc
        classes_needed = [_trusted_module_class(name) for name in unsafe]
        refused = [name for name, cls in zip(unsafe, classes_needed, strict=True) if cls is None]
        if refused:
            raise UserError(
                f"{path} names code outside torch/torchvision/timm/transformers "
                f"({_few(refused)}): unpickling it would run that code",
                "save a state dict instead (torch.save(model.state_dict(), path)) and pass "
                "--model torchvision:NAME --weights FILE, or write a file.py:function task",
            )
        with torch.serialization.safe_globals([c for c in classes_needed if c is not None]):
            model = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(model, nn.Module):
            raise UserError(
                f"{path} holds a {type(model).__name__}, not a whole module",
                "a state dict goes with --model torchvision:NAME --weights FILE",
            )
        last = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        found = int(last[-1].weight.shape[0]) if last else (classes or 0)
        return NamedModel(model.eval(), "classification", found, path.stem)


def _trusted_module_class(qualified: str) -> type | None:
    """The class ``module.Name`` names, if it is an nn.Module (or a plain helper type) of a
    trusted package; else None."""
    import importlib

    module_name, _, attr = qualified.rpartition(".")
    if module_name.split(".")[0] not in TRUSTED_MODULE_PACKAGES:
        return None
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return None
    if isinstance(obj, type) and (issubclass(obj, nn.Module) or obj is torch.Size):
        return obj
    return None


MODEL_SOURCES: dict[str, ModelSource] = {
    source.prefix: source for source in (Torchvision(), Timm(), HuggingFace(), WholeModule())
}


def parse_model(spec: str) -> tuple[ModelSource, str]:
    """``torchvision:resnet50`` -> (its source, "resnet50"); a .pt/.pth path -> the file source."""
    prefix, sep, ref = spec.partition(":")
    if sep and prefix in MODEL_SOURCES and prefix != "file":
        if not ref:
            raise UserError(f"--model {spec}: nothing after ':'", f"e.g. --model {prefix}:resnet50")
        return MODEL_SOURCES[prefix], ref
    if spec.endswith((".pt", ".pth")):
        return MODEL_SOURCES["file"], spec
    raise UserError(
        f"--model {spec!r} is not a model name",
        "use torchvision:NAME or timm:NAME (with --weights FILE), hf:DIR (a local Hugging "
        "Face folder), or FILE.pt (a whole module saved with torch.save)",
    )


def load_model(
    spec: str, weights: str | Path | None, random_weights: bool, classes: int | None
) -> NamedModel:
    """The teacher ``--model`` names; weights are required unless random ones are asked for."""
    source, ref = parse_model(spec)
    path = Path(weights) if weights is not None else None
    if path is not None and random_weights:
        raise UserError("--weights and --random-weights contradict each other", "give one")
    if path is not None and not path.is_file():
        raise UserError(f"--weights {path}: no such file", "check the path")
    if source.needs_weights and path is None and not random_weights:
        raise UserError(
            f"--model {spec} needs --weights FILE: nothing is ever downloaded",
            "give the trained state dict with --weights, or --random-weights for a timing "
            "study (its metric means nothing)",
        )
    return source.load(ref, path, classes)
