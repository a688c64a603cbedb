"""The search strategies a study can use: Optuna samplers by name, all constraint-aware.

Trials carry their feasibility as Optuna constraints (latency over budget, metric under a
floor), which every sampler here reads from the trial itself.
"""

from __future__ import annotations

from collections.abc import Callable

import optuna

from autoshuikou.errors import UserError

DEFAULT_SAMPLER = "tpe"


def _tpe(seed: int) -> optuna.samplers.BaseSampler:
    # constant_liar: workers sharing a study do not all sample next to the same running trial.
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _nsga2(seed: int) -> optuna.samplers.BaseSampler:
    # Population 10: with a 30-trial budget the default 50 would never leave generation one.
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)


def _random(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _gp(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=seed)


SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "nsga2": _nsga2,
    "random": _random,
    "gp": _gp,
}


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise UserError(
            f"unknown sampler {name!r}", f"choose one of: {', '.join(SAMPLERS)} (default tpe)"
        )
    return SAMPLERS[name](seed)
