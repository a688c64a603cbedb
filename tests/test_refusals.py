"""Validate first, write after: a refused run leaves every existing file as it was, and
what no plan can meet is refused before any work."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from autoshuikou.cli import EXIT_USER_ERROR, main
from autoshuikou.study.storage import journal_storage

pytestmark = pytest.mark.slow

NAME = "refusals"


def search(out: Path, task: str, *extra: str) -> list[str]:
    return [
        "search",
        "--task",
        task,
        "--out",
        str(out),
        "--trials",
        "2",
        "--refine",
        "0",
        "--no-predict",
        "--measure-seconds",
        "0.1",
        "--budget",
        "300%",
        *extra,
    ]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def other_model(tmp_path: Path) -> str:
    """A task file whose teacher has other weights (trained one epoch longer)."""
    path = tmp_path / "other_task.py"
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from conftest import make_tiny_task\n"
        "def make_task():\n"
        "    return make_tiny_task(train_epochs=4)\n"
    )
    return f"{path}:make_task"


def test_refused_runs_change_no_file(
    tmp_path: Path, tiny_task_file: str, other_model: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    assert main(search(out, tiny_task_file, "--study-name", NAME)) == 0
    before = snapshot(out)
    refused = {
        "an accuracy floor the study was not made for": (
            search(out, tiny_task_file, "--study-name", NAME, "--min-accuracy", "99%"),
            "min_accuracy: study has null",
        ),
        "another teacher": (
            search(out, other_model, "--study-name", NAME),
            "model: study has",
        ),
        "other timing settings": (
            search(out, tiny_task_file, "--study-name", NAME, "--threads", "2"),
            "hardware.threads: study has 1",
        ),
        "an unreachable database": (
            search(
                out,
                tiny_task_file,
                "--study-name",
                NAME,
                "--storage",
                "postgresql://nobody:pw@127.0.0.1:1/nodb",
            ),
            "cannot use the database",
        ),
    }
    capsys.readouterr()
    for why, (argv, said) in refused.items():
        assert main(argv) == EXIT_USER_ERROR, why
        err = capsys.readouterr().err
        assert said in err, (why, err)
        assert snapshot(out) == before, f"{why}: a refused run changed files"


def test_an_accuracy_floor_above_what_the_metric_reaches_is_refused_before_any_trial(
    tmp_path: Path, tiny_task_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs"
    argv = search(out, tiny_task_file, "--study-name", NAME, "--min-accuracy", "150%")
    assert main(argv) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert "above the most it can reach (1)" in err
    assert "how to fix: give at most 1" in err
    # Refused before the baseline: no study, no settings, nothing measured, nothing made.
    assert not (out / NAME).exists()


def test_a_study_of_another_format_is_refused_with_the_difference_named(tmp_path: Path) -> None:
    import optuna

    from autoshuikou.errors import UserError
    from autoshuikou.study.storage import STUDY_FORMAT, check_joinable

    storage = journal_storage(tmp_path)
    old = optuna.create_study(study_name="old", storage=storage)
    old.set_user_attr("fingerprint", {"task": "tiny", "version": "0.1.0"})  # before formats
    with pytest.raises(
        UserError, match=f"study format 1; this version writes format {STUDY_FORMAT}"
    ):
        check_joinable(storage, "old", {"task": "tiny", "version": "0.1.0", "format": STUDY_FORMAT})
    check_joinable(storage, "new", {"format": STUDY_FORMAT})  # no such study: nothing to refuse
