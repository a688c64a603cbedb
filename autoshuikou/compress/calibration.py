"""Calibration inputs for int8: the first training inputs, the same in every run and worker.

Every runtime's static int8 build calibrates its activation scales on these.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from autoshuikou.families import Classification, Feed, ModelFamily, to_feed

CALIBRATION_SAMPLES = 256


def calibration_batches(
    batches: Iterable[tuple[Any, torch.Tensor]],
    samples: int = CALIBRATION_SAMPLES,
    family: ModelFamily | None = None,
) -> list[Feed]:
    """The first ``samples`` training inputs, as the runtime's feeds (named numpy arrays).

    A shuffling loader is reseeded first (its own generator, or the global one), so every
    run and worker calibrates on the same inputs and builds the same int8 model.
    """
    family = family or Classification()
    generator = getattr(batches, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(0)
    else:
        torch.manual_seed(0)
    out: list[Feed] = []
    seen = 0
    for raw, _ in batches:
        inputs = family.named_inputs(raw)
        feed = to_feed({name: t[: samples - seen] for name, t in inputs.items()})
        out.append(feed)
        seen += len(next(iter(feed.values())))
        if seen >= samples:
            break
    return out
