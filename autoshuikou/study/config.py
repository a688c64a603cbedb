"""A search's settings, in one typed object: the CLI, the Python API, `compare` and
`profile` build or derive it, and every default lives here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from autoshuikou.errors import UserError
from autoshuikou.runtimes import DEFAULT_RUNTIME
from autoshuikou.study.budget import parse_budget
from autoshuikou.study.samplers import DEFAULT_SAMPLER

FIDELITIES = ("screen", "full")  # see study.screening


@dataclass(frozen=True)
class SearchConfig:
    """What `autoshuikou search` takes (see its --help and ``study.search.search``).

    Simple values are checked on construction, so a bad one is refused before any work.
    """

    task: str | None = None  # built-in name, file.py:function or module:function (None: digits)
    budget: str = "50%"  # "75ms", "0.8ms", or "50%" of the fp32 baseline
    trials: int = 30  # trained and measured, in total over all workers
    space: str | Path | None = None  # search-space YAML (None: the shipped default.yaml)
    out: str | Path = "runs"
    study_name: str | None = None  # None: <task>-<budget>; the same name resumes
    seed: int = 0
    threads: int = 1  # intra-op threads for latency
    timeout: float | None = None  # seconds after which no new trial starts
    min_accuracy: str | float | None = None  # absolute (0.97) or "99%" of the baseline
    measure_seconds: float = 1.0  # timing per trial, candidate and baseline interleaved
    predict: bool = False  # reject plans by a learned latency model (profiled once) first
    fidelity: str = "screen"  # "screen": train fully only what could join the front; "full"
    device: str = "auto"  # fine-tuning: auto (CUDA when available), cpu, cuda
    storage: str | None = None  # None: a journal under the run; a .journal path; postgresql://
    sampler: str = DEFAULT_SAMPLER  # see study.samplers
    final_remeasure: bool = True  # without: the front keeps its search-time latencies
    runtime: str = DEFAULT_RUNTIME  # runs and times the artifacts; the budget refers to it
    warm_start: bool = True  # begin with the uniform plans
    energy_objective: bool = False  # minimize energy per inference as a fourth objective

    def __post_init__(self) -> None:
        parse_budget(self.budget)  # raises a UserError saying how to write one
        if self.trials < 1:
            raise UserError(f"--trials must be at least 1, got {self.trials}", "e.g. --trials 30")
        if self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}", "e.g. --threads 1")
        if self.fidelity not in FIDELITIES:
            raise UserError(
                f"unknown --fidelity {self.fidelity!r}", f"give one of {', '.join(FIDELITIES)}"
            )
        if not self.measure_seconds > 0:
            raise UserError(
                f"--measure-seconds must be above 0, got {self.measure_seconds}",
                "e.g. --measure-seconds 1.0 (shorter is noisier)",
            )


DEFAULTS = SearchConfig()
