"""The worker loop: reserve a trial under the lock, run it, wait for other workers (giving
up those that died), and refine the front at the end."""

from __future__ import annotations

import errno
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from autoshuikou.errors import UserError
from autoshuikou.interrupt import raise_if_interrupted
from autoshuikou.plan import Plan
from autoshuikou.study.front import best_text, counted, counted_trials, prune_artifacts
from autoshuikou.study.objectives import point, study_objectives
from autoshuikou.study.optuna_adapter import fail_trial
from autoshuikou.study.pareto import pareto_indices
from autoshuikou.study.record import TRIAL_PLAN_ATTR, TrialRecord, TrialTags
from autoshuikou.study.refine import (
    PLAN_ATTR,
    REFINE_ATTR,
    Candidate,
    auto_epochs,
    refine_targets,
    refined_plan,
    refinement_done,
    run_new_trial,
    within_reach,
)
from autoshuikou.study.run import Run
from autoshuikou.study.storage import (
    ReservationLock,
    fail_orphaned_trials,
    reservation_lock,
)
from autoshuikou.study.workers import (
    GRACE_SECONDS,
    Heartbeat,
    describe_running,
    fail_gone_workers,
    mark_running,
)

# A trial that fails on one of these stops the search at once, with the message for it.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


MAX_CONSECUTIVE_FAILURES = 3


# Trials that count towards --trials: trained and measured, or screened (fine-tuned briefly
# and scored). A plan rejected on latency alone (predicted, or measured untrained) costs
# seconds, so it does not use up the count (a tight budget would otherwise evaluate fewer
# plans than asked); MAX_REJECTED_IN_A_ROW stops a search that finds nothing else.
MAX_REJECTED_IN_A_ROW = 50


def _recover_dead_workers(run: Run, study: optuna.Study) -> None:
    """Fail and queue again the trials of workers that died, before counting."""
    storage = run.storage
    failed = fail_orphaned_trials(study, storage)
    if isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None:
        fail_stale_trials(study)  # the database's clock judges its own heartbeats
    else:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        failed += fail_gone_workers(study, storage, run.watch, running)
    if failed:
        run.progress.line(f"trial(s) {failed} of gone workers failed; their plans run again")


def sweep_leftovers(study: optuna.Study, trials_dir: Path) -> list[str]:
    """Remove what killed trials left in ``trials_dir``: scratch folders (.NNNN.tmp,
    .NNNN.screen) of trials no longer running, and whole folders of failed trials (a worker
    killed between moving its files in place and recording the trial). Returns their names."""
    if not trials_dir.is_dir():
        return []
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    swept = []
    for folder in trials_dir.iterdir():
        match = re.fullmatch(r"\.?(\d+)(\.tmp|\.screen)?", folder.name)
        if match is None or not folder.is_dir():
            continue
        state = states.get(int(match.group(1)))
        scratch = match.group(2) is not None
        if (scratch and state != TrialState.RUNNING) or (not scratch and state == TrialState.FAIL):
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder.name)
    return swept


def _wait_or_give_up(run: Run, running: list[FrozenTrial], since: float | None) -> float:
    """Wait a second for the trials other workers run; past ``wait_timeout`` give up with a
    message. Returns when the wait began."""
    config, now = run.config, time.monotonic()
    if since is None:
        run.progress.line(
            f"waiting for {len(running)} trial(s) running on other workers "
            f"({describe_running(running, run.watch)}); a worker whose heartbeat stops for "
            f"{GRACE_SECONDS} s is given up and its plan run here; waiting at most "
            f"{config.wait_timeout:.0f} s (--wait-timeout)"
        )
        since = now
    elif now - since > config.wait_timeout:
        raise UserError(
            f"gave up after waiting {config.wait_timeout:.0f} s for trial(s) still running "
            f"on other workers: {describe_running(running, run.watch)}",
            "they finish the study on their own; rerun later to write this run's summary, "
            "or give a longer --wait-timeout",
        )
    time.sleep(1.0)
    return since


TrialObjective = Callable[[Run, optuna.Trial], tuple[float, ...]]


class _Worker:
    """This worker's trials: each run under its heartbeat once reserved, and counted after
    (Optuna's callback) towards the failures and the latency rejections in a row."""

    def __init__(self, run: Run, objective: TrialObjective) -> None:
        self.run, self.objective = run, objective
        self.failures = self.rejected_in_a_row = 0
        self.disk_full: list[OSError] = []  # raised after the trial is recorded failed
        self.lock = reservation_lock(run.storage, run.ctx.run_dir, run.name)

    def going_on(self) -> bool:
        timeout = self.run.config.timeout
        return (
            self.failures < MAX_CONSECUTIVE_FAILURES
            and self.rejected_in_a_row < MAX_REJECTED_IN_A_ROW
            and (timeout is None or time.monotonic() - self.run.started < timeout)
        )

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.failures = self.failures + 1 if trial.state == TrialState.FAIL else 0
        rejected = trial.state == TrialState.PRUNED and not counted(trial)
        self.rejected_in_a_row = self.rejected_in_a_row + 1 if rejected else 0
        prune_artifacts(study, self.run.ctx.run_dir, self.run.ctx.artifact_name)
        self.run.progress.trial_done(
            trial.number, dict(trial.user_attrs), trial.state.name, best_text(study)
        )

    def run_one(self, trial: optuna.Trial) -> tuple[float, ...]:
        mark_running(trial)  # tagged before other workers may judge it
        self.lock.release()  # the trial now exists as RUNNING: other workers count it
        try:
            with Heartbeat(trial, self.run.storage):
                return self.objective(self.run, trial)
        except OSError as exc:
            if exc.errno in DISK_FULL:  # no later trial could write its files either
                self.disk_full.append(exc)
            raise

    def next_trial(self, study: optuna.Study) -> list[FrozenTrial] | None:
        """Under the lock: run one trial if the study still needs one (returns []), or
        the trials other workers are running when they are all it needs (None: done)."""
        self.lock.acquire()
        try:
            _recover_dead_workers(self.run, study)
            # One read for both counts: with two, a trial another worker finishes between
            # them is counted in neither, and one trial too many is started.
            trials = study.get_trials(deepcopy=False)
            finished = sum(counted(t) for t in trials)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            if finished >= self.run.config.trials:
                return None
            if finished + len(running) >= self.run.config.trials:
                return running
            study.optimize(
                self.run_one, n_trials=1, catch=(Exception,), callbacks=[self.after_trial]
            )
            if self.disk_full:
                raise self.disk_full[0]
            return []
        finally:
            self.lock.release()


def _begin(run: Run, study: optuna.Study, lock: ReservationLock) -> None:
    """Before the first trial: give up dead workers' trials, sweep what killed ones left."""
    lock.acquire()
    try:
        _recover_dead_workers(run, study)
        swept = sweep_leftovers(study, run.ctx.trials_dir)
    finally:
        lock.release()
    if swept:
        run.progress.line(f"removed what killed trials left behind: trials/{{{','.join(swept)}}}")
    done = len(counted_trials(study))
    run.progress.begin(run.config.trials, done)
    run.progress.line(
        f"study {run.name}: {done} of {run.config.trials} trials done"
        + ("" if done >= run.config.trials else "; running the rest")
    )


def run_trials(run: Run, study: optuna.Study, objective: TrialObjective) -> str | None:
    """Run trials until the study holds ``trials`` counted ones (over all workers), the
    timeout passes, or too many fail or are rejected in a row; then refine the front.
    Returns why it stopped early (None: it did not)."""
    worker = _Worker(run, objective)
    _begin(run, study, worker.lock)
    waiting_since: float | None = None
    while worker.going_on():
        raise_if_interrupted()
        running = worker.next_trial(study)
        if running is None:
            break
        if not running:
            waiting_since = None
            continue
        # The rest are running on other workers: wait, in case one dies and its trial returns.
        waiting_since = _wait_or_give_up(run, running, waiting_since)
    if worker.failures >= MAX_CONSECUTIVE_FAILURES:
        last = TrialTags.from_trial(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))[-1])
        raise UserError(
            f"{worker.failures} trials in a row failed; the last: {last.error or 'unknown'}",
            "run with --verbose to see the traceback; the study is saved and resumes on rerun",
        )
    raise_if_interrupted()
    if worker.rejected_in_a_row < MAX_REJECTED_IN_A_ROW:
        refine_front(run, study, worker.lock, worker.run_one, worker.after_trial)
        return None
    reason = (
        f"{worker.rejected_in_a_row} plans in a row were over the budget before training "
        "(predicted, or measured untrained): the sampler finds "
        "little else in this space; raise --budget or allow more pruning"
    )
    run.progress.line(f"stopped early: {reason}")
    return reason


def _refine_candidates(run: Run, study: optuna.Study, epochs: int) -> list[Candidate]:
    """The Pareto models among the search's own trials (no references, no refined trials)
    within the latency budget and within reach of the metric goal (``refine.within_reach``)
    whose plan trains fewer than ``epochs`` epochs."""
    ctx = run.ctx
    pool = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if {REFINE_ATTR, "reference"} & set(trial.user_attrs):
            continue
        record = TrialRecord.from_trial(trial)
        plan = trial.user_attrs[TRIAL_PLAN_ATTR]  # in the study: it may have run elsewhere
        if (
            trial.constraints.get("latency", 0.0) <= 0
            and within_reach(record.metric, ctx.min_metric, ctx.baseline.metric)
            and int(plan["distill"]["epochs"]) < epochs
        ):
            pool.append(trial)
    objectives = study_objectives(study)
    on_front = pareto_indices([point(t, objectives) for t in pool])
    return [
        Candidate(t.number, t.user_attrs["metric"], t.user_attrs["latency_ms"])
        for t in (pool[i] for i in on_front)
    ]


def refine_settings(run: Run) -> tuple[int, int]:
    """How many front models refinement trains, and with how many epochs: the config's,
    else the space's, else scaled to the data set (``refine.auto_epochs``)."""
    space = run.ctx.space.space
    models = space.refine.models if run.config.refine is None else run.config.refine
    epochs = space.refine.epochs if run.config.refine_epochs is None else run.config.refine_epochs
    if epochs is None:
        epochs = auto_epochs(run.ctx.task.train_batches(), space.epochs.high)
    return models, epochs


def refine_front(
    run: Run,
    study: optuna.Study,
    lock: ReservationLock,
    run_one: Callable[[optuna.Trial], tuple[float, ...]],
    after_trial: Callable[[optuna.Study, FrozenTrial], None],
) -> None:
    """Train the front models ``refine_targets`` picks again with the refine epochs (the
    config's, else the space's), one new trial each (see ``study.refine``), until done or the timeout passes (as
    for trials, none starts after it); a rerun resumes where it stopped."""
    models, epochs = refine_settings(run)
    timeout = run.config.timeout
    while models > 0 and (timeout is None or time.monotonic() - run.started < timeout):
        raise_if_interrupted()
        lock.acquire()
        try:
            trials = [t for t in study.get_trials(deepcopy=False) if REFINE_ATTR in t.user_attrs]
            for queued in (t for t in trials if t.state == TrialState.WAITING):
                # A dead worker's refinement queued again: it is run here, as a new trial.
                fail_trial(run.storage, study, queued.number)
            done = {t.user_attrs[REFINE_ATTR] for t in trials if refinement_done(t, epochs)}
            targets = refine_targets(_refine_candidates(run, study, epochs), models)
            todo = [n for n in targets if n not in done]
            if not todo:
                return
            original = study.get_trials(deepcopy=False)[todo[0]]  # a number is its index
            plan = refined_plan(Plan.from_dict(original.user_attrs[TRIAL_PLAN_ATTR]), epochs)
            run.progress.line(
                f"refining trial {todo[0]}: its plan again with {epochs} epochs "
                f"({len(targets) - len(todo) + 1} of {len(targets)})"
            )
            attrs = {PLAN_ATTR: plan.to_dict(), REFINE_ATTR: todo[0]}
            run_new_trial(study, run.storage, attrs, run_one, after_trial)  # releases the lock
        finally:
            lock.release()
