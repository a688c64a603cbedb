"""Structured pruning: remove whole channels (or attention heads) with Torch-Pruning's
dependency graph.

DepGraph finds which layers' channels are coupled (residual adds, concatenations,
depthwise convolutions, BatchNorm, the q/k/v/output projections of an attention block),
so one decision per *group* keeps the network valid. Groups are named by their first
layer (attention groups by their attention module); the layer producing the model's
output is never pruned, nor a group its family keeps at full width (an encoder's hidden
size). In an attention group whole heads go: the channels removed are every channel of
the weakest heads, and the module's head count is updated.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn

from autoshuikou.families import CLASSIFICATION, Inputs, ModelFamily, call

PRUNABLE_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together; ``name`` is the first layer in the group."""

    name: str
    layers: tuple[str, ...]  # every layer whose output channels shrink with this group
    channels: int  # units the group's ratio applies to: channels, or heads
    unit: str = "channels"  # "channels" or "heads"


def _as_inputs(example: Inputs | torch.Tensor) -> Inputs:
    return example if isinstance(example, dict) else {"input": example}


def trace_layers(
    model: nn.Module,
    example: Inputs | torch.Tensor,
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
            call(model.eval(), _as_inputs(example))
    finally:
        for hook in hooks:
            hook.remove()


def execution_order(model: nn.Module, example: Inputs | torch.Tensor) -> list[str]:
    """Names of the Conv/Linear layers in the order a forward pass runs them."""
    order: list[str] = []
    trace_layers(model, example, lambda name, _m, _o: order.append(name))
    return order


def output_layer(model: nn.Module, example: Inputs | torch.Tensor) -> str:
    """The layer that produces the model's output: the last Conv/Linear to run."""
    order = execution_order(model, example)
    if not order:
        raise ValueError("the model has no Conv or Linear layer to compress")
    return order[-1]


def _dependency_graph(model: nn.Module, example: Inputs | torch.Tensor) -> tp.DependencyGraph:
    model.eval()
    return tp.DependencyGraph().build_dependency(model, example_inputs=_tp_inputs(example))


def _tp_inputs(example: Inputs | torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """What Torch-Pruning calls the model with: the tensor itself, or the tuple of inputs."""
    values = tuple(_as_inputs(example).values())
    return values[0] if len(values) == 1 else values


def head_size(module: nn.Module) -> int | None:
    """The per-head width an attention block records (Hugging Face: ``attention_head_size``)."""
    size: object = getattr(module, "attention_head_size", None)
    return size if isinstance(size, int) else None


def _size(module: nn.Module) -> int:
    size = head_size(module)
    assert size is not None  # only called on attention blocks
    return size


def _attention_module(model: nn.Module, layers: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    """The attention block whose q/k/v projections are in ``layers``, if any: the parent
    module of a layer that records its head size (Hugging Face's ``attention_head_size``)."""
    modules = dict(model.named_modules())
    for layer in layers:
        parent = layer.rpartition(".")[0]
        module = modules.get(parent)
        if module is not None and head_size(module) is not None:
            return parent, module
    return None


def shared_head_tables(model: nn.Module) -> list[str]:
    """Embeddings that hold one value per attention head for every layer at once (MPNet's
    and T5's relative-position bias). The dependency graph then joins every layer's q/k/v
    and the table in one group, which the encoder keeps whole (it holds an Embedding): no
    per-layer head count is possible, and the user is told so rather than shown heads."""
    heads = {
        int(getattr(m, "num_attention_heads", 0))
        for m in model.modules()
        if head_size(m) is not None
    }
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Embedding) and m.embedding_dim in heads
    ]


def head_pruning_notes(model: nn.Module) -> list[str]:
    return [
        f"attention heads are kept in every layer: {name} holds one bias per head shared by "
        "all layers (pruning a head in one layer would not match it); FFN widths and int8 "
        "are still searched"
        for name in shared_head_tables(model)
    ]


def terminal_layers(graph: tp.DependencyGraph) -> list[str]:
    """Conv/Linear layers whose output reaches the model's outputs without passing another
    Conv/Linear: every head of a multi-head model (a detector's box and class maps)."""
    terminal = []
    for module, node in graph.module2node.items():
        if not isinstance(module, PRUNABLE_TYPES):
            continue
        seen, todo, feeds_layer = set(), list(node.outputs), False
        while todo and not feeds_layer:
            nxt = todo.pop()
            if id(nxt) in seen:
                continue
            seen.add(id(nxt))
            feeds_layer = isinstance(nxt.module, PRUNABLE_TYPES)
            todo.extend(nxt.outputs)
        if not feeds_layer:
            terminal.append(graph._module2name[module])
    return terminal


def protected_layers(
    model: nn.Module, graph: tp.DependencyGraph, example: Inputs, family: ModelFamily
) -> list[nn.Module]:
    """Layers whose output channels are never pruned, as the family says
    (``ModelFamily.width_kept``): the output layer, or a detector's every head."""
    modules = dict(model.named_modules())
    names = family.width_kept(output_layer(model, example), terminal_layers(graph))
    return [modules[name] for name in names]


def output_layer_names(
    model: nn.Module, example: Inputs | torch.Tensor, family: ModelFamily = CLASSIFICATION
) -> list[str]:
    """Names of the layers that keep their width (see :func:`protected_layers`)."""
    graph = _dependency_graph(model, example)
    names = {id(m): name for name, m in model.named_modules()}
    protected = protected_layers(model, graph, _as_inputs(example), family)
    return [names[id(m)] for m in protected]


def _groups(model: nn.Module, graph: tp.DependencyGraph, example: Inputs, family: ModelFamily):  # type: ignore[no-untyped-def]
    protected = protected_layers(model, graph, example, family)
    for group in graph.get_all_groups(ignored_layers=protected, root_module_types=PRUNABLE_TYPES):
        types = [type(dep.target.module) for dep, _ in group]
        if not family.keeps_width(types):
            yield group


def _group_layers(graph: tp.DependencyGraph, group, order: list[str]) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """Layers whose output channels the group removes, first-run first."""
    names = {
        graph._module2name[dep.target.module]
        for dep, _ in group
        if graph.is_out_channel_pruning_fn(dep.handler)
        and isinstance(dep.target.module, PRUNABLE_TYPES)
    }
    return tuple(sorted(names, key=order.index))


def _describe(model: nn.Module, graph: tp.DependencyGraph, group, order: list[str]) -> ChannelGroup:  # type: ignore[no-untyped-def]
    layers = _group_layers(graph, group, order)
    attention = _attention_module(model, layers)
    if attention is not None:
        name, module = attention
        heads = len(group[0].idxs) // _size(module)
        return ChannelGroup(name=name, layers=layers, channels=heads, unit="heads")
    return ChannelGroup(name=layers[0], layers=layers, channels=len(group[0].idxs))


def channel_groups(
    model: nn.Module, example: Inputs | torch.Tensor, family: ModelFamily = CLASSIFICATION
) -> list[ChannelGroup]:
    """The prunable channel groups of ``model``, in execution order."""
    graph = _dependency_graph(model, example)
    order = execution_order(model, example)
    found = [
        _describe(model, graph, group, order)
        for group in _groups(model, graph, _as_inputs(example), family)
    ]
    return sorted(found, key=lambda g: order.index(g.layers[0]))


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """Channels left after removing ``ratio`` of them, at a multiple of ``round_to``. A group
    not pruned keeps every channel: rounding it would prune the "unpruned" model (40 channels
    at a rounding of 16 became 32, and the fp32 reference lost 2 points of top-1)."""
    if ratio <= 0:
        return channels
    keep = channels - int(channels * ratio)
    if round_to > 1 and channels >= round_to:
        keep = max(round_to, round(keep / round_to) * round_to)
    return max(1, min(channels, keep))


def _weakest_heads(group, module: nn.Module, remove: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Channel indices of the ``remove`` heads with the lowest L2 importance."""
    size = _size(module)
    scores = tp.importance.GroupMagnitudeImportance(p=2)(group)
    per_head = scores.view(-1, size).sum(dim=1)
    heads = torch.argsort(per_head)[:remove].tolist()
    return [h * size + i for h in sorted(heads) for i in range(size)]


def _update_head_count(module: nn.Module, channels: int) -> None:
    """After pruning: the attention block's own record of its width (used in its reshapes)."""
    setattr(module, "num_attention_heads", channels // _size(module))  # noqa: B010
    setattr(module, "all_head_size", channels)  # noqa: B010


def prune(
    model: nn.Module,
    example: Inputs | torch.Tensor,
    ratios: Mapping[str, float],
    round_to: int = 1,
    family: ModelFamily = CLASSIFICATION,
    gradients: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """A pruned copy of ``model``: in each named group, drop the lowest-L2 channels (heads).

    ``ratios`` maps group names (see :func:`channel_groups`) to the fraction of channels
    (heads) to remove; groups not named are kept whole. The copy really is smaller. With
    ``gradients`` (parameter name -> gradient, see :func:`label_gradients`) channels are
    ranked by first-order Taylor importance |weight x gradient| summed over the group
    instead: what removing them would cost the loss, not how large they are (attention
    heads are still ranked by L2).
    """
    student = copy.deepcopy(model).eval()
    importance: tp.importance.Importance = tp.importance.GroupMagnitudeImportance(p=2)
    if gradients is not None:
        for name, param in student.named_parameters():
            param.grad = gradients[name].clone() if name in gradients else None
        importance = tp.importance.GroupTaylorImportance()
    graph = _dependency_graph(student, example)
    order = execution_order(student, example)
    inputs = _as_inputs(example)
    for group in _groups(student, graph, inputs, family):
        layers = _group_layers(graph, group, order)
        attention = _attention_module(student, layers)
        if attention is not None:
            name, module = attention
            heads = len(group[0].idxs) // _size(module)
            remove = heads - kept_channels(heads, ratios.get(name, 0.0), 1)
            if remove > 0:
                group.prune(idxs=_weakest_heads(group, module, remove))
                _update_head_count(module, (heads - remove) * _size(module))
            continue
        channels = len(group[0].idxs)
        remove = channels - kept_channels(channels, ratios.get(layers[0], 0.0), round_to)
        if remove <= 0:
            continue
        scores = importance(group)
        weakest = torch.argsort(scores)[:remove].tolist()
        group.prune(idxs=weakest)
    for param in student.parameters():
        param.grad = None
    return student


def label_gradients(
    model: nn.Module, batches: Iterable[tuple[Inputs, torch.Tensor]], family: ModelFamily
) -> dict[str, torch.Tensor]:
    """Gradients of the family's loss on the labels, summed over ``batches``, per parameter
    of ``model`` (in eval mode: the statistics the deployed model uses), for Taylor
    importance. ``model`` itself is left untouched."""
    probe = copy.deepcopy(model).eval()
    for param in probe.parameters():
        param.requires_grad_(True)
        param.grad = None
    for inputs, targets in batches:
        outputs = call(probe, inputs)
        _soft, hard = family.distill_loss(outputs, outputs, targets, 1.0)
        hard.backward()
    return {
        name: param.grad.detach().clone()
        for name, param in probe.named_parameters()
        if param.grad is not None
    }


def count_macs_params(model: nn.Module, example: Inputs | torch.Tensor) -> tuple[int, int]:
    """(multiply-accumulates, parameters) of one forward pass at ``example``'s shape."""
    macs, params = tp.utils.count_ops_and_params(model.eval(), _tp_inputs(example))
    return int(macs), int(params)
