"""What a service's (or a job's) tasks say about its convergence: the model behind the
progress display of `service create/update/scale/rollback` (swarmctl.progress draws it).

Pure functions and small trackers over the service and its tasks, as one ListTasks poll
returns them, so every rule can be tested without a manager or a terminal:

- per slot (a global service: per node) the newest up-to-date task whose desired state
  is at most RUNNING; all slots running for `VERIFY_SECONDS` is convergence;
- giving up as soon as every slot that is not running has failed (or been rejected)
  `FAILURES_TO_GIVE_UP` times, with the tasks' distinct errors as notes;
- a rolling update (the service's update_status): while the manager watches the new
  tasks for the monitor period, the verify period is that; an update that paused, or
  that the manager rolled back, is an error;
- a job counts completions of its current run (the service's job_iteration) and is done
  when all are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from common import states
from common.api import objects_pb2, specs_pb2
from common.modes import JOB_MODES
from common.rollout import monitor_seconds, rollout_config
from common.timeutil import timestamp_seconds
from swarmctl.output import truncate_id

# How long every slot must stay running before the service counts as converged.
VERIFY_SECONDS = 1.0
# Give up once every slot that is not running has had this many failed/rejected tasks.
FAILURES_TO_GIVE_UP = 2

_FAILED = (states.FAILED, states.REJECTED)
_US = objects_pb2.UpdateStatus
_ROLLBACK_STATES = (
    _US.UPDATE_STATE_ROLLBACK_STARTED,
    _US.UPDATE_STATE_ROLLBACK_PAUSED,
    _US.UPDATE_STATE_ROLLBACK_COMPLETED,
)
_IN_PROGRESS = (_US.UPDATE_STATE_UPDATING, _US.UPDATE_STATE_ROLLBACK_STARTED)
_FINISHED = (_US.UPDATE_STATE_COMPLETED, _US.UPDATE_STATE_ROLLBACK_COMPLETED)
_ROLLED_BACK_DUE_TO = "update rolled back due to "


def is_up_to_date(task: objects_pb2.Task, service: objects_pb2.Service) -> bool:
    """The task was made from the service's current spec (not one an update replaces).

    A spec change that leaves the task template and ports alone (a scale) bumps the
    service's spec_version but keeps its tasks, so those count as up to date too.
    """
    if service.spec_version and task.spec_version >= service.spec_version:
        return True
    return task.spec == service.spec.task and task.endpoint == service.spec.endpoint


def _slot_key(task: objects_pb2.Task) -> str:
    return str(task.slot) if task.slot else task.node_id


def _age(task: objects_pb2.Task) -> tuple[float, float, int]:
    return (
        timestamp_seconds(task.meta.created_at),
        timestamp_seconds(task.status.timestamp),
        task.status.state,
    )


@dataclass(frozen=True)
class SlotProgress:
    """One slot (or, for a global service, one node): its newest task and its failures.

    `last_failure` is the slot's newest failed or rejected task: while the slot is not
    running, its error is what the slot's line shows (the replacement task would only
    show "new" or "pending" and hide why the slot is not converging).
    """

    label: str
    task: objects_pb2.Task | None
    failures: int = 0
    last_failure: objects_pb2.Task | None = None
    # A job's slot: done once its task completed; its bar runs on to COMPLETE.
    job: bool = False

    @property
    def running(self) -> bool:
        return self.task is not None and self.task.status.state == states.RUNNING

    @property
    def complete(self) -> bool:
        return self.job and self.task is not None and self.task.status.state == states.COMPLETE

    @property
    def done(self) -> bool:
        """Where this slot should be: running (a service) or complete (a job)."""
        return self.complete if self.job else self.running

    @property
    def declined(self) -> bool:
        """Its task ended and the restart policy will not replace it."""
        return self.task is not None and self.task.restart_declined


@dataclass(frozen=True)
class Convergence:
    """What one poll shows of a service: slots, running count, errors."""

    running: int
    desired: int
    slots: tuple[SlotProgress, ...]
    errors: tuple[str, ...] = ()
    global_mode: bool = False

    @property
    def converged(self) -> bool:
        if self.global_mode and self.desired == 0:
            return False
        return self.running == self.desired

    @property
    def hopeless(self) -> bool:
        """Every slot that is not running has failed twice or more (or will not restart)."""
        pending = [s for s in self.slots if not s.running]
        if not pending:
            return False
        return all(s.failures >= FAILURES_TO_GIVE_UP or s.declined for s in pending)

    outcome = "did not converge"

    def summary(self) -> str:
        return f"{self.running} out of {self.desired} tasks running"

    def hopeless_reason(self) -> str:
        unit = "node" if self.global_mode else "slot"
        return (
            f"{self.summary()}, and each {unit} not running has failed {FAILURES_TO_GIVE_UP} "
            "or more times"
        )

    def notes(self) -> list[str]:
        """The distinct task errors, or else the messages of the slots not running."""
        return _notes(self.errors, self.slots)


def _notes(errors: Sequence[str], slots: Iterable[SlotProgress]) -> list[str]:
    if errors:
        return list(errors)
    seen: dict[str, None] = {}
    for slot in slots:
        if slot.task is not None and not slot.done and slot.task.status.message:
            seen.setdefault(f"{slot.label}: {slot.task.status.message}", None)
    return list(seen)


def _awaits_replacement(task: objects_pb2.Task) -> bool:
    """The task ended and its slot waits for the restart policy's replacement (or, if the
    policy declined, stays empty): unlike a task shut down on purpose, it still counts."""
    return (
        task.HasField("restart_at")
        or task.restart_declined
        or (task.status.state in _FAILED and states.is_terminal(task.desired_state))
    )


def compute_convergence(
    service: objects_pb2.Service,
    tasks: Iterable[objects_pb2.Task],
    *,
    active_nodes: set[str] | None = None,
    positions: MutableMapping[str, int] | None = None,
) -> Convergence:
    """The convergence of `service` given all its tasks (history included).

    Per slot it takes the newest up-to-date task with desired state <= RUNNING, skipping
    tasks on nodes that are down (not in `active_nodes`, when given). `positions` maps
    slot numbers to the display rows 1..N and is kept across polls so rows stay put.
    """
    global_mode = service.spec.WhichOneof("mode") == "global"
    current = [t for t in tasks if is_up_to_date(t, service)]
    current.sort(key=_age)
    failures: dict[str, int] = {}
    last_failure: dict[str, objects_pb2.Task] = {}
    errors: dict[str, None] = {}
    latest: dict[str, objects_pb2.Task] = {}
    newest: dict[str, objects_pb2.Task] = {}
    for task in current:
        key = _slot_key(task)
        latest[key] = task
        if task.status.state in _FAILED:
            failures[key] = failures.get(key, 0) + 1
            last_failure[key] = task
        if task.status.err:
            errors.setdefault(" ".join(task.status.err.split()), None)
        if not states.is_runnable(task.desired_state):
            continue
        if active_nodes is not None and task.node_id and task.node_id not in active_nodes:
            continue
        newest[key] = task
    running = sum(1 for t in newest.values() if t.status.state == states.RUNNING)

    slots: list[SlotProgress]
    if global_mode:
        # One task per node: the nodes with a task meant to run, and those whose task
        # ended and waits for its replacement (a restart delay is no convergence).
        keys = set(newest)
        for key, task in latest.items():
            if key in newest or not _awaits_replacement(task):
                continue
            if active_nodes is None or key in active_nodes:
                keys.add(key)
        desired = len(keys)
        slots = [
            SlotProgress(
                truncate_id(key),
                newest.get(key) or latest[key],
                failures.get(key, 0),
                last_failure.get(key),
            )
            for key in sorted(keys)
        ]
    else:
        desired = service.spec.replicated.replicas
        rows = positions if positions is not None else {}
        # Slots get rows as they show up: with a runnable task, or with failed ones
        # (a slot waiting for its replacement still needs its error shown).
        for key in sorted(newest.keys() | last_failure.keys(), key=int):
            if key not in rows:
                free = sorted(set(range(1, desired + 1)) - set(rows.values()))
                if free:
                    rows[key] = free[0]
        # A row keeps its slot while the slot waits for a replacement task, so that
        # the failed task (and its error) stays on show.
        by_row = {row: key for key, row in rows.items() if key in latest}
        slots = []
        for row in range(1, desired + 1):
            label = f"{row}/{desired}"
            row_key = by_row.get(row)
            if row_key is None:
                slots.append(SlotProgress(label, None))
                continue
            shown = newest.get(row_key) or latest.get(row_key)
            slots.append(
                SlotProgress(label, shown, failures.get(row_key, 0), last_failure.get(row_key))
            )
    return Convergence(
        running=running,
        desired=desired,
        slots=tuple(slots),
        errors=tuple(errors),
        global_mode=global_mode,
    )


@dataclass(frozen=True)
class JobProgress:
    """What one poll shows of a job: completions of its current run, active tasks, slots.

    A replicated job has `total` completions to make, `concurrent` at a time; a global
    job one per node it has a task on (so `total` is that node count).
    """

    replicated: bool
    total: int
    completed: int
    active: int
    concurrent: int
    slots: tuple[SlotProgress, ...]
    errors: tuple[str, ...] = ()

    outcome = "did not complete"

    @property
    def waiting(self) -> bool:
        """A global job with no task yet: the orchestrator has not made them."""
        return not self.replicated and self.total == 0

    @property
    def converged(self) -> bool:
        """Every completion of the current run is done."""
        return not self.waiting and self.completed >= self.total

    @property
    def hopeless(self) -> bool:
        """Every slot not complete has failed twice or more (or will not restart).

        A slot without a task yet (waiting for a place under max-concurrent) has not.
        """
        pending = [s for s in self.slots if not s.complete]
        if not pending:
            return False
        return all(
            s.task is not None and (s.failures >= FAILURES_TO_GIVE_UP or s.declined)
            for s in pending
        )

    def summary(self) -> str:
        if self.waiting:
            return "no tasks yet"
        return f"{self.completed} out of {self.total} complete"

    def hopeless_reason(self) -> str:
        unit = "slot" if self.replicated else "node"
        return (
            f"{self.summary()}, and each {unit} not complete has failed "
            f"{FAILURES_TO_GIVE_UP} or more times"
        )

    def notes(self) -> list[str]:
        return _notes(self.errors, self.slots)


def compute_job_progress(
    service: objects_pb2.Service,
    tasks: Iterable[objects_pb2.Task],
    *,
    active_nodes: set[str] | None = None,
) -> JobProgress:
    """The progress of the current run of a job (tasks of other runs do not count).

    Per slot (replicated job) or node (global job): complete once a task of this run
    completed; otherwise its newest task meant to run is shown, or the failed one that
    waits for its replacement. Tasks on nodes that are down are skipped.
    """
    replicated = service.spec.WhichOneof("mode") == "replicated_job"
    iteration = service.job_status.job_iteration
    current = [t for t in tasks if t.job_iteration == iteration]
    current.sort(key=_age)
    failures: dict[str, int] = {}
    last_failure: dict[str, objects_pb2.Task] = {}
    errors: dict[str, None] = {}
    latest: dict[str, objects_pb2.Task] = {}
    newest: dict[str, objects_pb2.Task] = {}
    complete: dict[str, objects_pb2.Task] = {}
    for task in current:
        if active_nodes is not None and task.node_id and task.node_id not in active_nodes:
            continue
        key = _slot_key(task)
        latest[key] = task
        if task.status.state == states.COMPLETE:
            complete[key] = task
        if task.status.state in _FAILED:
            failures[key] = failures.get(key, 0) + 1
            last_failure[key] = task
        if task.status.err and task.status.state != states.COMPLETE:
            errors.setdefault(" ".join(task.status.err.split()), None)
        if states.is_runnable(task.desired_state) and not states.is_terminal(task.status.state):
            newest[key] = task

    def slot(label: str, key: str) -> SlotProgress:
        shown = complete.get(key) or newest.get(key) or latest.get(key)
        return SlotProgress(label, shown, failures.get(key, 0), last_failure.get(key), job=True)

    if replicated:
        job = service.spec.replicated_job
        total = job.total_completions
        keys = [str(n) for n in range(1, total + 1)]
        slots = tuple(slot(f"{key}/{total}", key) for key in keys)
        concurrent = job.max_concurrent or total
    else:
        # The nodes with a task of this run, but not those whose task was only shut
        # down (the node was drained or stopped matching): they will not complete.
        keys = sorted(
            key
            for key, task in latest.items()
            if key in complete or key in newest or _awaits_replacement(task)
        )
        total = len(keys)
        slots = tuple(slot(truncate_id(key), key) for key in keys)
        concurrent = total
    completed = sum(1 for key in keys if key in complete)
    active = sum(1 for key in keys if key not in complete and key in newest)
    return JobProgress(
        replicated=replicated,
        total=total,
        completed=completed,
        active=active,
        concurrent=concurrent,
        slots=slots,
        errors=tuple(errors),
    )


Progress = Convergence | JobProgress
"""What one poll shows: a service's convergence or a job's progress."""


@dataclass
class Step:
    """The outcome of one poll: where the service is, and whether waiting is over.

    Besides the progress itself it says what the display adds around it: the rollback
    under way and why, the verify period, the end of a rollback or of a job.
    """

    convergence: Progress
    done: bool = False
    # Why the service will not converge, said after "service NAME did not converge: ".
    failure: str | None = None
    # The whole error to report (the update paused, or failed and was rolled back).
    error: str | None = None
    # An update is under way whose failures the manager acts on (pause or roll back):
    # failing slots are no reason to give up yet.
    manager_decides: bool = False
    # An update is being rolled back (the bars run backwards), and why it started.
    rollback: bool = False
    rollback_reason: str = ""
    # The verify period: a slot stopped running during it; the seconds it still lasts;
    # the id of the service once verified.
    task_failure_detected: bool = False
    verify_seconds_left: int | None = None
    converged_service: str = ""
    # How a rollback ended ("rollback completed"), once the service converged after it.
    rollback_done: str = ""
    job_complete: bool = False


def rollout_monitor(service: objects_pb2.Service) -> float:
    """How long the manager watches new tasks before it calls the rollout complete."""
    return monitor_seconds(rollout_config(service))


def rolled_back_error(name: str, reason: str) -> str:
    """What `service update` says when the manager rolled its update back."""
    text = f"the update of service {name} failed and was rolled back"
    if reason.startswith(_ROLLED_BACK_DUE_TO):
        return f"{text} due to {reason.removeprefix(_ROLLED_BACK_DUE_TO)}"
    return f"{text}: {reason}" if reason else text


@dataclass
class ConvergenceTracker:
    """Follows a service from poll to poll: stable slot rows, the verify period, failure,
    and the service's rolling update (update_status) as Docker's display shows it.

    Converged means every slot runs a task of the current spec, and no rollout is under
    way. A rollout the manager finished (it watched the new tasks for the monitor
    period) needs no verify period of ours; otherwise the slots must stay running for
    `verify_seconds`.
    """

    service_id: str
    verify_seconds: float = VERIFY_SECONDS
    positions: dict[str, int] = field(default_factory=dict)
    converged_since: float | None = None
    # An update (not a rollback) was seen under way: if it ends rolled back, it failed.
    saw_update: bool = False
    # An update or a rollback was seen under way: the manager verifies its end.
    saw_rollout: bool = False
    # Why the rollback started ("update rolled back due to ...", "manually requested
    # rollback"), shown while it runs and after.
    rollback_message: str = ""

    def note_status(self, status: objects_pb2.UpdateStatus) -> None:
        """Remember what the service's update status says (also the one an update got)."""
        if status.state == _US.UPDATE_STATE_UPDATING:
            self.saw_update = True
        if status.state in _IN_PROGRESS:
            self.saw_rollout = True
        if status.state == _US.UPDATE_STATE_ROLLBACK_STARTED and status.message:
            self.rollback_message = status.message

    def observe(
        self,
        service: objects_pb2.Service,
        tasks: Sequence[objects_pb2.Task],
        now: float,
        active_nodes: set[str] | None = None,
    ) -> Step:
        conv = compute_convergence(
            service, tasks, active_nodes=active_nodes, positions=self.positions
        )
        update = service.update_status
        self.note_status(update)
        rollback = update.state in _ROLLBACK_STATES
        shown = Step(conv, rollback=rollback, rollback_reason=self.rollback_message)
        if update.state == _US.UPDATE_STATE_PAUSED:
            return replace(shown, error=update.message or "update paused")
        if update.state == _US.UPDATE_STATE_ROLLBACK_PAUSED:
            return replace(shown, error=update.message or "rollback paused")
        in_progress = update.state in _IN_PROGRESS
        shown.manager_decides = in_progress and (
            rollout_config(service).failure_action != specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE
        )
        if not conv.converged:
            shown.task_failure_detected = self.converged_since is not None
            self.converged_since = None
            return shown
        if self.converged_since is None:
            self.converged_since = now
        elapsed = now - self.converged_since
        if in_progress:
            # Every slot runs the new spec: the manager watches it for the monitor period.
            left = rollout_monitor(service) - elapsed
        else:
            verified = self.saw_rollout and update.state in _FINISHED
            left = (0.0 if verified else self.verify_seconds) - elapsed
        if in_progress or left > 0:
            shown.verify_seconds_left = max(1, math.ceil(left))
            return shown
        shown.converged_service = self.service_id
        shown.done = True
        if update.state != _US.UPDATE_STATE_ROLLBACK_COMPLETED or not self.saw_rollout:
            return shown
        shown.rollback_done = update.message or "rollback completed"
        if self.saw_update:
            name = service.spec.annotations.name or service.id
            shown.error = rolled_back_error(name, self.rollback_message)
        return shown  # without an update seen: the rollback the user asked for


class Tracker(Protocol):
    """Follows a service or a job from poll to poll: each poll's Step."""

    def observe(
        self,
        service: objects_pb2.Service,
        tasks: Sequence[objects_pb2.Task],
        now: float,
        active_nodes: set[str] | None = None,
    ) -> Step: ...


@dataclass
class JobTracker:
    """Follows a job from poll to poll until every completion of its current run is done.

    A job stays done once done, so there is no verify period (as in Docker).
    """

    service_id: str

    def observe(
        self,
        service: objects_pb2.Service,
        tasks: Sequence[objects_pb2.Task],
        now: float,
        active_nodes: set[str] | None = None,
    ) -> Step:
        progress = compute_job_progress(service, tasks, active_nodes=active_nodes)
        if progress.converged:
            return Step(progress, done=True, job_complete=True)
        return Step(progress)


def make_tracker(service: objects_pb2.Service) -> Tracker:
    """A job's tracker for a job, a convergence tracker for a service.

    `service` is the one the command wrote (or read): its update status says whether
    the command started an update.
    """
    if service.spec.WhichOneof("mode") in JOB_MODES:
        return JobTracker(service.id)
    tracker = ConvergenceTracker(service.id, verify_seconds=VERIFY_SECONDS)
    tracker.note_status(service.update_status)
    return tracker
