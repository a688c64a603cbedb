"""The command line as a user meets it: exit codes, one clear message, no damage."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoshuikou.study.storage import journal_storage
from autoshuikou.util import read_json

pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autoshuikou", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], text: str) -> None:
    assert result.returncode == 2, result.stderr
    assert text in result.stderr
    assert "how to fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_unparseable_budget(tmp_path: Path) -> None:
    assert_clean_error(
        cli("search", "--budget", "fast", cwd=tmp_path), "cannot read the latency budget 'fast'"
    )
    assert not (tmp_path / "runs").exists()


def test_missing_task_file(tmp_path: Path) -> None:
    assert_clean_error(
        cli("search", "--task", "nope.py:make", cwd=tmp_path), "task file nope.py does not exist"
    )


def test_task_function_that_raises(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def make():\n    raise ValueError('dataset path not set')\n")
    result = cli("search", "--task", "bad.py:make", cwd=tmp_path)
    assert_clean_error(result, "raised ValueError: dataset path not set")
    verbose = cli("--verbose", "search", "--task", "bad.py:make", cwd=tmp_path)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr


def test_malformed_space(tmp_path: Path, tiny_task_file: str) -> None:
    (tmp_path / "space.yaml").write_text("prune: {default: [\n")
    result = cli("search", "--task", tiny_task_file, "--space", "space.yaml", cwd=tmp_path)
    assert_clean_error(result, "space.yaml: not valid YAML")


def test_file_task_search_show_and_no_feasible(tmp_path: Path, tiny_task_file: str) -> None:
    args = (
        "--task",
        tiny_task_file,
        "--no-predict",
        "--refine",
        "0",
        "--measure-seconds",
        "0.2",
        "--study-name",
        "t",
    )
    ok = cli("search", *args, "--trials", "3", "--budget", "300%", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "baseline fp32" in ok.stdout and "Pareto-optimal models" in ok.stdout
    summary = read_json(tmp_path / "runs" / "t" / "summary.json")
    assert summary["trials_complete"] == 3 and summary["pareto"]
    shown = cli("show", "runs/t", cwd=tmp_path)
    assert shown.returncode == 0
    table, _, settings = shown.stdout.partition("\nsettings (")
    assert ok.stdout.rstrip().endswith(table.rstrip())  # the same table as at the end
    assert "budget: 300%" in settings and "trials: 3" in settings  # and the run's config

    # A metric floor no model can reach (top-1 above 1): refused before any trial.
    none = cli(
        "search",
        *args[:5],
        "--trials",
        "2",
        "--budget",
        "300%",
        "--min-accuracy",
        "1.5",
        "--study-name",
        "impossible",
        cwd=tmp_path,
    )
    assert none.returncode == 2, none.stderr
    assert "above the most it can reach (1)" in none.stderr
    assert "study impossible:" not in none.stdout  # no trial ran


def test_ctrl_c_keeps_finished_trials_and_rerun_resumes(
    tmp_path: Path, tiny_task_file: str
) -> None:
    args = [
        "search",
        "--task",
        tiny_task_file,
        "--no-predict",
        "--refine",
        "0",
        "--measure-seconds",
        "0.2",
        "--budget",
        "300%",
        "--study-name",
        "c",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoshuikou", *args, "--trials", "50"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    trials = tmp_path / "runs" / "c" / "trials"
    deadline = time.time() + 300
    while (
        time.time() < deadline
        and len([p for p in trials.glob("[0-9]*")] if trials.exists() else []) < 3
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    # Count from the study: a trial whose files were just renamed into place when the
    # signal came is recorded failed (and retried on rerun), not finished.
    study = optuna.load_study(study_name="c", storage=journal_storage(tmp_path / "runs" / "c"))
    done = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert done >= 2
    rerun = cli(*args, "--trials", str(done + 1), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{done} of {done + 1} trials done" in rerun.stdout
    assert read_json(tmp_path / "runs" / "c" / "summary.json")["trials_complete"] == done + 1
