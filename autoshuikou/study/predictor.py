"""A learned accuracy predictor: decide from cheap signals which plans to train.

What `autoshuikou search` runs by default on models with BatchNorm (``--fidelity auto``;
``predict`` names it); screening at a rung (``study.screening``, ``--fidelity screen``) is
the alternative it was measured against (docs/results/cheaper-trials.md), and the default on models
without BatchNorm, where this signal is only the untrained score. A plan's latency and
size are measured on its untrained artifact first, as there. Then, instead of half an
epoch of training:

1. The signal: the pruned, untrained student with its BatchNorm statistics recomputed on
   ``RECAL_BATCHES`` training batches (adaptive BatchNorm, as in EagleEye, Li et al. 2020:
   pruning leaves each BatchNorm normalising with statistics of channels that are gone),
   scored in PyTorch. Forward passes only; models without BatchNorm are scored as pruned.
2. The predictor: least squares from (signal, fine-tuning epochs) to the trained metric,
   fitted on this study's trained trials (the uniform plans the study starts from are
   always trained, so it has data from the start), with the standard error of a new
   prediction as its uncertainty. Where the trained trials cannot tell (they all
   fine-tuned 4 epochs, this plan 2), it does not guess: the plan is trained.
3. The decision, as screening's: a trained trial at least as fast and small that scored
   better than the prediction plus ``SIGMAS`` standard errors (and a tolerance) screens the
   plan out; otherwise it is trained fully.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial
from torch import nn

from autoshuikou.compress.batchnorm import batchnorms, recalibrate_batchnorm
from autoshuikou.measure.accuracy import torch_metric
from autoshuikou.study.pareto import best_beating
from autoshuikou.tasks import Task

MIN_FIT = 8  # trained trials with a signal before the predictor decides anything
SIGMAS = 1.0  # how many standard errors of optimism a plan's prediction is given
SIGNAL_ATTR = "predict_signal"
EPOCHS_ATTR = "predict_epochs"
PREDICTED_ATTR = "screen_predicted"  # on trials the predictor decided (screened or promoted)
ERROR_ATTR = "screen_predicted_error"  # that prediction's standard error


def has_batchnorm(model: nn.Module) -> bool:
    """Whether the signal is more than ``model``'s pruned score: recalibration needs BatchNorm."""
    return bool(batchnorms(model))


def recalibrated_metric(student: nn.Module, task: Task, seed: int = 0) -> float:
    """The signal: ``student``'s metric after adaptive BatchNorm (in place; eval mode after)."""
    return torch_metric(recalibrate_batchnorm(student, task, seed), task)


@dataclass(frozen=True)
class Observed:
    """A trained trial as the predictor learns from it and compares with it."""

    trial: int
    signal: float
    epochs: float
    metric: float
    latency_ms: float
    size_bytes: int


def observed_trials(trials: Iterable[FrozenTrial]) -> list[Observed]:
    """The trained trials among ``trials`` that recorded a signal."""
    found = []
    for t in trials:
        a = t.user_attrs
        if SIGNAL_ATTR in a and "metric" in a:
            found.append(
                Observed(
                    t.number,
                    a[SIGNAL_ATTR],
                    a[EPOCHS_ATTR],
                    a["metric"],
                    a["latency_ms"],
                    a["size_bytes"],
                )
            )
    return found


def _features(signal: float, epochs: float) -> np.ndarray:
    return np.array([1.0, signal, epochs])


@dataclass(frozen=True)
class Predictor:
    """Ordinary least squares with its prediction interval (not only its fit's residuals:
    a plan far from the trained ones is predicted with a wide error)."""

    coefficients: np.ndarray
    covariance: np.ndarray  # (X^T X)^+, for the leverage of a new plan
    row_space: np.ndarray  # projects a plan's features onto what the data identifies
    residual_sd: float
    trained_on: int

    def predict(self, signal: float, epochs: float) -> tuple[float, float] | None:
        """(predicted metric, its standard error); None where the data cannot tell: e.g.
        every trained trial so far fine-tuned 4 epochs and this plan 2."""
        return self.predict_features(_features(signal, epochs))

    def predict_features(self, x: np.ndarray) -> tuple[float, float] | None:
        """:meth:`predict` for a row of features as the fit saw them."""
        if np.linalg.norm(x - self.row_space @ x) > 1e-6 * np.linalg.norm(x):
            return None
        error = self.residual_sd * float(np.sqrt(1 + x @ self.covariance @ x))
        return float(x @ self.coefficients), error


def fit_predictor(observed: list[Observed]) -> Predictor | None:
    """Least squares on the trained trials; None with fewer than MIN_FIT of them, or with
    too few beyond the fitted coefficients to estimate the error."""
    if len(observed) < MIN_FIT:
        return None
    x = np.array([_features(o.signal, o.epochs) for o in observed])
    return fit_least_squares(x, np.array([o.metric for o in observed]))


def fit_least_squares(x: np.ndarray, y: np.ndarray) -> Predictor | None:
    """The fit behind :func:`fit_predictor`, on any features (rows of ``x``); None with
    too few rows beyond the fitted coefficients to estimate the error."""
    pinv = np.linalg.pinv(x)  # copes with every trial having trained the same epochs
    coefficients = pinv @ y
    freedom = len(y) - int(np.linalg.matrix_rank(x))
    if freedom < 2:
        return None
    residual_sd = float(np.sqrt(np.sum((y - x @ coefficients) ** 2) / freedom))
    return Predictor(coefficients, pinv @ pinv.T, pinv @ x, residual_sd, len(y))


def beating(
    predicted: float,
    latency_ms: float,
    size_bytes: int,
    trained: Iterable[Observed],
    margin: float,
) -> Observed | None:
    """The best trained trial at least as fast and small whose metric beats ``predicted`` by
    ``margin``; None: the plan could join the front and is trained."""
    return best_beating(latency_ms, size_bytes, predicted + margin, trained, lambda t: t.metric)


def judged_on_metric(attrs: Mapping[str, Any]) -> bool:
    """Whether a trial's plan was judged on its metric before full training: scored at the
    rung (``study.screening``), predicted here, or stopped as collapsed (``study.collapse``).
    Such a plan counts towards --trials."""
    return "screen_metric" in attrs or PREDICTED_ATTR in attrs or "collapsed" in attrs
