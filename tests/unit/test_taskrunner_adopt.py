"""An adopted container's state reaches the manager once the manager claims the task."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agent.executor import AdoptedContainer
from agent.executor.base import ExitStatus, LogLine, RunningInfo
from agent.taskrunner import TaskRunner
from common import states
from common.api import objects_pb2


class _Idle:
    """A `Controller` of an adopted container that still exists: the runner only asks
    that here; any other call fails the test."""

    def __init__(self, task: objects_pb2.Task) -> None:
        self.task = task

    async def exists(self) -> bool:
        return True

    def _unexpected(self, call: str) -> AssertionError:
        return AssertionError(f"_Idle: the runner was not expected to call {call}")

    async def prepare(self) -> None:
        raise self._unexpected("prepare")

    async def start(self) -> RunningInfo:
        raise self._unexpected("start")

    async def wait(self) -> ExitStatus:
        raise self._unexpected("wait")

    def watch_exit(self) -> asyncio.Future[ExitStatus]:
        raise self._unexpected("watch_exit")

    async def shutdown(self, grace: float) -> None:
        raise self._unexpected("shutdown")

    async def remove(self) -> None:
        raise self._unexpected("remove")

    async def health(self) -> str | None:
        raise self._unexpected("health")

    def next_health(self) -> asyncio.Future[str]:
        raise self._unexpected("next_health")

    def logs(self, *, follow: bool, tail: int, since: float) -> AsyncIterator[LogLine]:
        raise self._unexpected("logs")


async def test_an_exited_adopted_container_is_reported_when_assigned() -> None:
    reports: list[tuple[str, int]] = []
    runner = TaskRunner(
        objects_pb2.Task(id="t1"),
        _Idle(objects_pb2.Task(id="t1")),
        lambda tid, status: reports.append((tid, status.state)),
        adopted=AdoptedContainer("t1", "c1", "exited", exit_code=137),
    )
    loop = asyncio.create_task(runner.run())
    await asyncio.sleep(0.01)
    assert reports == []  # not the manager's task yet: only watched
    # The manager still thinks it runs (the engine stopped while the agent was away).
    task = objects_pb2.Task(id="t1", desired_state=states.RUNNING)
    task.status.state = states.RUNNING
    runner.update(task)
    await asyncio.sleep(0.01)
    assert reports == [("t1", states.FAILED)]
    runner.update(task)  # later updates do not repeat it
    await asyncio.sleep(0.01)
    assert reports == [("t1", states.FAILED)]
    loop.cancel()
