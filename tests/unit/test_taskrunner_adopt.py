"""An adopted container's state reaches the manager once the manager claims the task."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.executor import AdoptedContainer
from agent.taskrunner import TaskRunner
from common import states
from common.api import objects_pb2


class _Idle:
    """A controller the runner never needs to call in these cases."""

    task: Any = None

    async def exists(self) -> bool:
        return True


async def test_an_exited_adopted_container_is_reported_when_assigned() -> None:
    reports: list[tuple[str, int]] = []
    runner = TaskRunner(
        objects_pb2.Task(id="t1"),
        _Idle(),  # type: ignore[arg-type]
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
