"""Structured pruning: remove whole channels with Torch-Pruning's dependency graph.

DepGraph finds which layers' channels are coupled (residual adds, concatenations,
depthwise convolutions, BatchNorm), so one decision per *group* keeps the network valid.
Groups are named by their first layer; the classifier's outputs are never pruned.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

PRUNABLE_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together; ``name`` is the first layer in the group."""

    name: str
    layers: tuple[str, ...]  # every layer whose output channels shrink with this group
    channels: int


def trace_layers(
    model: nn.Module,
    example_input: torch.Tensor,
    visit: Callable[[str, nn.Module, torch.Tensor], None],
) -> None:
    """Run one forward pass, calling ``visit(name, layer, output)`` for each Conv/Linear run."""
    names = {module: name for name, module in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, _i, out: visit(names[mod], mod, out))
        for m in model.modules()
        if isinstance(m, PRUNABLE_TYPES)
    ]
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for hook in hooks:
            hook.remove()


def execution_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of the Conv/Linear layers in the order a forward pass runs them."""
    order: list[str] = []
    trace_layers(model, example_input, lambda name, _m, _o: order.append(name))
    return order


def output_layer(model: nn.Module, example_input: torch.Tensor) -> str:
    """The layer that produces the model's output: the last Conv/Linear to run."""
    order = execution_order(model, example_input)
    if not order:
        raise ValueError("the model has no Conv or Linear layer to compress")
    return order[-1]


def _dependency_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    model.eval()
    return tp.DependencyGraph().build_dependency(model, example_inputs=example_input)


def _groups(model: nn.Module, graph: tp.DependencyGraph, example_input: torch.Tensor):  # type: ignore[no-untyped-def]
    modules = dict(model.named_modules())
    classifier = modules[output_layer(model, example_input)]
    yield from graph.get_all_groups(ignored_layers=[classifier], root_module_types=PRUNABLE_TYPES)


def _group_layers(graph: tp.DependencyGraph, group, order: list[str]) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """Layers whose output channels the group removes, first-run first."""
    names = {
        graph._module2name[dep.target.module]
        for dep, _ in group
        if graph.is_out_channel_pruning_fn(dep.handler)
        and isinstance(dep.target.module, PRUNABLE_TYPES)
    }
    return tuple(sorted(names, key=order.index))


def channel_groups(model: nn.Module, example_input: torch.Tensor) -> list[ChannelGroup]:
    """The prunable channel groups of ``model``, in execution order."""
    graph = _dependency_graph(model, example_input)
    order = execution_order(model, example_input)
    found = []
    for group in _groups(model, graph, example_input):
        layers = _group_layers(graph, group, order)
        found.append(ChannelGroup(name=layers[0], layers=layers, channels=len(group[0].idxs)))
    return sorted(found, key=lambda g: order.index(g.name))


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """Channels left after removing ``ratio`` of them, at a multiple of ``round_to``."""
    keep = channels - int(channels * ratio)
    if round_to > 1 and channels >= round_to:
        keep = max(round_to, round(keep / round_to) * round_to)
    return max(1, min(channels, keep))


def prune(
    model: nn.Module,
    example_input: torch.Tensor,
    ratios: Mapping[str, float],
    round_to: int = 1,
) -> nn.Module:
    """A pruned copy of ``model``: in each named group, drop the lowest-L2 channels.

    ``ratios`` maps group names (see :func:`channel_groups`) to the fraction of channels to
    remove; groups not named are kept whole. The copy really has fewer channels.
    """
    student = copy.deepcopy(model).eval()
    graph = _dependency_graph(student, example_input)
    order = execution_order(student, example_input)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    for group in _groups(student, graph, example_input):
        name = _group_layers(graph, group, order)[0]
        ratio = ratios.get(name, 0.0)
        channels = len(group[0].idxs)
        remove = channels - kept_channels(channels, ratio, round_to)
        if remove <= 0:
            continue
        scores = importance(group)
        weakest = torch.argsort(scores)[:remove].tolist()
        group.prune(idxs=weakest)
    return student


def count_macs_params(model: nn.Module, example_input: torch.Tensor) -> tuple[int, int]:
    """(multiply-accumulates, parameters) of one forward pass at ``example_input``'s shape."""
    macs, params = tp.utils.count_ops_and_params(model.eval(), example_input)
    return int(macs), int(params)
