"""What an executor must provide."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from common.api import objects_pb2, types_pb2


class ExecutorError(Exception):
    """A step failed; the message is the engine's explanation, shown to the operator."""


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    # Set when the container ended for a reason other than its process exiting
    # (killed for lack of memory, engine restarted, container removed by hand).
    error: str = ""


@dataclass(frozen=True)
class RunningInfo:
    container_id: str
    pid: int = 0
    ports: list[types_pb2.PortConfig] = field(default_factory=list)


@dataclass(frozen=True)
class LogLine:
    """One line a task wrote: when (seconds since the epoch), on which stream, what."""

    timestamp: float
    stderr: bool
    data: bytes


@dataclass(frozen=True)
class AdoptedContainer:
    """A container this node's agent made earlier, found again at start."""

    task_id: str
    container_id: str
    # running, created or exited (the engine's words are mapped onto these three).
    state: str
    exit_code: int = 0
    pid: int = 0
    ports: list[types_pb2.PortConfig] = field(default_factory=list)


class Controller(Protocol):
    """Runs one task."""

    task: objects_pb2.Task

    async def prepare(self) -> None:
        """Make the task ready to start (pull the image if missing, create the container).
        Idempotent: an existing container for the task is reused."""

    async def start(self) -> RunningInfo: ...

    async def wait(self) -> ExitStatus:
        """Return when the task's process has ended."""

    def watch_exit(self) -> asyncio.Future[ExitStatus]:
        """A future that resolves when the process ends, as `wait` returns; cancelling
        it stops only this watch."""
        ...

    async def shutdown(self, grace: float) -> None:
        """Stop the process: its stop signal, then a kill after `grace` seconds."""

    async def remove(self) -> None:
        """Remove whatever the task left (its container)."""

    async def health(self) -> str | None:
        """The health check's verdict so far ("starting", "healthy", "unhealthy"), or None
        when the task has no health check."""
        ...

    def next_health(self) -> asyncio.Future[str]:
        """Resolves with the next health status change."""
        ...

    def logs(self, *, follow: bool, tail: int, since: float) -> AsyncIterator[LogLine]:
        """The task's output lines (the last `tail`, -1 for all; after `since` if set);
        with `follow`, then new lines as they come until cancelled."""
        ...

    async def exists(self) -> bool:
        """Whether the task's container still exists."""
        ...


class Executor(Protocol):
    """Makes controllers and describes the node."""

    async def describe(self) -> objects_pb2.NodeDescription: ...

    async def adopt(self, node_id: str) -> list[AdoptedContainer]: ...

    async def node_containers(self, node_id: str) -> dict[str, str]:
        """The containers labelled with `node_id` (this node's): container id -> task id."""
        ...

    async def ping(self) -> None:
        """Return if the engine answers; raise ExecutorError saying what went wrong."""

    def controller(
        self, task: objects_pb2.Task, node_id: str, container_id: str = ""
    ) -> Controller: ...

    async def close(self) -> None: ...
