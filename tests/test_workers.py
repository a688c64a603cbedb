"""Several workers on one study: PostgreSQL and the journal file, exact totals, dead workers."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoshuikou.errors import UserError
from autoshuikou.study.front import counted_trials
from autoshuikou.study.storage import journal_storage, make_storage
from autoshuikou.util import read_json

pytestmark = pytest.mark.slow

WORKER_ARGS = ["--no-predict", "--refine", "0", "--measure-seconds", "0.1", "--budget", "300%"]


def start_worker(cwd: Path, task: str, trials: int, storage: str | None) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "autoshuikou",
        "search",
        "--task",
        task,
        "--trials",
        str(trials),
        "--study-name",  # the test folder's name: the session's database holds every test's study
        cwd.name,
        *WORKER_ARGS,
    ]
    if storage:
        cmd += ["--storage", storage]
    # faulthandler: a worker stopped with SIGABRT prints every thread's stack, so a hang
    # in a test shows where it hung.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    return subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def load(cwd: Path, storage: str | None) -> optuna.Study:
    return optuna.load_study(
        study_name=cwd.name, storage=make_storage(storage, cwd / "runs" / cwd.name)
    )


def check_study(study: optuna.Study, total: int) -> None:
    # The total counts every evaluated plan: trained, or screened out part-way.
    assert len(counted_trials(study)) == total
    trained = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    references = [t.user_attrs.get("reference") for t in trained]
    assert references.count("fp32") == 1 and references.count("int8") == 1


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_two_workers_complete_an_exact_total(
    backend: str, tmp_path: Path, tiny_task_file: str, request: pytest.FixtureRequest
) -> None:
    storage = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    workers = [start_worker(tmp_path, tiny_task_file, 20, storage) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    study = load(tmp_path, storage)
    check_study(study, 20)
    assert len({t.user_attrs.get("worker") for t in study.trials} - {None}) == 2  # both did work
    assert read_json(tmp_path / "runs" / tmp_path.name / "summary.json")["pareto"]


def _wait_for_running_trial(
    tmp_path: Path, worker: subprocess.Popen[str], timeout: float = 120
) -> None:
    """Wait until the worker is inside a trial: its temporary trial folder exists."""
    trials = tmp_path / "runs" / tmp_path.name / "trials"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"the worker ended early: {worker.communicate()[1][-3000:]}")
        if trials.exists() and list(trials.glob(".*.tmp")):
            return
        time.sleep(0.05)
    raise AssertionError("the worker never started a trial")


def _wait_for_trial_of(
    tmp_path: Path, storage: str | None, worker: subprocess.Popen[str], timeout: float = 120
) -> None:
    """Wait until the study holds a RUNNING trial tagged with ``worker``'s pid."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if worker.poll() is not None:
            raise AssertionError(f"the worker ended early: {worker.communicate()[1][-3000:]}")
        running = load(tmp_path, storage).get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if any(str(t.user_attrs.get("worker", "")).endswith(f":{worker.pid}") for t in running):
            return
        time.sleep(0.02)
    raise AssertionError("the worker never ran a trial of its own")


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_a_killed_worker_loses_nothing(
    backend: str, tmp_path: Path, tiny_task_file: str, request: pytest.FixtureRequest
) -> None:
    storage = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    victim = start_worker(tmp_path, tiny_task_file, 8, storage)
    _wait_for_running_trial(tmp_path, victim)
    survivor = start_worker(tmp_path, tiny_task_file, 8, storage)
    time.sleep(1.0)
    # Killed inside one of its trials (a tiny trial can end within that second).
    _wait_for_trial_of(tmp_path, storage, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    try:
        out, err = survivor.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        survivor.send_signal(signal.SIGABRT)  # stacks to stderr (faulthandler)
        out, err = survivor.communicate()
    assert survivor.returncode == 0, (out[-3000:], err[-6000:])
    study = load(tmp_path, storage)
    check_study(study, 8)
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    # A killed trial is the victim's, or untagged: the victim died between creating it and
    # tagging it (an orphan, failed after the grace period). None is the survivor's.
    owners = {str(t.user_attrs.get("worker", "")).rpartition(":")[2] for t in killed}
    assert killed and owners <= {str(victim.pid), ""}, owners
    retried = {
        t.system_attrs.get("failed_trial") for t in study.trials if t.state == TrialState.COMPLETE
    }
    assert {t.number for t in killed} <= retried  # each killed trial's plan ran again
    # Every completed trial's files are whole: no temporary folders became trials.
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        assert (
            read_json(
                tmp_path
                / "runs"
                / tmp_path.name
                / "trials"
                / f"{trial.number:04d}"
                / "metrics.json"
            )["trial"]
            == trial.number
        )


def test_a_worker_on_other_hardware_settings_is_refused(
    tmp_path: Path, tiny_task_file: str
) -> None:
    first = start_worker(tmp_path, tiny_task_file, 2, None)
    assert first.wait(timeout=300) == 0
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "autoshuikou",
            "search",
            "--task",
            tiny_task_file,
            "--trials",
            "3",
            "--threads",
            "2",
            "--study-name",
            tmp_path.name,
            *WORKER_ARGS,
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert other.returncode == 2
    assert "hardware.threads: study has 1, this worker has 2" in other.stderr


def test_unreachable_database_and_damaged_journal(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot use the database"):
        make_storage("postgresql://nobody:secret@127.0.0.1:1/none", tmp_path)
    with pytest.raises(UserError, match="unsupported --storage"):
        make_storage("mysql://x", tmp_path)
    journal = tmp_path / "run" / "study.journal"
    journal.parent.mkdir()
    journal.write_text("this is not a journal\n{}\n")  # a bad line with more after it
    with pytest.raises(UserError, match="cannot be"):
        storage = make_storage(None, tmp_path / "run")
        optuna.load_study(study_name="x", storage=storage)


def test_trials_of_dead_workers_are_failed_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import autoshuikou.study.storage as storage_module
    from autoshuikou.study.workers import THIS_WORKER, StaleWatch, fail_gone_workers, mark_running

    storage = make_storage(None, tmp_path)
    study = optuna.create_study(storage=storage, directions=["maximize"])
    code = "import json; from autoshuikou.study.workers import THIS_WORKER as W; print(json.dumps(W.to_attr()))"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    x = {"x": optuna.distributions.FloatDistribution(0, 1)}
    tagged = study.ask(x)
    mark_running(tagged)
    tagged.set_user_attr("worker_id", json.loads(dead.stdout))  # a process that has exited
    orphan = study.ask(x)  # died before its objective
    alive = study.ask(x)
    mark_running(alive)  # this very process
    assert alive.user_attrs["worker_id"] == THIS_WORKER.to_attr()

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert fail_gone_workers(study, storage, StaleWatch(), running) == [tagged.number]
    assert storage_module.fail_orphaned_trials(study, storage) == []  # too young for an orphan
    monkeypatch.setattr(storage_module, "GRACE_SECONDS", 0)
    assert storage_module.fail_orphaned_trials(study, storage) == [orphan.number]

    states = {t.number: t.state for t in study.trials}
    assert states[tagged.number] == states[orphan.number] == TrialState.FAIL
    assert states[alive.number] == TrialState.RUNNING
    retries = [t for t in study.trials if t.state == TrialState.WAITING]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [tagged.number, orphan.number]
    assert {t.params["x"] for t in retries} == {tagged.params["x"], orphan.params["x"]}


def test_a_stale_journal_lock_can_expire_with_a_relative_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Optuna's journal lock is a symlink to the journal; its grace period (which frees the
    # lock of a worker killed while holding it) needs the link to resolve. With a relative
    # path it dangled, and the other workers waited forever.
    monkeypatch.chdir(tmp_path)
    storage = journal_storage(Path("runs") / "s")
    lock = storage._backend._lock  # type: ignore[attr-defined]
    assert lock.acquire()
    try:
        assert os.path.exists(lock._lock_file), "the lock symlink does not resolve"
        assert os.stat(lock._lock_file).st_mtime > 0  # what the grace period reads
    finally:
        lock.release()


def test_workers_creating_the_tables_at_once_retry_instead_of_failing() -> None:
    import sqlalchemy.exc

    from autoshuikou.study.storage import _schema_race

    class DriverError(Exception):
        def __init__(self, pgcode: str) -> None:
            self.pgcode = pgcode

    # A duplicate table (42P07) or object (42710) is the other worker's CREATE: retried.
    for code in ("42P07", "42710", "23505"):
        assert _schema_race(sqlalchemy.exc.ProgrammingError("CREATE", {}, DriverError(code)))
    # A refused login (28P01) or an unreachable server is not: reported at once.
    assert not _schema_race(sqlalchemy.exc.OperationalError("connect", {}, DriverError("28P01")))
