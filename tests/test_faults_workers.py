"""Fault injection, the worker side: workers killed at chosen points, stale trials of other
hosts, a waiting worker's bound. Each asserts that no completed trial is lost, none is left
RUNNING, and a rerun completes the study."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_workers import WORKER_ARGS

from autoshuikou.study.front import counted_trials
from autoshuikou.study.storage import journal_storage
from autoshuikou.study.workers import (
    GRACE_SECONDS,
    HEARTBEAT_ATTR,
    IDENTITY_ATTR,
    WORKER_ATTR,
    StaleWatch,
    WorkerIdentity,
)
from autoshuikou.util import read_json

pytestmark = pytest.mark.slow

NAME = "faults"  # every test's study: each works on its own copy of one finished run


def start_worker(cwd: Path, task: str, trials: int, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "autoshuikou", "search", "--task", task]
    cmd += ["--trials", str(trials), "--study-name", NAME, *WORKER_ARGS, *extra]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def load(cwd: Path) -> optuna.Study:
    return optuna.load_study(study_name=NAME, storage=journal_storage(cwd / "runs" / NAME))


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished study of two trials (the references), and the task file it ran."""
    from conftest import TINY_TASK_FILE

    folder = tmp_path_factory.mktemp("two-trials")
    task = folder / "tiny_task.py"
    task.write_text(TINY_TASK_FILE.format(tests=str(Path(__file__).parent)))
    spec = f"{task}:make_task"
    finish(start_worker(folder, spec, 2))
    return folder, spec


@pytest.fixture
def run(two_trials: tuple[Path, str], tmp_path: Path) -> tuple[Path, str]:
    """(a folder holding a copy of the finished run, the task spec)."""
    shutil.copytree(two_trials[0] / "runs", tmp_path / "runs")
    return tmp_path, two_trials[1]


def wait_for_a_trial_inside(cwd: Path, worker: subprocess.Popen[str]) -> None:
    """Wait until ``worker`` is inside a trial: a scratch folder of a trial exists."""
    trials = cwd / "runs" / NAME / "trials"
    deadline = time.time() + 120
    while time.time() < deadline:
        assert worker.poll() is None, worker.communicate()[1][-3000:]
        if list(trials.glob(".*.tmp")):
            return
        time.sleep(0.05)
    raise AssertionError("the worker never started a trial")


def finish(worker: subprocess.Popen[str], timeout: float = 300) -> tuple[str, str]:
    out, err = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, (out[-3000:], err[-3000:])
    return out, err


def check_whole(tmp_path: Path, total: int) -> optuna.Study:
    """The study holds ``total`` counted trials, none RUNNING, and every completed trial's
    folder is whole; nothing a killed trial left is lying around."""
    study = load(tmp_path)
    assert len(counted_trials(study)) == total
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    trials = tmp_path / "runs" / NAME / "trials"
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        assert read_json(trials / f"{trial.number:04d}" / "metrics.json")["trial"] == trial.number
    assert not list(trials.glob(".*"))  # no scratch folders
    failed = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))}
    assert not {int(p.name) for p in trials.iterdir()} & failed  # no half-recorded trials
    return study


def dead_identity() -> dict[str, object]:
    """The identity of a worker process on this machine that has since exited."""
    code = (
        "import json; from autoshuikou.study.workers import THIS_WORKER; "
        "print(json.dumps(THIS_WORKER.to_attr()))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def take_a_queued_trial(study: optuna.Study, identity: dict[str, object]) -> optuna.Trial:
    """A trial RUNNING under ``identity``, as a worker that took a queued plan leaves it."""
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, f"{identity['host']}:{identity['pid']}")
    trial.set_user_attr(IDENTITY_ATTR, identity)
    trial.set_user_attr(HEARTBEAT_ATTR, time.time())
    return trial


def test_killed_during_fine_tuning_the_rerun_completes(run: tuple[Path, str]) -> None:
    cwd, task = run
    victim = start_worker(cwd, task, 4)
    wait_for_a_trial_inside(cwd, victim)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    out, _ = finish(start_worker(cwd, task, 4))
    study = check_whole(cwd, 4)
    killed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    assert len(killed) == 1 and "of gone workers failed" in out
    retried = {t.system_attrs.get("failed_trial") for t in study.trials}
    assert killed[0].number in retried  # its plan ran again


def test_killed_between_writing_a_model_and_recording_it(run: tuple[Path, str]) -> None:
    cwd, task = run
    # What a worker killed right after moving its files in place leaves: the trial's whole
    # folder, and the trial RUNNING under a process that is gone.
    orphan = take_a_queued_trial(load(cwd), dead_identity())
    trials = cwd / "runs" / NAME / "trials"
    (trials / f"{orphan.number:04d}").mkdir()
    (trials / f"{orphan.number:04d}" / "model.onnx").write_bytes(b"half a model")
    (trials / f".{orphan.number + 1:04d}.tmp").mkdir()  # and a scratch folder, say
    out, _ = finish(start_worker(cwd, task, 3))
    study = check_whole(cwd, 3)
    assert study.trials[orphan.number].state == TrialState.FAIL  # failed at once: pid gone
    assert "left behind" in out


def test_killed_during_the_summary_the_rerun_writes_it(run: tuple[Path, str]) -> None:
    cwd, task = run
    victim = start_worker(cwd, task, 3)
    assert victim.stdout is not None
    for line in victim.stdout:  # the trials are done when the front is re-measured
        if line.startswith("re-measuring the"):
            os.kill(victim.pid, signal.SIGKILL)
            break
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    summary = cwd / "runs" / NAME / "summary.json"
    assert read_json(summary)["trials_complete"] == 2  # the first run's, not rewritten
    finish(start_worker(cwd, task, 3))
    check_whole(cwd, 3)
    assert read_json(summary)["trials_complete"] == 3  # no trial was run twice


def test_a_stale_trial_of_another_host_is_given_up_and_run_again(run: tuple[Path, str]) -> None:
    cwd, task = run
    # A worker on another host (its boot and pid mean nothing here) took a plan and went
    # silent: only its heartbeat can tell.
    foreign = {"host": "elsewhere", "boot": "another-boot", "pid": 1, "started": "1"}
    stale = take_a_queued_trial(load(cwd), foreign)
    started = time.monotonic()
    out, _ = finish(start_worker(cwd, task, 3))
    waited = time.monotonic() - started
    study = check_whole(cwd, 3)
    assert study.trials[stale.number].state == TrialState.FAIL
    assert stale.number in {t.system_attrs.get("failed_trial") for t in study.trials}
    assert "waiting for 1 trial(s) running on other workers (trial" in out
    assert "on elsewhere:1" in out
    assert GRACE_SECONDS < waited < GRACE_SECONDS + 120


def test_a_waiting_worker_gives_up_after_its_wait_timeout(run: tuple[Path, str]) -> None:
    cwd, task = run
    alive = take_a_queued_trial(
        load(cwd), {"host": "elsewhere", "boot": "b", "pid": 1, "started": "1"}
    )
    stop = threading.Event()

    def beat() -> None:  # a live worker elsewhere, still busy
        while not stop.wait(0.5):
            alive.set_user_attr(HEARTBEAT_ATTR, time.time())

    beater = threading.Thread(target=beat)
    beater.start()
    try:
        started = time.monotonic()
        waiter = start_worker(cwd, task, 3, "--wait-timeout", "3")
        out, err = waiter.communicate(timeout=300)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        beater.join()
    assert waiter.returncode == 2, err[-3000:]
    assert err.startswith("error: gave up after waiting 3 s"), err
    assert "Traceback" not in err
    assert "waiting at most 3 s" in out
    assert elapsed < 3 + 60  # start-up, then at most the stated wait
    assert load(cwd).trials[alive.number].state == TrialState.RUNNING  # not given up


def test_gone_workers_are_told_apart_from_live_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    import autoshuikou.study.workers as workers

    here = WorkerIdentity.of_this_process()
    dead = WorkerIdentity.from_attr(dead_identity())
    assert dead is not None and dead.is_gone()  # this machine, this boot, process gone
    assert not here.is_gone()
    assert WorkerIdentity(here.host, here.boot, here.pid, "1").is_gone()  # pid reused since
    assert not WorkerIdentity("elsewhere", "b", 1, "1").is_gone()  # elsewhere: heartbeats tell

    def running(number: int, beat: float, identity: WorkerIdentity) -> optuna.trial.FrozenTrial:
        return optuna.trial.FrozenTrial(
            number=number,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=None,
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={HEARTBEAT_ATTR: beat, IDENTITY_ATTR: identity.to_attr()},
            system_attrs={},
            intermediate_values={},
            trial_id=number,
        )

    elsewhere = WorkerIdentity("elsewhere", "b", 1, "1")
    watch = StaleWatch()
    now = time.time()
    assert not watch.gone(running(0, now, elsewhere))  # first sight of a fresh beat
    monkeypatch.setattr(workers, "GRACE_SECONDS", 0.2)
    time.sleep(0.3)
    assert watch.gone(running(0, now, elsewhere))  # the same beat, 0.3 s later
    assert not watch.gone(running(0, now + 1, elsewhere))  # it moved: alive
    # Skewed clocks do not matter: a beat an hour "in the future" is judged by change alone.
    assert not watch.gone(running(1, now + 3600, elsewhere))
    assert watch.gone(running(2, now - 3600, elsewhere))  # an hour old at first sight
