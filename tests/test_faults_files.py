"""File faults as a user meets them: a damaged or old run file, a deleted model, a full disk,
a torn journal, a planted lock link. Each ends in a non-zero exit and one message (no
traceback), and after the fault is repaired a rerun completes."""

import contextlib
import io
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoshuikou.cli import main
from autoshuikou.errors import UserError
from autoshuikou.report.summary import load_summary
from autoshuikou.report.verify import verify_run
from autoshuikou.study.storage import journal_storage
from autoshuikou.tasks import Task
from autoshuikou.util import drop_torn_tail, file_lock, read_json, require

STUDY = "t"
SEARCH = [
    "--no-predict",
    "--refine",
    "0",
    "--measure-seconds",
    "0.1",
    "--budget",
    "300%",
    "--study-name",
    STUDY,
]
TASK_FILE = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_tiny_task

def make_task():
    return make_tiny_task()
"""


def cli(
    *args: str, cwd: Path, preexec_fn: Callable[[], None] | None = None, child: bool = False
) -> subprocess.CompletedProcess[str]:
    """The command's exit code and output: in a child (``child``, or where ``preexec_fn``
    limits it), else in this process (seconds faster: no new interpreter importing torch)."""
    if child or preexec_fn is not None:
        command = [sys.executable, "-m", "autoshuikou", *args]
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=600, preexec_fn=preexec_fn
        )
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def search(
    cwd: Path, trials: int, preexec_fn: Callable[[], None] | None = None
) -> subprocess.CompletedProcess[str]:
    task = f"{cwd.parent / 'task.py'}:make_task"
    args = ("search", "--task", task, "--trials", str(trials), *SEARCH, "--out", "runs")
    # In a fresh interpreter: the search trains the teacher, whose weights (and so the
    # study's fingerprint) must not depend on what earlier tests did to torch's state.
    return cli(*args, cwd=cwd, preexec_fn=preexec_fn, child=True)


def assert_one_message(result: subprocess.CompletedProcess[str], text: str, code: int) -> None:
    """Exit ``code``; on stderr one ``error:`` line holding ``text`` (and its how-to-fix)."""
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) in (1, 2) and lines[0].startswith("error: "), result.stderr
    assert text in lines[0], lines[0]
    assert len(lines) == 1 or lines[1].startswith("  how to fix: "), lines


def assert_completes(cwd: Path, trials: int, result: subprocess.CompletedProcess[str]) -> None:
    """The rerun finished the study: ``trials`` trials counted, none left RUNNING."""
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name=STUDY, storage=journal_storage(cwd / "runs" / STUDY))
    states = [t.state for t in study.trials]
    assert TrialState.RUNNING not in states
    assert read_json(cwd / "runs" / STUDY / "summary.json")["trials_complete"] == trials


def assert_verified(cwd: Path, task: Task) -> None:
    """verify (in this process: faster) runs to the end; only timing may drift on a busy machine."""
    rows = verify_run(cwd / "runs" / STUDY, task=task, seconds=0.05)
    assert rows and all(row["metric"] and row["counts"] for row in rows), rows


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny finished run for the module: ``<root>/run/runs/t``."""
    root = tmp_path_factory.mktemp("faults")
    (root / "task.py").write_text(TASK_FILE.format(tests=str(Path(__file__).parent)))
    (root / "run").mkdir()
    result = search(root / "run", 4)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.fixture
def cwd(finished: Path, tmp_path: Path) -> Path:
    """A copy of the finished run, for one test to damage (beside the task file)."""
    shutil.copy(finished.parent / "task.py", tmp_path / "task.py")
    shutil.copytree(finished, tmp_path / "run", symlinks=True)
    return tmp_path / "run"


def front_trial(cwd: Path) -> tuple[int, Path]:
    """A Pareto trial's number and its model."""
    point = read_json(cwd / "runs" / STUDY / "summary.json")["pareto"][0]
    return point["trial"], cwd / "runs" / STUDY / point["path"]


def test_damaged_summary_for_show(cwd: Path) -> None:
    summary = cwd / "runs" / STUDY / "summary.json"
    saved = summary.read_text()
    summary.write_text(saved[:200])  # cut short
    assert_one_message(cli("show", "runs/t", cwd=cwd), "summary.json is damaged: not valid JSON", 2)
    # Restored (a rerun of the search writes it again too: test_full_disk_then_rerun).
    summary.write_text(saved)
    assert cli("show", "runs/t", cwd=cwd).returncode == 0


def test_truncated_metrics_for_verify_and_show(cwd: Path, tiny_task: Task) -> None:
    _, model = front_trial(cwd)
    metrics = model.parent / "metrics.json"
    saved = metrics.read_bytes()
    metrics.write_bytes(saved[: len(saved) // 2])
    verify = cli("verify", "runs/t", "--seconds", "0.05", cwd=cwd)
    assert_one_message(verify, f"{metrics.relative_to(cwd)} is damaged: not valid JSON", 2)
    assert cli("show", "runs/t", cwd=cwd).returncode == 0  # show reads the summary only
    metrics.write_bytes(saved)
    assert_verified(cwd, tiny_task)


def test_old_summary_missing_a_key(cwd: Path) -> None:
    summary = cwd / "runs" / STUDY / "summary.json"
    saved = summary.read_text()
    old = json.loads(saved)
    del old["budget_ms"]
    del old["pareto"][0]["model_sha256"]
    summary.write_text(json.dumps(old))
    for command in ("show", "verify"):
        assert_one_message(cli(command, "runs/t", cwd=cwd), "summary.json lacks budget_ms", 2)
    old["budget_ms"] = json.loads(saved)["budget_ms"]
    summary.write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"lacks pareto\[0\].model_sha256"):
        load_summary(cwd / "runs" / STUDY)
    summary.write_text(saved)
    assert cli("show", "runs/t", cwd=cwd).returncode == 0


def test_deleted_model_for_verify(cwd: Path, tiny_task: Task) -> None:
    trial, model = front_trial(cwd)
    saved = model.read_bytes()
    model.unlink()
    verify = cli("verify", "runs/t", "--seconds", "0.05", cwd=cwd)
    assert_one_message(verify, f"trial {trial}: {model.relative_to(cwd)} is missing", 1)
    assert f"trial {trial}: FAILED, missing" in verify.stdout
    assert "NOT all" in verify.stdout  # the other models were verified
    model.write_bytes(saved)
    assert_verified(cwd, tiny_task)


def _file_size_limit(limit: int) -> Callable[[], None]:
    def limited() -> None:  # in the child: a write past ``limit`` bytes fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return limited


def test_full_disk_then_rerun(cwd: Path) -> None:
    # Room for any file as large as the run's largest, but not for the journal (about 6 kB
    # a trial) to grow by 4 more trials: it fills up mid-write, as a full disk stops it.
    largest = max(f.stat().st_size for f in cwd.rglob("*") if f.name != "study.journal")
    full = search(cwd, 10, preexec_fn=_file_size_limit(largest + 1024))
    assert_one_message(full, "File too large", 1)
    assert "free space" in full.stderr and "resumes" in full.stderr
    assert_completes(cwd, 10, search(cwd, 10))


def test_torn_journal_line(cwd: Path) -> None:
    journal = cwd / "runs" / STUDY / "study.journal"
    with open(journal, "ab") as f:  # as a worker killed mid-write leaves it
        f.write(b'{"op_code":8,"worker_id":"w","trial_id":3,"user_attr":{"wor')
    assert_completes(cwd, 5, search(cwd, 5))


# Units: no search needed.


def test_private_lock_refuses_links_and_is_0600(tmp_path: Path) -> None:
    folder = tmp_path / "locks"
    lock, how = folder / "latency.lock", "set AUTOSHUIKOU_LATENCY_LOCK"
    with file_lock(lock, private=how):
        pass
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    lock.unlink()
    target = tmp_path / "victim"
    target.write_text("keep")
    lock.symlink_to(target)
    refused = pytest.raises(UserError, match="is a symbolic link: refusing to follow it")
    with refused, file_lock(lock, shared=True, private=how):
        pass
    assert target.read_text() == "keep" and stat.S_IMODE(target.stat().st_mode) != 0o600
    lock.unlink()
    folder.chmod(0o777)  # anyone could plant a file there
    with (
        pytest.raises(UserError, match="can be written by other users"),
        file_lock(lock, private=how),
    ):
        pass


def test_latency_lock_is_per_user() -> None:
    env = {k: v for k, v in os.environ.items() if k != "AUTOSHUIKOU_LATENCY_LOCK"}
    code = "from autoshuikou.measure.latency import LOCK_PATH; print(LOCK_PATH)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert f"autoshuikou-{os.getuid()}/latency.lock" in out.stdout


def test_read_json_and_require_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    with pytest.raises(FileNotFoundError):
        read_json(path)
    path.write_text("")
    with pytest.raises(UserError, match=r"plan\.json is damaged: empty"):
        read_json(path)
    path.write_text('{\n  "a": 1,\n')
    with pytest.raises(UserError, match="not valid JSON at line 3"):
        read_json(path)
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UserError, match="is damaged"):
        read_json(path)
    with pytest.raises(UserError, match=r"plan\.json lacks a\.b"):
        require({"a": {}}, ("a.b",), path)
    with pytest.raises(UserError, match="its top level is not a JSON object"):
        require([], ("a",), path)
    assert require({"a": {"b": 1}}, ("a.b",), path) == {"a": {"b": 1}}


def test_drop_torn_tail(tmp_path: Path) -> None:
    log = tmp_path / "study.journal"
    assert drop_torn_tail(log) == 0  # none yet
    log.write_bytes(b'{"a":1}\n{"b":2}\n')
    assert drop_torn_tail(log) == 0
    log.write_bytes(b'{"a":1}\n{"b":2}\n{"c":')
    assert drop_torn_tail(log) == 5
    assert log.read_bytes() == b'{"a":1}\n{"b":2}\n'
    log.write_bytes(b'{"c":')
    assert drop_torn_tail(log) == 5 and log.read_bytes() == b""


def test_load_refuses_a_relative_task_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from autoshuikou.deploy import load

    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"metric": 1.0, "runtime": {}}))
    (folder / "plan.json").write_text(json.dumps({"prune": {}, "precision": {}}))
    (folder / "config.yaml").write_text("task: evil.py:make\n")
    (tmp_path / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\ndef make(): pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="by a relative path") as refused:
        load(folder)
    assert "absolute path" in refused.value.hint and "module name" in refused.value.hint
    assert not (tmp_path / "ran").exists()
