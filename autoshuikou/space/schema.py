"""Search-space YAML: schema, loading and validation.

Every error names the file and the key path, e.g. ``default.yaml: prune.rules[1].max``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from autoshuikou.errors import UserError
from autoshuikou.plan import IMPORTANCES, PRECISIONS


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    step: float | None = None
    log: bool = False
    start: float | None = None  # distillation only: what the uniform (warm-start) plans use

    @property
    def fixed(self) -> bool:
        return self.low == self.high


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int


@dataclass(frozen=True)
class PruneRule:
    match: str
    ratio: FloatRange


@dataclass(frozen=True)
class PrecisionRule:
    match: str
    choices: tuple[str, ...]


@dataclass(frozen=True)
class FeatureRule:
    match: str
    weight: FloatRange


# Front models trained longer after the search when the space does not say (study.refine).
REFINE_MODELS = 2


@dataclass(frozen=True)
class Refine:
    """After the search, ``models`` front models are trained again with ``epochs`` epochs
    (None: scaled to the data set, ``study.refine.auto_epochs``); 0 models: none."""

    models: int = REFINE_MODELS
    epochs: int | None = None


@dataclass(frozen=True)
class SearchSpace:
    source: str
    round_to: int | None  # None: "auto", measured per machine
    importance: str  # which channels a group keeps (plan.IMPORTANCES)
    prune_default: FloatRange
    prune_rules: tuple[PruneRule, ...]
    precision_default: tuple[str, ...]
    precision_rules: tuple[PrecisionRule, ...]
    epochs: IntRange
    lr: FloatRange
    temperature: FloatRange
    alpha: FloatRange
    features: tuple[FeatureRule, ...]
    text: str  # the YAML as read, for the study fingerprint
    refine: Refine = Refine()  # what is trained longer after the search
    warmup: float = 0.0  # share of the fine-tuning steps with a rising learning rate


class _Reader:
    """Walks the parsed YAML, rejecting unknown keys and bad values with their path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str, hint: str) -> UserError:
        return UserError(f"{self.source}: {path}: {problem}", hint)

    def mapping(
        self,
        node: Any,
        path: str,
        allowed: set[str],
        required: frozenset[str] | set[str] = frozenset(),
    ) -> dict[str, Any]:
        if not isinstance(node, dict):
            raise self.fail(
                path,
                f"expected a mapping, got {type(node).__name__}",
                "see search_spaces/default.yaml",
            )
        for key in node:
            if key not in allowed:
                raise self.fail(
                    f"{path}.{key}" if path else str(key),
                    "unknown key",
                    f"allowed keys here: {', '.join(sorted(allowed))}",
                )
        for key in required:
            if key not in node:
                raise self.fail(f"{path}.{key}" if path else key, "missing", "add it")
        return node

    def number(self, node: Any, path: str) -> float:
        if isinstance(node, bool) or not isinstance(node, int | float) or not math.isfinite(node):
            raise self.fail(path, f"expected a number, got {node!r}", "write a plain number")
        return float(node)

    def pattern(self, node: Any, path: str) -> str:
        if not isinstance(node, str) or not node:
            raise self.fail(
                path, "expected a regular expression string", 'e.g. match: "^layer3\\."'
            )
        try:
            re.compile(node)
        except re.error as exc:
            raise self.fail(path, f"invalid regular expression: {exc}", "fix the pattern") from exc
        return node

    def float_range(
        self,
        node: Any,
        path: str,
        lo: float,
        hi: float,
        hi_open: bool = False,
        with_start: bool = False,
    ) -> FloatRange:
        keys = {"min", "max", "step", "log"} | ({"start"} if with_start else set())
        node = self.mapping(node, path, keys, {"min", "max"})
        low, high = self.number(node["min"], f"{path}.min"), self.number(node["max"], f"{path}.max")
        step = self.number(node["step"], f"{path}.step") if "step" in node else None
        log = node.get("log", False)
        if not isinstance(log, bool):
            raise self.fail(f"{path}.log", "expected true or false", "write log: true")
        too_high = high >= hi if hi_open else high > hi
        if low < lo or too_high or low > high:
            bound = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
            raise self.fail(
                path,
                f"range min={low} max={high} is not an ordered range within {bound}",
                f"use {lo} <= min <= max {'<' if hi_open else '<='} {hi}",
            )
        if step is not None and (step <= 0 or log):
            raise self.fail(
                f"{path}.step", "step must be > 0 and cannot be combined with log", "fix step"
            )
        if log and low <= 0:
            raise self.fail(f"{path}.min", "a log range needs min > 0", "raise min")
        start = self.number(node["start"], f"{path}.start") if "start" in node else None
        if start is not None and not low <= start <= high:
            raise self.fail(
                f"{path}.start", f"start={start} is outside min={low} max={high}", "fix start"
            )
        return FloatRange(low, high, step, log, start)

    def int_range(self, node: Any, path: str, lo: int) -> IntRange:
        node = self.mapping(node, path, {"min", "max"}, {"min", "max"})
        low, high = node["min"], node["max"]
        if (
            not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high))
            or not lo <= low <= high
        ):
            raise self.fail(
                path,
                f"expected integers {lo} <= min <= max, got min={low!r} max={high!r}",
                "fix the range",
            )
        return IntRange(low, high)

    def refine(self, node: Any) -> Refine:
        if node is None:
            return Refine()
        node = self.mapping(node, "refine", {"models", "epochs"}, {"models"})
        models, epochs = node["models"], node.get("epochs", "auto")
        auto = epochs == "auto"
        if not all(
            isinstance(v, int) and not isinstance(v, bool) for v in (models, 1 if auto else epochs)
        ) or (models < 0 or (not auto and epochs < 1)):
            raise self.fail(
                "refine",
                f"expected an integer models >= 0 and epochs >= 1 or auto, got "
                f"models={models!r} epochs={epochs!r}",
                "e.g. refine: {models: 3, epochs: 24}, or {models: 2, epochs: auto}",
            )
        return Refine(models, None if auto else epochs)

    def choices(self, node: Any, path: str) -> tuple[str, ...]:
        if not isinstance(node, list) or not node:
            raise self.fail(
                path, "expected a non-empty list of precisions", f"choose from {list(PRECISIONS)}"
            )
        for i, choice in enumerate(node):
            if choice not in PRECISIONS:
                raise self.fail(
                    f"{path}[{i}]",
                    f"precision {choice!r} is not supported",
                    f"choose from {list(PRECISIONS)}; lower weight bit-widths (int4) are only "
                    "stored and run by ONNX Runtime for MatMul layers, not convolutions, so they "
                    "are not offered",
                )
        return tuple(dict.fromkeys(node))


def parse_space(text: str, source: str) -> SearchSpace:
    r = _Reader(source)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: not valid YAML: {exc}", "fix the YAML syntax") from exc
    top = r.mapping(
        raw, "", {"prune", "precision", "distill", "refine"}, {"prune", "precision", "distill"}
    )

    prune = r.mapping(
        top["prune"], "prune", {"round_to", "importance", "default", "rules"}, {"default"}
    )
    importance = prune.get("importance", "magnitude")
    if importance not in IMPORTANCES:
        raise r.fail(
            "prune.importance",
            f"expected one of {list(IMPORTANCES)}, got {importance!r}",
            "magnitude: drop the lowest-L2 channels; taylor: the lowest |weight x gradient|",
        )
    round_to = prune.get("round_to", "auto")
    if round_to == "auto":
        round_to = None  # chosen by measurement on the machine, with the baseline
    elif not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1:
        raise r.fail(
            "prune.round_to",
            f"expected a positive integer or auto, got {round_to!r}",
            "e.g. round_to: 8, or round_to: auto to measure it",
        )
    prune_rules = []
    for i, rule in enumerate(prune.get("rules") or []):
        path = f"prune.rules[{i}]"
        rule = r.mapping(rule, path, {"match", "min", "max", "step"}, {"match", "min", "max"})
        ratio = {k: v for k, v in rule.items() if k != "match"}
        prune_rules.append(
            PruneRule(
                r.pattern(rule["match"], f"{path}.match"),
                r.float_range(ratio, path, 0.0, 1.0, True),
            )
        )

    precision = r.mapping(top["precision"], "precision", {"default", "rules"}, {"default"})
    precision_rules = []
    for i, rule in enumerate(precision.get("rules") or []):
        path = f"precision.rules[{i}]"
        rule = r.mapping(rule, path, {"match", "choices"}, {"match", "choices"})
        precision_rules.append(
            PrecisionRule(
                r.pattern(rule["match"], f"{path}.match"),
                r.choices(rule["choices"], f"{path}.choices"),
            )
        )

    distill = r.mapping(
        top["distill"],
        "distill",
        {"epochs", "lr", "temperature", "alpha", "features", "warmup"},
        {"epochs", "lr", "temperature", "alpha"},
    )
    warmup = r.number(distill.get("warmup", 0.0), "distill.warmup")
    if not 0.0 <= warmup < 1.0:
        raise r.fail(
            "distill.warmup",
            f"{warmup} is not a share of the fine-tuning steps",
            "use 0 <= warmup < 1, e.g. 0.1 to ramp the learning rate up over the first tenth",
        )
    features = []
    for i, rule in enumerate(distill.get("features") or []):
        path = f"distill.features[{i}]"
        rule = r.mapping(rule, path, {"match", "weight"}, {"match", "weight"})
        features.append(
            FeatureRule(
                r.pattern(rule["match"], f"{path}.match"),
                r.float_range(rule["weight"], f"{path}.weight", 0.0, 100.0),
            )
        )

    return SearchSpace(
        source=source,
        round_to=round_to,
        importance=importance,
        prune_default=r.float_range(prune["default"], "prune.default", 0.0, 1.0, True),
        prune_rules=tuple(prune_rules),
        precision_default=r.choices(precision["default"], "precision.default"),
        precision_rules=tuple(precision_rules),
        epochs=r.int_range(distill["epochs"], "distill.epochs", 0),
        lr=r.float_range(distill["lr"], "distill.lr", 1e-8, 10.0, with_start=True),
        temperature=r.float_range(
            distill["temperature"], "distill.temperature", 0.1, 100.0, with_start=True
        ),
        alpha=r.float_range(distill["alpha"], "distill.alpha", 0.0, 1.0, with_start=True),
        features=tuple(features),
        text=text,
        refine=r.refine(top.get("refine")),
        warmup=warmup,
    )


def load_space(path: str | Path | None = None, default: str = "default.yaml") -> SearchSpace:
    """Load ``path``, or the shipped space ``default`` (a model family's) when it is None."""
    if path is None:
        text = resources.files("autoshuikou.space").joinpath(default).read_text()
        return parse_space(text, default)
    file = Path(path)
    if not file.is_file():
        raise UserError(
            f"search space {file} does not exist", "pass an existing YAML file to --space"
        )
    return parse_space(file.read_text(), str(file))
