"""Where trained teachers live: trained once per machine, cached, shared by concurrent workers."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from autoshuikou.util import atomic_write_bytes, file_lock


def cache_dir() -> Path:
    return Path(os.environ.get("AUTOSHUIKOU_CACHE", Path.home() / ".cache" / "autoshuikou"))


def train_once(stem: str, recipe: str, train: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """The state dict ``train()`` produces, trained on first use and cached under a key of
    ``recipe`` and the torch version (bump the recipe when training changes); workers
    starting together wait on a lock and share the file."""
    key = hashlib.sha256(f"{recipe}-{torch.__version__}".encode()).hexdigest()[:12]
    path = cache_dir() / "teachers" / f"{stem}-{key}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_suffix(".lock")):
        if not path.exists():
            started = time.monotonic()
            print(f"training {stem} once (cached afterwards) ...", flush=True)
            buffer = io.BytesIO()
            torch.save(train().state_dict(), buffer)
            atomic_write_bytes(path, buffer.getvalue())
            print(f"trained in {time.monotonic() - started:.0f} s -> {path}", flush=True)
    state: dict[str, torch.Tensor] = torch.load(path, weights_only=True)
    return state
