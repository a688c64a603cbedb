"""What `autoshuikou compare` can run side by side, and how a command line names them.

A strategy is a sampler, a search space and optionally fixed plans. Every strategy's study
gets the same task, budget, seeds and baseline; search strategies also the same trial count
unless a name says otherwise (``random:60``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from autoshuikou.errors import UserError
from autoshuikou.space.bind import UNIFORM_RATIOS
from autoshuikou.space.schema import load_space
from autoshuikou.study.config import DEFAULTS
from autoshuikou.study.samplers import DEFAULT_SAMPLER, SAMPLERS

DEFAULT_STRATEGIES = "tpe-warm,screening,full-fidelity,tpe,nsga2,random,no-distill,uniform"
# What `autoshuikou search` runs: TPE started from the uniform plans, the default fidelity
# (the learned accuracy predictor decides what to train; the rung where there is no BatchNorm).
WARM = "tpe-warm"
# tpe-warm deciding at a rung of half an epoch instead (--fidelity screen; the default from
# issue 13's first measurement until the predictor beat it).
SCREENING = "screening"
# tpe-warm with the predictor named explicitly, whatever the default.
PREDICTOR = "predictor"
# The default before issue 13: every plan trained fully, the latency model rejecting first,
# the teacher run at every training step (no teacher cache), each precision twin trained again.
FULL = "full-fidelity"
NO_DISTILL = "no-distill"
UNIFORM = "uniform"


@dataclass(frozen=True)
class Strategy:
    name: str  # as written on the command line, without the trial count
    sampler: str
    trials: int  # uniform: the number of fixed plans plus the two references
    no_distill: bool = False
    uniform: bool = False
    warm_start: bool = False
    fidelity: str = DEFAULTS.fidelity
    predict: bool = False
    teacher_cache: bool = True  # keep the teacher's outputs across trials (--teacher-cache-mb)
    reuse_students: bool = True  # a precision twin takes its trained student (study.students)

    @property
    def is_default(self) -> bool:
        """The strategy `autoshuikou search` uses."""
        return (
            self.sampler == DEFAULT_SAMPLER
            and self.warm_start
            and not self.no_distill
            and self.fidelity == DEFAULTS.fidelity
            and not self.predict
            and self.teacher_cache
            and self.reuse_students
        )


def parse_strategies(text: str, trials: int) -> list[Strategy]:
    """'tpe,random:60,uniform' -> strategies; unknown names or counts are user errors."""
    known = [WARM, SCREENING, PREDICTOR, FULL, *SAMPLERS, NO_DISTILL, UNIFORM]
    hint = f"give a comma-separated list of {', '.join(known)}, each optionally NAME:TRIALS"
    strategies: list[Strategy] = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, count = item.partition(":")
        if name not in known:
            raise UserError(f"unknown strategy {name!r} in --strategies", hint)
        if count and not (count.isdigit() and int(count) >= 1):
            raise UserError(f"cannot read the trial count in {item!r}", hint)
        n = int(count) if count else trials
        if name == UNIFORM:
            if count:
                raise UserError("uniform runs a fixed set of plans; give it no trial count", hint)
            strategies.append(Strategy(name, "random", 2 + 2 * len(UNIFORM_RATIOS), uniform=True))
        elif name == NO_DISTILL:  # the default strategy minus fine-tuning
            strategies.append(Strategy(name, DEFAULT_SAMPLER, n, no_distill=True, warm_start=True))
        elif name == WARM:
            strategies.append(Strategy(name, DEFAULT_SAMPLER, n, warm_start=True))
        elif name == FULL:
            strategies.append(
                Strategy(
                    name,
                    DEFAULT_SAMPLER,
                    n,
                    warm_start=True,
                    fidelity="full",
                    predict=True,
                    teacher_cache=False,
                    reuse_students=False,
                )
            )
        elif name == SCREENING:
            strategies.append(
                Strategy(name, DEFAULT_SAMPLER, n, warm_start=True, fidelity="screen")
            )
        elif name == PREDICTOR:
            strategies.append(
                Strategy(name, DEFAULT_SAMPLER, n, warm_start=True, fidelity="predict")
            )
        else:
            strategies.append(Strategy(name, name, n))
    names = [s.name for s in strategies]
    if not names or len(set(names)) != len(names):
        raise UserError(f"--strategies must name each strategy once, got {text!r}", hint)
    return strategies


def write_no_distill_space(space: str | Path | None, path: Path) -> Path:
    """The given space with fine-tuning switched off: the distillation ablation."""
    source = load_space(space)
    data = yaml.safe_load(source.text)
    data["distill"] = {
        "epochs": {"min": 0, "max": 0},
        "lr": {"min": 0.001, "max": 0.001},
        "temperature": {"min": 4.0, "max": 4.0},
        "alpha": {"min": 0.9, "max": 0.9},
        "features": [],
    }
    text = "# Written by `autoshuikou compare`: the search space with no fine-tuning.\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + yaml.safe_dump(data, sort_keys=False))
    load_space(path)  # fail here, not in the middle of a comparison
    return path
