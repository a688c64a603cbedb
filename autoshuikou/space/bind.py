"""A search space bound to one model: every rule resolved to concrete groups and layers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna

from autoshuikou.compress.prune import ChannelGroup
from autoshuikou.errors import UserError
from autoshuikou.plan import DistillSettings, Plan
from autoshuikou.space.schema import FloatRange, SearchSpace

HINT = "run `autoshuikou layers` (with the same --task) to list the names patterns can match"


@dataclass(frozen=True)
class BoundSpace:
    space: SearchSpace
    prune: dict[str, FloatRange]  # channel group -> ratio range
    precision: dict[str, tuple[str, ...]]  # layer -> allowed precisions
    features: dict[str, FloatRange]  # module -> feature-distillation weight range
    round_to: int | None = None  # the space's, or the one measured on this machine

    def with_round_to(self, round_to: int) -> BoundSpace:
        return replace(self, round_to=round_to)

    def _rounding(self) -> int:
        if self.round_to is None:
            raise RuntimeError("round_to: auto is resolved with the baseline; measure it first")
        return self.round_to

    def random_plans(self, count: int, seed: int) -> list[Plan]:
        """Random plans drawn through the same suggest() the search uses."""
        study = optuna.create_study(
            directions=["maximize", "minimize", "minimize"],
            sampler=optuna.samplers.RandomSampler(seed=seed),
        )
        return [self.suggest(study.ask()) for _ in range(count)]

    def covering_plans(self, count: int, seed: int) -> list[Plan]:
        """Plans spread over the whole latency range, for profiling. Each draws one pruning
        level and one int8 share, then varies every group and layer around them: plans
        drawn independently per group (``random_plans``) cluster at middling latency, but a
        tight-budget search works at the fast end, and the latency model must know it."""
        rng = np.random.default_rng(seed)
        plans = []
        for _ in range(count):
            level, int8_share = rng.random(), rng.random()
            params = self.uniform_params(0.0, int8=False)  # distillation settings: unused
            for g, r in self.prune.items():
                if not r.fixed:
                    jitter = level + rng.normal(0.0, PRUNE_JITTER)
                    params[f"prune:{g}"] = _snap(r.low + (r.high - r.low) * jitter, r)
            for layer, choices in self.precision.items():
                if len(choices) > 1:
                    int8 = "int8" in choices and rng.random() < int8_share
                    other = next(c for c in choices if c != "int8")
                    params[f"precision:{layer}"] = "int8" if int8 else other
            plans.append(self.suggest(optuna.trial.FixedTrial(params)))
        return plans

    def suggest(self, trial: optuna.trial.BaseTrial) -> Plan:
        s = self.space
        prune = {g: _float(trial, f"prune:{g}", r) for g, r in self.prune.items()}
        precision = {
            layer: choices[0]
            if len(choices) == 1
            else str(trial.suggest_categorical(f"precision:{layer}", choices))
            for layer, choices in self.precision.items()
        }
        epochs = (
            s.epochs.low
            if s.epochs.low == s.epochs.high
            else trial.suggest_int("distill:epochs", s.epochs.low, s.epochs.high)
        )
        distill = DistillSettings(
            epochs=epochs,
            lr=_float(trial, "distill:lr", s.lr),
            temperature=_float(trial, "distill:temperature", s.temperature),
            alpha=_float(trial, "distill:alpha", s.alpha),
            features={m: _float(trial, f"feature:{m}", r) for m, r in self.features.items()},
            warmup=s.warmup,
        )
        return Plan(
            prune=prune,
            precision=precision,
            distill=distill,
            round_to=self._rounding(),
            importance=self.space.importance,
        )

    def reference_plan(self, kind: str) -> Plan:
        """'fp32': the original model as exported; 'int8': unpruned, every allowed layer int8."""
        if kind not in ("fp32", "int8"):
            raise ValueError(f"unknown reference {kind!r}")
        precision = {
            layer: "int8" if kind == "int8" and "int8" in choices else "fp32"
            for layer, choices in self.precision.items()
        }
        return Plan(
            prune={},
            precision=precision,
            round_to=self._rounding(),
            importance=self.space.importance,
        )

    def uniform_params(self, ratio: float, int8: bool) -> dict[str, Any]:
        """The trial parameters of a uniform plan (see :meth:`uniform_plan`), as ``suggest``
        names them: enqueued, they start a search from the classic baselines."""
        s = self.space
        params: dict[str, Any] = {
            f"prune:{g}": _snap(ratio, r) for g, r in self.prune.items() if not r.fixed
        }
        params |= {
            f"precision:{layer}": "int8" if int8 and "int8" in c else "fp32"
            for layer, c in self.precision.items()
            if len(c) > 1
        }
        if s.epochs.low != s.epochs.high:
            params["distill:epochs"] = s.epochs.high
        for name, classic, r in (
            ("lr", 1e-3, s.lr),
            ("temperature", 4.0, s.temperature),
            ("alpha", 0.9, s.alpha),
        ):
            if not r.fixed:
                params[f"distill:{name}"] = _snap(classic if r.start is None else r.start, r)
        params |= {f"feature:{m}": r.low for m, r in self.features.items() if not r.fixed}
        return params

    def uniform_plan(self, ratio: float, int8: bool) -> Plan:
        """Every group pruned by ``ratio`` (clipped to its range), every layer int8 (where
        allowed) or fp32, the longest fine-tuning at the space's ``start`` settings (else
        classic KD: lr 1e-3, T 4, alpha 0.9, clipped to the space). The classic baseline:
        the same ratio everywhere."""
        return self.suggest(optuna.trial.FixedTrial(self.uniform_params(ratio, int8)))

    def fastest_plan(self, int8: bool = True) -> Plan:
        """The most compressed plan the space allows, every allowed layer int8 (or, with
        ``int8=False``, every allowed layer fp32: on a small model quantize/dequantize
        overhead can make int8 the slower of the two)."""
        wanted = "int8" if int8 else "fp32"
        return Plan(
            prune={g: r.high for g, r in self.prune.items()},
            precision={
                layer: wanted if wanted in c else c[0] for layer, c in self.precision.items()
            },
            round_to=self._rounding(),
            importance=self.space.importance,
        )


UNIFORM_RATIOS = (0.25, 0.5, 0.75)
PRUNE_JITTER = 0.15  # spread of a covering plan's groups around its level (share of the range)


def uniform_plans(space: BoundSpace) -> dict[str, Plan]:
    """Same ratio in every group x {fp32, all-int8}: the classic no-search baselines."""
    return {
        _uniform_label(ratio, int8): space.uniform_plan(ratio, int8)
        for ratio in UNIFORM_RATIOS
        for int8 in (False, True)
    }


def warm_start_params(space: BoundSpace) -> dict[str, dict[str, Any]]:
    """The uniform plans as trial parameters, for the sampler to learn from."""
    return {
        _uniform_label(ratio, int8): space.uniform_params(ratio, int8)
        for ratio in UNIFORM_RATIOS
        for int8 in (False, True)
    }


def _uniform_label(ratio: float, int8: bool) -> str:
    return f"uniform-{ratio:.2f}-{'int8' if int8 else 'fp32'}"


def _snap(value: float, r: FloatRange) -> float:
    """``value`` clipped to the range and, for a stepped range, moved onto its grid."""
    value = min(max(value, r.low), r.high)
    if r.step:
        value = min(r.low + round((value - r.low) / r.step) * r.step, r.high)
    return value


def _float(trial: optuna.trial.BaseTrial, name: str, r: FloatRange) -> float:
    if r.fixed:
        return r.low
    return float(trial.suggest_float(name, r.low, r.high, step=r.step, log=r.log))


def _first_match(patterns: Sequence[str], names: Sequence[str]) -> int | None:
    for i, pattern in enumerate(patterns):
        if any(re.search(pattern, name) for name in names):
            return i
    return None


def bind_space(
    space: SearchSpace,
    groups: Sequence[ChannelGroup],
    layers: Sequence[str],
    modules: Sequence[str],
    fp32_layers: Sequence[str] = (),
) -> BoundSpace:
    """Resolve rules (first match wins) and reject any rule that matches nothing.
    ``fp32_layers`` (a family's output layers, see ``ModelFamily.int8_outputs``) stay fp32
    whatever the rules say."""
    src = space.source
    prune_patterns = [rule.match for rule in space.prune_rules]
    prune: dict[str, FloatRange] = {}
    used: set[int] = set()
    for group in groups:
        hit = _first_match(prune_patterns, group.layers)
        prune[group.name] = space.prune_default if hit is None else space.prune_rules[hit].ratio
        used |= {hit} if hit is not None else set()
    for i, rule in enumerate(space.prune_rules):
        if not any(re.search(rule.match, layer) for g in groups for layer in g.layers):
            raise UserError(
                f"{src}: prune.rules[{i}].match: pattern {rule.match!r} matches no prunable layer",
                HINT,
            )

    precision: dict[str, tuple[str, ...]] = {}
    for layer in layers:
        hit = _first_match([rule.match for rule in space.precision_rules], [layer])
        precision[layer] = (
            space.precision_default if hit is None else space.precision_rules[hit].choices
        )
        if layer in fp32_layers:
            precision[layer] = ("fp32",)
    for i, prule in enumerate(space.precision_rules):
        if not any(re.search(prule.match, layer) for layer in layers):
            raise UserError(
                f"{src}: precision.rules[{i}].match: pattern {prule.match!r} matches no layer", HINT
            )

    features: dict[str, FloatRange] = {}
    for i, frule in enumerate(space.features):
        matched = [m for m in modules if m and re.search(frule.match, m)]
        if not matched:
            raise UserError(
                f"{src}: distill.features[{i}].match: pattern {frule.match!r} matches no module",
                HINT,
            )
        for module in matched:
            features.setdefault(module, frule.weight)
    return BoundSpace(
        space=space, prune=prune, precision=precision, features=features, round_to=space.round_to
    )
