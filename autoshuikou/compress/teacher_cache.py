"""The teacher's outputs on training batches, kept across a study's trials.

Every trial fine-tunes against the same fixed teacher, on the same batches: the loader is
reseeded with the study's seed before each fine-tuning, so trial after trial sees the same
batches in the same order. The teacher's forward pass, a third or more of a training step
for a pruned student, therefore only has to run the first time a batch is seen. Batches are
keyed by their content (a hash of the input bytes), so a cached output is exactly the one
the teacher would compute: a batch that differs (another seed, random augmentation drawn
differently) misses and runs the teacher as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch

from autoshuikou.families import Inputs

DEFAULT_MEGABYTES = 1024  # --teacher-cache-mb: logits of a classifier take a few KiB a batch


def batch_key(inputs: Inputs) -> bytes:
    """A digest of the batch's names, dtypes, shapes and bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in inputs.items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.digest()


def _nbytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class TeacherCache:
    """The teacher's primary output and recorded features per batch, up to ``max_bytes``
    (once full, further batches are computed, not stored). Tensors stay on the device they
    were computed on."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0  # lookups answered from the cache
        self._entries: dict[bytes, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    def get(
        self, key: bytes, features: Iterable[str]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        """(output, {feature: tensor}) for the batch, or None if it (or a feature) is missing."""
        entry = self._entries.get(key)
        if entry is None or any(name not in entry[1] for name in features):
            return None
        self.hits += 1
        return entry

    def put(self, key: bytes, output: torch.Tensor, features: dict[str, torch.Tensor]) -> None:
        old = self._entries.get(key)
        merged = {**(old[1] if old else {}), **features}
        new_bytes = _nbytes([output, *merged.values()])
        old_bytes = _nbytes([old[0], *old[1].values()]) if old else 0
        if self.bytes - old_bytes + new_bytes > self.max_bytes:
            return
        self._entries[key] = (output.detach(), {k: v.detach() for k, v in merged.items()})
        self.bytes += new_bytes - old_bytes

    def __len__(self) -> int:
        return len(self._entries)
