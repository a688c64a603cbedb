"""The benchmark suites still import and every subcommand's parser builds (no benchmark runs)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SUITES = ["case_study", "strategies", "latency_truth", "runtimes", "finetune"]


def _load(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:  # the suites import their shared _common module
        sys.path.insert(0, str(BENCHMARKS))
    if name == "_common":
        return importlib.import_module("_common")
    spec = importlib.util.spec_from_file_location(
        f"benchmark_suite_{name}", BENCHMARKS / f"{name}.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SUITES)
def test_every_subcommand_parses(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    common = _load("_common")
    suite = _load(name)
    commands = suite.COMMANDS
    assert commands and len({c.name for c in commands}) == len(commands)
    parser = common.build_parser(f"benchmarks/{name}.py", suite.DESCRIPTION, commands)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(sub.choices) == {c.name for c in commands}
    for command in commands:
        assert callable(command.run) and command.runtime
        assert sub.choices[command.name].format_help()
    assert common.main(f"benchmarks/{name}.py", suite.DESCRIPTION, commands, []) == 0
    listed = capsys.readouterr().out
    assert all(c.name in listed for c in commands)


def test_the_suites_are_all_tested() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if not p.stem.startswith("_")}
    # tasks.py and fashion.py hold task functions; same_models.py runs unchanged on old
    # checkouts
    assert scripts - {"tasks", "fashion", "same_models"} == set(SUITES)
