"""A latency model learned on this machine: plan features -> latency ratio to the baseline.

Features come from the pruned PyTorch model (cheap: no export, no training): each layer's
multiply-accumulates, split by the precision the plan gives it, the number of fp32/int8
boundaries (each costs a quantize or dequantize) and a constant. Three model shapes are
fitted with non-negative least squares: one coefficient per layer and precision
("per_layer"), the same plus a fixed cost per int8 layer ("per_layer_int8", for the
quantize/requantize work that does not shrink with the MACs), or one per precision
("global"), and a Gaussian process on the per_layer_int8 features ("gp": a linear kernel
for the additive costs plus a smooth one for the interactions linear models miss, e.g.
ONNX Runtime fusing neighbouring int8 layers); the one with the lowest cross-validated
median error wins.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from scipy.optimize import nnls
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, DotProduct, Kernel, WhiteKernel
from torch import nn

from autoshuikou.compress.prune import head_size, trace_layers
from autoshuikou.families import Inputs
from autoshuikou.plan import Plan

KINDS = ("per_layer", "per_layer_int8", "global", "gp")
LINEAR_FEATURES = {"gp": "per_layer_int8"}  # the feature vector each kind reads


ATTENTION = "@attention"  # suffix of the keys for attention's activation x activation MatMuls


def attention_keys(macs: dict[str, int]) -> list[str]:
    return sorted(k for k in macs if k.endswith(ATTENTION))


def layer_macs(model: nn.Module, example_input: Inputs | torch.Tensor) -> dict[str, int]:
    """MACs of each Conv/Linear layer for one forward pass, keyed by layer name, and of each
    attention block's score and mixing MatMuls (``<block>@attention``): these have no
    weights, run in fp32 and grow with the sequence length squared and the heads kept."""
    macs: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if head_size(module) is not None:

            def attention(m: Any, args: Any, kwargs: Any, _out: Any, key: str = name) -> None:
                hidden = args[0] if args else kwargs["hidden_states"]
                batch, tokens = int(hidden.shape[0]), int(hidden.shape[-2])
                # Q K^T and softmax(.) V: two products of tokens x tokens x all heads.
                macs[key + ATTENTION] = 2 * batch * tokens * tokens * int(m.all_head_size)

            handles.append(module.register_forward_hook(attention, with_kwargs=True))

    def record(name: str, module: nn.Module, output: torch.Tensor) -> None:
        if isinstance(module, nn.Conv2d | nn.Conv1d):
            per_output = module.in_channels // module.groups * int(np.prod(module.kernel_size))
        elif isinstance(module, nn.Linear):
            per_output = module.in_features
        else:
            return
        macs[name] = macs.get(name, 0) + int(output.numel()) * per_output

    try:
        trace_layers(model, example_input, record)
    finally:
        for handle in handles:
            handle.remove()
    return macs


def features(kind: str, layers: Sequence[str], macs: dict[str, int], plan: Plan) -> np.ndarray:
    """The feature vector of one plan (MACs in millions, so coefficients are comparable)."""
    int8 = set(plan.int8_layers)
    attention = [macs[k] / 1e6 for k in attention_keys(macs)]  # always fp32
    boundaries = sum(1 for a, b in itertools.pairwise(layers) if (a in int8) != (b in int8))
    boundaries += layers[0] in int8  # the input is fp32: quantized first layer means one Q
    boundaries += layers[-1] in int8  # the output is fp32 too
    if kind in ("per_layer", "per_layer_int8"):
        per_layer = [macs.get(layer, 0) / 1e6 * (layer in int8) for layer in layers]
        per_layer += [macs.get(layer, 0) / 1e6 * (layer not in int8) for layer in layers]
        if kind == "per_layer_int8":
            per_layer += [float(layer in int8) for layer in layers]
        return np.array([*per_layer, *attention, boundaries, 1.0])
    int8_macs = sum(macs.get(layer, 0) for layer in layers if layer in int8) / 1e6
    fp32_macs = sum(macs.get(layer, 0) for layer in layers if layer not in int8) / 1e6
    fp32_macs += sum(attention)
    return np.array([int8_macs, fp32_macs, len(int8), len(layers) - len(int8), boundaries, 1.0])


def _fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Relative error is what matters: weight each probe by 1 / its latency.
    w = 1.0 / y
    coef, _ = nnls(x * w[:, None], y * w)
    return np.asarray(coef)


def _gp_kernel(dimensions: int) -> Kernel:
    # Additive costs (dot product) + interactions (RBF, one length scale per feature) + noise.
    return (
        ConstantKernel() * DotProduct()
        + ConstantKernel() * RBF(np.ones(dimensions))
        + WhiteKernel()
    )


def _fit_gp(
    x: np.ndarray, y: np.ndarray, theta: np.ndarray | None = None
) -> GaussianProcessRegressor:
    """Fit the GP's hyperparameters by marginal likelihood, or reuse fitted ones (``theta``)."""
    kernel = _gp_kernel(x.shape[1])
    if theta is not None:
        kernel = kernel.clone_with_theta(theta)
    gp = GaussianProcessRegressor(
        kernel,
        normalize_y=True,
        random_state=0,
        optimizer=None if theta is not None else "fmin_l_bfgs_b",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # a bound reached is still a fit
        return gp.fit(x, y)


def _features(kind: str, layers: Sequence[str], macs: dict[str, int], plan: Plan) -> np.ndarray:
    return features(LINEAR_FEATURES.get(kind, kind), layers, macs, plan)


@dataclass(frozen=True)
class LatencyModel:
    kind: str
    layers: tuple[str, ...]
    coefficients: tuple[float, ...]  # linear kinds; the GP's fitted kernel parameters for "gp"
    holdout_mape: float  # out-of-fold errors: each probe predicted by a model that never saw it
    holdout_p90: float
    probes: int
    # "gp" only: the probes it conditions on (feature rows, ratios).
    train_x: tuple[tuple[float, ...], ...] = ()
    train_y: tuple[float, ...] = ()

    @cached_property
    def _gp(self) -> GaussianProcessRegressor:
        return _fit_gp(np.array(self.train_x), np.array(self.train_y), np.array(self.coefficients))

    def predict_ratio(self, macs: dict[str, int], plan: Plan) -> float:
        x = _features(self.kind, self.layers, macs, plan)
        if self.kind == "gp":
            return float(self._gp.predict(x[None, :])[0])
        return float(x @ np.array(self.coefficients))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LatencyModel:
        return cls(
            kind=str(data["kind"]),
            layers=tuple(data["layers"]),  # type: ignore[arg-type]
            coefficients=tuple(float(c) for c in data["coefficients"]),  # type: ignore[attr-defined]
            holdout_mape=float(data["holdout_mape"]),  # type: ignore[arg-type]
            holdout_p90=float(data["holdout_p90"]),  # type: ignore[arg-type]
            probes=int(data["probes"]),  # type: ignore[call-overload]
            train_x=tuple(tuple(row) for row in data.get("train_x", ())),  # type: ignore[attr-defined]
            train_y=tuple(float(v) for v in data.get("train_y", ())),  # type: ignore[attr-defined]
        )


def absolute_percentage_errors(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    errors: np.ndarray = np.abs(predicted - measured) / measured
    return errors


def _fit_kind(kind: str, x: np.ndarray, y: np.ndarray) -> Any:
    return _fit_gp(x, y) if kind == "gp" else _fit(x, y)


def _predict(kind: str, fitted: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(fitted.predict(x) if kind == "gp" else x @ fitted)


FOLDS = 5


def out_of_fold_errors(kind: str, x: np.ndarray, y: np.ndarray, folds: int = FOLDS) -> np.ndarray:
    """Each probe's error when predicted by the model fitted on the other folds.

    Every probe is scored once, so the choice between model shapes rests on all of them
    rather than on one held-out quarter (which flipped the choice between runs).
    """
    errors = np.empty(len(y))
    for held in np.array_split(np.arange(len(y)), folds):
        train = np.setdiff1d(np.arange(len(y)), held)
        fitted = _fit_kind(kind, x[train], y[train])
        errors[held] = absolute_percentage_errors(_predict(kind, fitted, x[held]), y[held])
    return errors


def fit_latency_model(
    layers: Sequence[str],
    macs: Sequence[dict[str, int]],
    plans: Sequence[Plan],
    ratios: Sequence[float],
    folds: int = FOLDS,
) -> LatencyModel:
    """Score every model shape by k-fold cross-validation, refit the winner on all probes."""
    y = np.asarray(ratios)
    folds = max(2, min(folds, len(y)))
    best: tuple[float, float, str] | None = None
    for kind in KINDS:
        x = np.stack([_features(kind, layers, m, p) for m, p in zip(macs, plans, strict=True)])
        errors = out_of_fold_errors(kind, x, y, folds)
        score = (float(np.median(errors)), float(np.percentile(errors, 90)), kind)
        if best is None or score[0] < best[0]:
            best = score
    assert best is not None
    kind = best[2]
    x = np.stack([_features(kind, layers, m, p) for m, p in zip(macs, plans, strict=True)])
    fitted = _fit_kind(kind, x, y)
    gp = kind == "gp"
    return LatencyModel(
        kind=kind,
        layers=tuple(layers),
        coefficients=tuple(float(c) for c in (fitted.kernel_.theta if gp else fitted)),
        holdout_mape=best[0],
        holdout_p90=best[1],
        probes=len(y),
        train_x=tuple(tuple(float(v) for v in row) for row in x) if gp else (),
        train_y=tuple(float(v) for v in y) if gp else (),
    )
