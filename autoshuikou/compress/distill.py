"""Knowledge distillation: fine-tune the pruned student against the original teacher."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autoshuikou.compress.teacher_cache import TeacherCache, batch_key
from autoshuikou.families import Inputs, call, primary
from autoshuikou.plan import DistillSettings
from autoshuikou.tasks import Task, iterate_batches


@dataclass
class Rung:
    """A look at the student part-way through fine-tuning (successive halving's rung).

    After ``epochs`` of training, ``check`` is given the student in eval mode and returns
    whether training goes on. The check keeps what it saw in ``facts`` and, when it stops
    training, why in ``reason``; ``distill`` sets ``stopped``. Nothing is raised: the
    caller reads the outcome here."""

    epochs: float
    check: Callable[[nn.Module], bool]
    facts: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    stopped: bool = False


@contextmanager
def _capture(model: nn.Module, names: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named modules during forward passes."""
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(_m: nn.Module, _i: object, out: object) -> None:
            store[name] = primary(out)  # a transformer layer returns a tuple

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _projection(student_channels: int, teacher_channels: int, dims: int, axis: int) -> nn.Module:
    """A learned 1x1 map from the student's (fewer) channels to the teacher's.

    ``axis`` is where the channels are: 1 for (batch, channels, ...) feature maps, -1 for
    (batch, tokens, hidden) states, which a Linear maps on their last axis.
    """
    if axis == -1:
        return nn.Linear(student_channels, teacher_channels, bias=False)
    if dims == 4:
        return nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
    if dims == 3:
        return nn.Conv1d(student_channels, teacher_channels, 1, bias=False)
    return nn.Linear(student_channels, teacher_channels, bias=False)


def distill(
    student: nn.Module,
    teacher: nn.Module,
    task: Task,
    settings: DistillSettings,
    seed: int = 0,
    history: list[dict[str, float]] | None = None,
    epochs: float | None = None,
    device: str = "cpu",
    on_epoch: Callable[[int, int], None] = lambda _done, _total: None,
    rungs: Sequence[Rung] = (),
    teacher_cache: TeacherCache | None = None,
) -> nn.Module:
    """Fine-tune ``student`` in place for ``settings.epochs`` epochs of ``task.train_data``.

    ``epochs`` overrides that count and may be a fraction (the cosine schedule compressed
    to those steps). ``device`` is where training runs ("cpu", "cuda"); the student comes
    back on the CPU. ``history``, if given, receives each epoch's mean soft, hard and
    feature losses. ``rungs``: after each rung's ``epochs`` of the training its check sees the
    student (in eval mode) and may stop training there (``stopped``); otherwise training
    goes on unchanged, so the model is the one a run without the rungs trains. ``teacher_cache``
    supplies the teacher's outputs on batches an earlier call has seen (and keeps this
    call's): the same training, without the teacher's forward pass on those batches.
    """
    epochs = settings.epochs if epochs is None else epochs
    if epochs <= 0:
        return student.eval()
    torch.manual_seed(seed)
    # A loader built with its own generator would otherwise shuffle differently on every
    # trial (its state moves with each pass): the same plan and seed must train the same.
    generator = getattr(task.train_data, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)
    teacher.eval()
    features = [name for name, weight in settings.features.items() if weight > 0]
    projections = nn.ModuleDict()
    per_epoch = sum(1 for _ in iterate_batches(task.train_data, "train_data"))
    steps = max(1, math.ceil(epochs * per_epoch))
    at_step: dict[int, list[Rung]] = {}
    for r in sorted(rungs, key=lambda r: r.epochs):
        at_step.setdefault(math.ceil(r.epochs * per_epoch), []).append(r)
    on_device = torch.device(device)
    if on_device.type != "cpu":
        teacher = copy.deepcopy(teacher)  # the caller's teacher stays where it is
    teacher.to(on_device)
    student.to(on_device)
    temperature = settings.temperature
    family = task.family_impl
    axis = family.channel_axis

    with _capture(student, features) as s_feats, _capture(teacher, features) as t_feats:
        # One probe batch sizes the projections before the optimizer is built.
        probe = _to(next(task.batches("train_data"))[0], on_device)
        with torch.no_grad():
            call(student.eval(), probe)
            call(teacher, probe)
        for name in features:
            s, t = s_feats[name], t_feats[name]
            projections[name.replace(".", "/")] = _projection(
                s.shape[axis], t.shape[axis], s.dim(), axis
            )
        projections.to(on_device)
        params = list(student.parameters()) + list(projections.parameters())
        opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: learning_rate_factor(step, steps, settings.warmup)
        )
        student.train()
        done = 0
        passes = math.ceil(steps / per_epoch)
        while done < steps:
            on_epoch(done // per_epoch + 1, passes)
            # Summed on the device: a .item() per step would wait for the GPU every step.
            sums = {name: torch.zeros((), device=on_device) for name in ("soft", "hard", "feature")}
            batches = 0
            for inputs, targets in task.batches("train_data"):
                if done == steps:
                    break
                key = batch_key(inputs) if teacher_cache is not None else b""
                inputs, targets = _to(inputs, on_device), targets.to(on_device)
                cached = teacher_cache.get(key, features) if teacher_cache is not None else None
                if cached is None:
                    with torch.no_grad():
                        t_out = primary(call(teacher, inputs))
                    t_feat = {name: t_feats[name] for name in features}
                    if teacher_cache is not None:
                        teacher_cache.put(key, t_out, t_feat)
                else:
                    t_out, t_feat = cached
                s_out = call(student, inputs)
                soft, hard = family.distill_loss(s_out, t_out, targets, temperature)
                feature = sum(
                    (
                        settings.features[name]
                        * F.mse_loss(
                            projections[name.replace(".", "/")](s_feats[name]), t_feat[name]
                        )
                        for name in features
                    ),
                    torch.zeros((), device=on_device),
                )
                loss = settings.alpha * soft + (1 - settings.alpha) * hard + feature
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                sums["soft"] += soft.detach()
                sums["hard"] += hard.detach()
                sums["feature"] += feature.detach()
                batches += 1
                done += 1
                # A rung at or after the last step has nothing left to save.
                for rung in at_step.get(done, []) if done < steps else []:
                    # In eval mode: no randomness, no BatchNorm updates.
                    if not rung.check(student.eval()):
                        rung.stopped = True
                        return student.cpu().eval()
                    student.train()
            if history is not None:
                history.append({k: v.item() / batches for k, v in sums.items()})
    return student.cpu().eval()


def learning_rate_factor(step: int, steps: int, warmup: float) -> float:
    """The share of the peak learning rate at ``step`` of ``steps``: a cosine from 1 to 0,
    times a linear ramp over the first ``warmup`` share of the steps."""
    ramp = math.ceil(warmup * steps)
    cosine = 0.5 * (1 + math.cos(math.pi * step / steps))
    return cosine * min(1.0, (step + 1) / ramp) if ramp else cosine


def _to(inputs: Inputs, device: torch.device) -> Inputs:
    return {name: value.to(device) for name, value in inputs.items()}
