"""The README's promises, checked: its task example runs, its YAML is valid, CI runs its test command."""

import re
from pathlib import Path

import pytest

from autoshuikou import search
from autoshuikou.space.schema import parse_space
from autoshuikou.tasks import load_task

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _block(language: str, starts: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", README, re.S)
    return next(b for b in blocks if b.startswith(starts))


def test_quick_start_has_two_commands_and_ci_runs_the_test_one() -> None:
    quick = README.split("## Quick start")[1].split("\n## ")[0]
    commands = re.findall(r"```bash\n(.*?)\n```", quick, re.S)
    assert len(commands) == 2
    assert "autoshuikou search" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
def test_task_example_runs_end_to_end(tmp_path: Path) -> None:
    path = tmp_path / "my_task.py"
    path.write_text(_block("python", "# my_task.py"))
    task = load_task(f"{path}:make_task")
    assert task.name == "make_task"
    result = search(
        task, budget="300%", trials=3, out=tmp_path / "runs", measure_seconds=0.2, predict=False
    )
    assert result.feasible
    assert result.summary["baseline"]["metric"] > 0.8


@pytest.mark.slow
def test_space_example_is_valid_for_the_default_task(tmp_path: Path) -> None:
    from autoshuikou.study.prepare import bind_task_space

    space_text = _block("yaml", "prune:")
    parse_space(space_text, "readme.yaml")  # the schema accepts it
    file = tmp_path / "readme.yaml"
    file.write_text(space_text)
    bound = bind_task_space(load_task("digits"), file)  # every pattern matches the digits model
    assert bound.precision["fc"] == ("fp32",)
    assert set(bound.features) == {"layer3"}
    assert bound.prune["stem.0"].high == 0.25
