import copy

import pytest
import torch
import torchvision

from autoshuikou.compress.prune import (
    channel_groups,
    count_macs_params,
    kept_channels,
    label_gradients,
    output_layer,
    prune,
)
from autoshuikou.families import call
from autoshuikou.tasks import Task


def test_residual_channels_form_one_group(tiny_task: Task) -> None:
    groups = {g.name: g for g in channel_groups(tiny_task.model, tiny_task.example_input)}
    # stem.0 and conv2 feed the same residual add: DepGraph couples them.
    assert set(groups["stem.0"].layers) == {"stem.0", "conv2"}
    assert groups["conv1"].layers == ("conv1",)
    # The classifier's outputs are the model's outputs: never a prunable group.
    assert not any("head" in g.layers for g in groups.values())
    assert output_layer(tiny_task.model, tiny_task.example_input) == "head"


def test_pruning_removes_channels_for_real(tiny_task: Task) -> None:
    model, x = tiny_task.model, tiny_task.example_input
    student = prune(model, x, {"stem.0": 0.5, "conv1": 0.75}, round_to=1)
    assert student.stem[0].out_channels == 8 and student.conv2.out_channels == 8
    assert student.conv1.out_channels == 8 and student.conv2.in_channels == 8
    assert student.head.out_features == 4 and student(x).shape == (1, 4)
    macs, params = count_macs_params(model, x)
    s_macs, s_params = count_macs_params(student, x)
    assert s_macs < macs / 2 and s_params < params / 2
    # The teacher itself is untouched.
    assert model.conv1.out_channels == 32


def test_pruning_keeps_the_strongest_channels(tiny_task: Task) -> None:
    model, x = tiny_task.model, tiny_task.example_input
    with torch.no_grad():
        model.conv1.weight[5:].mul_(1e-3)  # channels 5.. become weak
    student = prune(model, x, {"conv1": 0.75}, round_to=1)
    kept = student.conv1.weight.detach()
    assert torch.allclose(kept[:5], model.conv1.weight[:5])


def test_taylor_importance_keeps_the_channels_the_loss_needs(tiny_task: Task) -> None:
    model, x = tiny_task.model, tiny_task.example_input
    # The loss needs conv1's channels 20-27 only, and they are its smallest: magnitude and
    # Taylor (|weight x gradient|) disagree.
    grads = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    grads["conv1.weight"][20:28] = 1.0
    with torch.no_grad():
        model.conv1.weight[20:28].mul_(1e-2)
    by_size = prune(model, x, {"conv1": 0.75}, round_to=1)
    by_taylor = prune(model, x, {"conv1": 0.75}, round_to=1, gradients=grads)
    assert torch.equal(by_taylor.conv1.weight, model.conv1.weight[20:28])
    assert not torch.equal(by_size.conv1.weight, model.conv1.weight[20:28])
    assert by_size.conv1.out_channels == by_taylor.conv1.out_channels == 8
    assert all(p.grad is None for p in by_taylor.parameters())  # nothing left behind


def test_label_gradients_are_the_loss_gradients_and_leave_the_model_alone(
    tiny_task: Task,
) -> None:
    model = tiny_task.model
    batches = list(tiny_task.batches("train_data"))[:2]
    before = {
        name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()
    }
    grads = label_gradients(model, batches, tiny_task.family_impl)
    assert set(grads) == {name for name, _ in model.named_parameters()}
    assert grads["conv1.weight"].abs().sum() > 0
    for name, param in model.named_parameters():  # the model's own .grad is as it was
        kept = before[name]
        assert (param.grad is None) if kept is None else torch.equal(param.grad, kept)
    # The sum over the batches of the cross-entropy's gradients, as autograd gives them.
    reference = copy.deepcopy(model).eval()
    for inputs, targets in batches:
        torch.nn.functional.cross_entropy(call(reference, inputs), targets).backward()
    assert reference.conv1.weight.grad is not None
    assert torch.allclose(grads["conv1.weight"], reference.conv1.weight.grad, atol=1e-6)


@pytest.mark.parametrize(
    ("channels", "ratio", "round_to", "kept"),
    [
        (64, 0.5, 8, 32),
        (64, 0.3, 8, 48),
        (64, 0.95, 8, 8),
        (32, 0.0, 8, 32),
        (40, 0.0, 16, 40),  # not pruned: never rounded down
        (6, 0.5, 8, 3),
        (10, 0.5, 1, 5),
    ],
)
def test_kept_channels_round_to_multiples(
    channels: int, ratio: float, round_to: int, kept: int
) -> None:
    assert kept_channels(channels, ratio, round_to) == kept


def test_depthwise_architecture_prunes_and_runs() -> None:
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    groups = channel_groups(model, x)
    # Depthwise convolutions ride along with the expansion conv that feeds them.
    assert any(len(g.layers) >= 2 for g in groups)
    student = prune(model, x, {g.name: 0.5 for g in groups}, round_to=8)
    assert student(x).shape == (1, 10)
    assert count_macs_params(student, x)[0] < count_macs_params(model, x)[0] * 0.5
