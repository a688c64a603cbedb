"""Workers on several machines, each with its own --out, sharing one study: every machine
can refine, summarise and show the front, whose models' files are where they ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoshuikou.cli import EXIT_USER_ERROR, main
from autoshuikou.util import read_json

pytestmark = pytest.mark.slow


def test_a_machine_summarises_front_models_that_ran_on_another(
    tmp_path: Path, tiny_task_file: str, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "shared" / "study.journal"  # the one study both machines reach
    common = ["--task", tiny_task_file, "--study-name", "shared", "--storage", str(journal)]
    common += ["--no-predict", "--refine", "0", "--measure-seconds", "0.1", "--budget", "300%"]
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    assert main(["search", *common, "--out", str(first), "--trials", "2"]) == 0
    assert main(["search", *common, "--out", str(second), "--trials", "3"]) == 0
    summary = read_json(second / "shared" / "summary.json")
    elsewhere = [p for p in summary["pareto"] if p["path"] is None]
    here = [p for p in summary["pareto"] if p["path"] is not None]
    # The references ran on machine a: their records come from the study, not from files.
    assert {p["trial"] for p in elsewhere} <= {0, 1} and elsewhere
    assert all((second / "shared" / p["path"]).is_file() for p in here)
    capsys.readouterr()
    assert main(["show", str(second / "shared")]) == 0
    shown = capsys.readouterr().out
    assert f"trial {elsewhere[0]['trial']}" in shown and "on another machine" in shown
    code = main(
        [
            "export",
            str(second / "shared"),
            "--trial",
            str(elsewhere[0]["trial"]),
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == EXIT_USER_ERROR
    assert "ran on another machine" in capsys.readouterr().err
