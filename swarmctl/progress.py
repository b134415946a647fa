"""The convergence display of `service create/update/scale/rollback`, as Docker's.

    overall progress: 2 out of 3 tasks
    1/3: running   [==================================================>]
    2/3: starting  [============================================>      ]
    3/3: rejected  No such image: nosuch:latest
    verify: Waiting 1 seconds to verify that tasks are stable...

swarmctl polls ListTasks about every 100 ms; what the tasks say (which slot runs what,
when the service converged, when to give up) is swarmctl.convergence's to decide, and
this module draws it and waits. It gives up at the timeout, or as soon as the model says
the service will not converge, and then lists the tasks' distinct errors. A global
service has one line per node (`3f9c0e1a2b4d: running [...]`) instead.

A rolling update (the service's update_status) shows through: while the manager
watches the new tasks for the monitor period, the verify line counts that period down;
a rollback shows why it started (`rollback: update rolled back due to failure or early
termination of task ...`), counts `rolling back update: N out of M tasks` with the bars
running backwards as Docker's do, and ends with `rollback: rollback completed`. An
update that paused, or that the manager rolled back, is an error (exit code 1).

Jobs run to completion, so their display counts completions of the current run of the
job (the service's job_iteration) instead, and ends when all are done:

    job progress: 3 out of 5 complete [==============================>                    ]
    active tasks: 2 out of 2 tasks
    1/5: complete  [==================================================>]
    ...
    job complete

On a terminal the block is redrawn in place (rich.live); otherwise a line is printed
only when it changes, so CI logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from common import states
from common.api import control_pb2, objects_pb2, types_pb2
from common.timeutil import format_duration
from swarmctl.convergence import (
    Convergence,
    JobProgress,
    Progress,
    SlotProgress,
    Step,
    make_tracker,
)
from swarmctl.errors import EXIT_INTERRUPTED, SwarmctlError

POLL_INTERVAL = 0.1
# Above this many slots only the overall line is shown (Docker's maxProgressBars).
MAX_PROGRESS_BARS = 20
BAR_WIDTH = 50
MAX_ERROR_WIDTH = 75

# Docker's stages; 2 is "allocated", which swarmlet does not have.
STAGES: Mapping[int, int] = {
    states.NEW: 1,
    states.PENDING: 3,
    states.ASSIGNED: 4,
    states.ACCEPTED: 5,
    states.PREPARING: 6,
    states.READY: 7,
    states.STARTING: 8,
    states.RUNNING: 9,
}
MAX_STAGE = 9
# A job's task goes one stage further, to COMPLETE (Docker's maxJobProgress).
JOB_STAGES: Mapping[int, int] = {**STAGES, states.COMPLETE: 10}
MAX_JOB_STAGE = 10
STATE_WIDTH = max(len(states.state_name(s)) for s in JOB_STAGES)


Line = tuple[str, str]
"""A display line: a key (what it is about, e.g. "1/3") and its text."""


def ratio_bar(current: int, total: int) -> str:
    """`[=====>    ]`, 50 wide, filled `current/total` of the way (as Docker's JSON progress)."""
    fraction = current / total if total else 1.0
    filled = max(0, min(BAR_WIDTH, int(fraction * 100) // 2))
    return "[" + "=" * filled + ">" + " " * (BAR_WIDTH - filled) + "]"


def progress_bar(state: int, rollback: bool = False) -> str:
    """`[=====>    ]`, 50 wide, filled as far as the state is along Docker's stages.

    While an update is rolled back the bar runs the other way, as Docker's does: a
    rolled back task that runs has an empty bar.
    """
    stage = STAGES.get(state, 0)
    return ratio_bar(MAX_STAGE - stage if rollback and stage else stage, MAX_STAGE)


def job_progress_bar(state: int) -> str:
    """A job task's bar: its stages run on to COMPLETE, which fills it."""
    return ratio_bar(JOB_STAGES.get(state, 0), MAX_JOB_STAGE)


def one_line_error(err: str) -> str:
    """An error on one line of at most 75 characters."""
    text = " ".join(err.split())
    return text if len(text) <= MAX_ERROR_WIDTH else text[: MAX_ERROR_WIDTH - 1] + "…"


def slot_text(slot: SlotProgress, *, rollback: bool = False) -> str:
    """`1/3: running   [=====...>]`, or the state and the task's error.

    While an update is rolled back (`rollback`) a service's bars run backwards.
    """
    task = slot.task
    waiting = not slot.done and not slot.running
    if task is not None and waiting and not task.status.err and slot.last_failure:
        task = slot.last_failure
    if task is None:
        return f"{slot.label}:"
    status = task.status
    state = states.state_name(status.state).ljust(STATE_WIDTH)
    if status.err:
        return f"{slot.label}: {state} {one_line_error(status.err)}"
    if slot.job and status.state in JOB_STAGES:
        return f"{slot.label}: {state} {job_progress_bar(status.state)}"
    if status.state in STAGES:
        return f"{slot.label}: {state} {progress_bar(status.state, rollback)}"
    return f"{slot.label}: {state} {one_line_error(status.message)}".rstrip()


def convergence_lines(conv: Convergence, *, rollback: bool = False) -> list[Line]:
    """`overall progress: N out of M tasks`, then a line per slot (up to 20 slots)."""
    if conv.global_mode and conv.desired == 0:
        return [("overall", "overall progress: waiting for new tasks")]
    what = "rolling back update: " if rollback else ""
    out = [("overall", f"overall progress: {what}{conv.running} out of {conv.desired} tasks")]
    if conv.desired <= MAX_PROGRESS_BARS:
        out.extend((s.label, slot_text(s, rollback=rollback)) for s in conv.slots)
    return out


def job_lines(job: JobProgress) -> list[Line]:
    """Docker's: `job progress: N out of M complete [bar]`, `active tasks: ...`, slots."""
    if job.waiting:
        return [("job progress", "job progress: waiting for tasks")]
    digits = len(str(job.total))
    out = [
        (
            "job progress",
            f"job progress: {job.completed:>{digits}} out of {job.total} complete "
            + ratio_bar(job.completed, job.total),
        )
    ]
    if job.replicated:
        # Docker's: the lesser of max-concurrent and the completions still to make.
        wanted = min(job.total - job.completed, job.concurrent)
        width = len(str(job.concurrent))
        out.append(
            (
                "active tasks",
                f"active tasks: {job.active:>{width}} out of {wanted:>{width}} tasks",
            )
        )
    if job.total <= MAX_PROGRESS_BARS:
        out.extend((s.label, slot_text(s)) for s in job.slots)
    return out


def progress_lines(progress: Progress, *, rollback: bool = False) -> list[Line]:
    if isinstance(progress, JobProgress):
        return job_lines(progress)
    return convergence_lines(progress, rollback=rollback)


def step_lines(step: Step) -> list[Line]:
    """Everything one poll shows: the progress, and around it what the step says of a
    rollback, the verify period and the end."""
    out: list[Line] = []
    if step.rollback and step.rollback_reason:
        out.append(("rollback", f"rollback: {step.rollback_reason}"))
    out.extend(progress_lines(step.convergence, rollback=step.rollback))
    if step.task_failure_detected:
        out.append(("verify", "verify: Detected task failure"))
    if step.verify_seconds_left is not None:
        seconds = step.verify_seconds_left
        out.append(
            ("verify", f"verify: Waiting {seconds} seconds to verify that tasks are stable...")
        )
    if step.converged_service:
        out.append(("verify", f"verify: Service {step.converged_service} converged"))
    if step.rollback_done:
        out.append(("rollback done", f"rollback: {step.rollback_done}"))
    if step.job_complete:
        out.append(("job", "job complete"))
    return out


class ServicePoller(Protocol):
    """The control API calls the wait makes (ControlClient's); tests replay polls."""

    def get_service(self, ref: str) -> objects_pb2.Service: ...

    def list_tasks(
        self, filters: control_pb2.ListTasksRequest.Filters
    ) -> list[objects_pb2.Task]: ...

    def list_nodes(self) -> list[objects_pb2.Node]: ...


class ProgressOutput(Protocol):
    """Where the progress lines go."""

    def show(self, lines: Sequence[Line]) -> None: ...

    def close(self) -> None: ...


class QuietOutput:
    """`--quiet`: no progress at all."""

    def show(self, lines: Sequence[Line]) -> None:
        pass

    def close(self) -> None:
        pass


class ChangedLinesOutput:
    """Not a terminal: print a line only when its text changed since it was last printed."""

    def __init__(self, echo: Callable[[str], None] = typer.echo) -> None:
        self._echo = echo
        self._last: dict[str, str] = {}

    def show(self, lines: Sequence[Line]) -> None:
        for key, text in lines:
            if text == f"{key}:" and key not in self._last:
                continue  # a slot with no task yet: nothing worth a line in a log
            if self._last.get(key) != text:
                self._last[key] = text
                self._echo(text)

    def close(self) -> None:
        pass


class LiveOutput:
    """A terminal: the whole block redrawn in place."""

    def __init__(self, console: Console | None = None) -> None:
        self._live = Live(
            Text(""), console=console or Console(), auto_refresh=False, transient=False
        )
        self._live.start()
        self._shown = ""

    def show(self, lines: Sequence[Line]) -> None:
        block = "\n".join(t for _, t in lines)
        if block != self._shown:
            self._shown = block
            self._live.update(Text(block, no_wrap=True, overflow="crop"), refresh=True)

    def close(self) -> None:
        if self._live.is_started:
            self._live.stop()


def make_output(quiet: bool) -> ProgressOutput:
    if quiet:
        return QuietOutput()
    if sys.stdout.isatty():
        return LiveOutput()
    return ChangedLinesOutput()


def seconds_text(seconds: float) -> str:
    """A timeout as the user would have written it: 300ms, 1.5s, 1m30s."""
    if seconds >= 1 and seconds != int(seconds) and seconds < 60:
        return f"{seconds:g}s"
    return format_duration(seconds)


def _active_nodes(client: ServicePoller) -> set[str]:
    return {n.id for n in client.list_nodes() if n.status.state != types_pb2.NODE_STATE_DOWN}


def wait_for_convergence(
    client: ServicePoller,
    service: objects_pb2.Service,
    *,
    timeout: float,
    quiet: bool = False,
    output: ProgressOutput | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Show the service converging (a job: completing its current run); raise
    SwarmctlError if it does not within `timeout`, or as soon as it clearly will not.

    Ctrl-C stops waiting (the service keeps converging) and exits with code 130.
    """
    name = service.spec.annotations.name or service.id
    tracker = make_tracker(service)
    filters = control_pb2.ListTasksRequest.Filters(service_ids=[service.id])
    out = output or make_output(quiet)
    deadline = clock() + timeout
    try:
        while True:
            current = client.get_service(service.id)
            tasks = client.list_tasks(filters)
            step = tracker.observe(current, tasks, clock(), _active_nodes(client))
            out.show(step_lines(step))
            if step.error is not None:
                raise SwarmctlError(step.error)
            if step.done:
                return
            conv = step.convergence
            reason = step.failure
            if reason is None and conv.hopeless and not step.manager_decides:
                reason = conv.hopeless_reason()
            if reason is None and clock() >= deadline:
                reason = f"{conv.summary()} after {seconds_text(timeout)}"
            if reason is not None:
                details = "".join(f"\n  {note}" for note in conv.notes())
                raise SwarmctlError(f"service {name} {conv.outcome}: {reason}{details}")
            sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        out.close()
        typer.echo("Operation continuing in background.")
        typer.echo(f"Use 'swarmctl service ps {name}' to check progress.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        out.close()
