"""The teacher cache: later trials skip the teacher's forward pass and train exactly alike."""

import copy

import torch
from torch import nn

from autoshuikou.compress.distill import distill
from autoshuikou.compress.prune import prune
from autoshuikou.compress.teacher_cache import TeacherCache, batch_key
from autoshuikou.plan import DistillSettings
from autoshuikou.tasks import Task


def _shuffled(tiny_task: Task) -> Task:
    """The tiny task with a shuffling loader of its own generator, as the digits task has."""
    generator = torch.Generator().manual_seed(0)
    task = copy.copy(tiny_task)
    task.train_data = torch.utils.data.DataLoader(
        tiny_task.train_data.dataset, batch_size=32, shuffle=True, generator=generator
    )
    return task


def _train(
    task: Task,
    ratios: dict[str, float],
    settings: DistillSettings,
    cache: TeacherCache | None,
    teacher_calls: list[int] | None = None,
) -> nn.Module:
    """Prune and distill; ``teacher_calls`` receives the number of teacher forward passes."""
    student = prune(task.model, task.example_input, ratios, round_to=1)
    calls = [0]

    def count(*_: object) -> None:
        calls[0] += 1

    handle = task.model.register_forward_hook(count)  # after pruning, which copies the model
    try:
        return distill(student, task.model, task, settings, seed=3, teacher_cache=cache)
    finally:
        handle.remove()
        if teacher_calls is not None:
            teacher_calls.extend(calls)


def test_a_later_plan_skips_the_teacher_and_trains_exactly_as_without_the_cache(
    tiny_task: Task,
) -> None:
    task = _shuffled(tiny_task)
    settings = DistillSettings(epochs=2, lr=1e-2, alpha=0.5, features={"conv2": 1.0})
    uncached = _train(task, {"conv1": 0.5}, settings, None)

    cache = TeacherCache(max_bytes=2**30)
    _train(task, {"stem.0": 0.5, "conv1": 0.25}, settings, cache)  # an earlier trial
    assert cache.hits == 0 and len(cache) > 0
    calls: list[int] = []
    cached = _train(task, {"conv1": 0.5}, settings, cache, calls)
    steps = 2 * len(task.train_data)
    assert cache.hits == steps
    assert calls == [1]  # only the probe that sizes the feature projections
    for a, b in zip(uncached.state_dict().values(), cached.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_feature_the_cache_lacks_runs_the_teacher_again(tiny_task: Task) -> None:
    task = _shuffled(tiny_task)
    cache = TeacherCache(max_bytes=2**30)
    _train(task, {"conv1": 0.5}, DistillSettings(epochs=1), cache)
    calls: list[int] = []
    settings = DistillSettings(epochs=1, features={"conv2": 1.0})
    _train(task, {"conv1": 0.5}, settings, cache, calls)
    assert cache.hits == 0
    assert calls == [1 + len(task.train_data)]  # the probe, then every batch


def test_the_cache_stops_storing_at_its_size(tiny_task: Task) -> None:
    task = _shuffled(tiny_task)
    inputs, _ = next(task.batches("train_data"))
    with torch.no_grad():
        one_batch = task.model(*inputs.values()).numel() * 4
    cache = TeacherCache(max_bytes=2 * one_batch)
    _train(task, {"conv1": 0.5}, DistillSettings(epochs=1), cache)
    assert len(cache) == 2 and cache.bytes <= cache.max_bytes
    _train(task, {"conv1": 0.5}, DistillSettings(epochs=1), cache)
    assert cache.hits == 2


def test_batches_differing_in_one_value_have_different_keys() -> None:
    a = {"x": torch.zeros(2, 3)}
    b = {"x": torch.zeros(2, 3)}
    assert batch_key(a) == batch_key(b)
    b["x"][1, 2] = 1e-7
    assert batch_key(a) != batch_key(b)
    assert batch_key({"x": torch.zeros(3, 2)}) != batch_key(a)  # same bytes, other shape
