import copy

import pytest
import torch

from autoshuikou.compress.distill import Rung, distill, learning_rate_factor
from autoshuikou.compress.prune import prune
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.plan import DistillSettings
from autoshuikou.tasks import Task


def test_distillation_recovers_a_heavily_pruned_student(tiny_task: Task) -> None:
    teacher = tiny_task.model
    pruned = prune(teacher, tiny_task.example_input, {"stem.0": 0.75, "conv1": 0.75}, round_to=1)
    before = torch_metric(copy.deepcopy(pruned), tiny_task)
    student = distill(
        pruned, teacher, tiny_task, DistillSettings(epochs=6, lr=0.01, temperature=2.0, alpha=0.5)
    )
    after = torch_metric(student, tiny_task)
    assert after > before
    assert after >= 0.9 * torch_metric(teacher, tiny_task)


def test_zero_epochs_leaves_the_student_alone(tiny_task: Task) -> None:
    pruned = prune(tiny_task.model, tiny_task.example_input, {"conv1": 0.5}, round_to=1)
    weights = copy.deepcopy(pruned.state_dict())
    distill(pruned, tiny_task.model, tiny_task, DistillSettings(epochs=0))
    assert all(torch.equal(weights[k], v) for k, v in pruned.state_dict().items())


def test_feature_distillation_pulls_features_toward_the_teacher(tiny_task: Task) -> None:
    teacher = tiny_task.model
    pruned = prune(teacher, tiny_task.example_input, {"stem.0": 0.5, "conv1": 0.75}, round_to=1)
    history: list[dict[str, float]] = []
    settings = DistillSettings(epochs=5, lr=0.01, alpha=1.0, features={"conv2": 5.0})
    distill(pruned, teacher, tiny_task, settings, history=history)
    assert len(history) == 5
    # The learned projection maps the student's 8 channels onto the teacher's 16.
    assert history[-1]["feature"] < 0.5 * history[0]["feature"]
    history_off: list[dict[str, float]] = []
    distill(
        prune(teacher, tiny_task.example_input, {"conv1": 0.75}, round_to=1),
        teacher,
        tiny_task,
        DistillSettings(epochs=1, features={"conv2": 0.0}),
        history=history_off,
    )
    assert history_off[0]["feature"] == 0.0  # weight 0 means off


def test_the_same_plan_and_seed_train_the_same_whatever_ran_before(tiny_task: Task) -> None:
    # A shuffling loader with its own generator, as the digits task has.
    dataset = tiny_task.train_data.dataset
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=True, generator=generator)
    task = copy.copy(tiny_task)
    task.train_data = loader
    settings = DistillSettings(epochs=1, lr=1e-2)

    def train() -> list[torch.Tensor]:
        student = prune(tiny_task.model, tiny_task.example_input, {"conv1": 0.5}, round_to=1)
        distill(student, tiny_task.model, task, settings, seed=3)
        return [p.detach().clone() for p in student.parameters()]

    first = train()
    for _ in loader:  # another trial, calibration, ... moved the loader's generator on
        pass
    second = train()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_warmup_ramps_the_learning_rate_up_from_a_small_first_step(tiny_task: Task) -> None:
    # 8 batches an epoch, 2 epochs: 16 steps; warmup 0.5 ramps over the first 8 of them.
    assert learning_rate_factor(0, 16, 0.0) == 1.0
    assert learning_rate_factor(0, 16, 0.5) == pytest.approx(1 / 8)
    assert learning_rate_factor(7, 16, 0.5) == pytest.approx(learning_rate_factor(7, 16, 0.0))

    def first_step(warmup: float) -> float:
        """The largest weight change of the student's first optimizer step."""
        student = prune(tiny_task.model, tiny_task.example_input, {"conv1": 0.5}, round_to=1)
        before = {k: p.detach().clone() for k, p in student.named_parameters()}
        changes: list[float] = []

        def check(model: torch.nn.Module) -> bool:
            after = dict(model.named_parameters())
            changes.append(max(float((after[k] - v).abs().max()) for k, v in before.items()))
            return True

        settings = DistillSettings(epochs=2, lr=1e-2, warmup=warmup)
        distill(student, tiny_task.model, tiny_task, settings, rungs=[Rung(1 / 8, check)])
        return changes[0]

    # Adam's first step moves each weight by about the learning rate: an eighth of it here.
    assert first_step(0.5) < 0.2 * first_step(0.0)
