"""Task-state helpers: names as the Docker CLI prints them, and what each state means."""

from __future__ import annotations

from common.api import types_pb2

TaskState = types_pb2.TaskState

NEW = types_pb2.TASK_STATE_NEW
PENDING = types_pb2.TASK_STATE_PENDING
ASSIGNED = types_pb2.TASK_STATE_ASSIGNED
ACCEPTED = types_pb2.TASK_STATE_ACCEPTED
PREPARING = types_pb2.TASK_STATE_PREPARING
READY = types_pb2.TASK_STATE_READY
STARTING = types_pb2.TASK_STATE_STARTING
RUNNING = types_pb2.TASK_STATE_RUNNING
COMPLETE = types_pb2.TASK_STATE_COMPLETE
SHUTDOWN = types_pb2.TASK_STATE_SHUTDOWN
FAILED = types_pb2.TASK_STATE_FAILED
REJECTED = types_pb2.TASK_STATE_REJECTED
REMOVE = types_pb2.TASK_STATE_REMOVE
ORPHANED = types_pb2.TASK_STATE_ORPHANED


def state_name(state: int) -> str:
    """ "running", "pending", ... as `docker service ps` prints them (lower case)."""
    return types_pb2.TaskState.Name(state).removeprefix("TASK_STATE_").lower()  # type: ignore[arg-type]


def parse_state(name: str) -> int:
    """The TaskState for a name such as "running" or "Shutdown"; ValueError otherwise."""
    try:
        return int(types_pb2.TaskState.Value("TASK_STATE_" + name.strip().upper()))
    except ValueError:
        known = ", ".join(state_name(v) for v in types_pb2.TaskState.values())
        raise ValueError(f"unknown task state {name!r}: use one of {known}") from None


def is_terminal(state: int) -> bool:
    """The task's process has ended (or never will start)."""
    return state > RUNNING


def is_runnable(desired: int) -> bool:
    """The manager wants this task to run (or to be prepared to run, or, for a job's
    task whose desired state is COMPLETE, to run until it exits)."""
    return desired <= RUNNING or desired == COMPLETE


def should_start(desired: int) -> bool:
    """The task's process should be started (READY tasks wait)."""
    return desired in (RUNNING, COMPLETE)
