"""The worker: turns assignment messages into task runners, one per task.

A COMPLETE message is everything the node should have: runners for tasks not in it are
removed (their containers with them). INCREMENTAL messages add, update or remove tasks.
Runners live on while no manager answers, so running containers keep running.

Once the worker has had a complete set, it sweeps every so often (`sweep_forever`):
containers labelled with this node's id whose task has no runner here (made for a
task that went while its runner could not remove them, or left by an earlier agent)
are removed. Only this node's label is looked at: several nodes may share an engine.
"""

from __future__ import annotations

import asyncio
import functools

from agent.executor import AdoptedContainer, Executor, ExecutorError
from agent.reporter import StatusReporter
from agent.taskrunner import TaskRunner
from common import states
from common.api import dispatcher_pb2, objects_pb2
from common.log import get_logger
from common.supervise import cancel_all

_log = get_logger("worker")
Change = dispatcher_pb2.AssignmentChange


class Worker:
    """Owns the task runners of this node."""

    def __init__(self, executor: Executor, reporter: StatusReporter, node_id: str) -> None:
        self.executor = executor
        self.reporter = reporter
        self.node_id = node_id
        self.runners: dict[str, TaskRunner] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Whether a complete assignment set came: until then, what is not ours is unknown.
        self.synced = False
        self.swept = 0

    def adopt(self, containers: list[AdoptedContainer]) -> None:
        """Watch the containers found at start until the manager says what they are."""
        for c in containers:
            if not c.task_id or c.task_id in self.runners:
                continue
            placeholder = objects_pb2.Task(id=c.task_id, node_id=self.node_id)
            controller = self.executor.controller(placeholder, self.node_id, c.container_id)
            self._start(TaskRunner(placeholder, controller, self.reporter.add, adopted=c))
        if containers:
            _log.info("adopted containers", count=len(containers))

    def apply(self, message: dispatcher_pb2.AssignmentsMessage) -> None:
        if message.type == dispatcher_pb2.AssignmentsMessage.TYPE_COMPLETE:
            self.synced = True
            wanted = {c.task.id for c in message.changes}
            for task_id, runner in list(self.runners.items()):
                if task_id not in wanted and not runner.removed:
                    runner.remove()
        for change in message.changes:
            existing = self.runners.get(change.task.id)
            if change.action == Change.ACTION_REMOVE:
                if existing is not None:
                    existing.remove()
                self.reporter.discard(change.task.id)
            elif existing is None:
                controller = self.executor.controller(change.task, self.node_id)
                self._start(TaskRunner(change.task, controller, self.reporter.add))
            elif not existing.removed:
                existing.update(change.task)

    async def sweep(self) -> int:
        """Remove this node's containers whose task has no runner; how many went."""
        if not self.synced:
            return 0
        found = await self.executor.node_containers(self.node_id)
        removed = 0
        for container_id, task_id in found.items():
            if task_id and task_id in self.runners:
                continue
            placeholder = objects_pb2.Task(id=task_id, node_id=self.node_id)
            controller = self.executor.controller(placeholder, self.node_id, container_id)
            if task_id in self.runners:  # assigned while we were listing
                continue
            await controller.remove()
            removed += 1
            _log.info(
                "removed a container whose task is no longer this node's",
                container_id=container_id,
                task_id=task_id or None,
            )
        self.swept += removed
        return removed

    async def sweep_forever(self, interval: float) -> None:
        """`sweep` every `interval` seconds; an engine that does not answer is tried
        again at the next one."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except ExecutorError as exc:
                _log.warning("could not sweep this node's containers", error=str(exc))

    def running_task_ids(self) -> list[str]:
        """The tasks whose containers run here now (adopted ones included)."""
        return [
            tid
            for tid, r in self.runners.items()
            if not r.removed and r.status.state == states.RUNNING
        ]

    def statuses(self) -> dict[str, objects_pb2.TaskStatus]:
        """The current status of every task the manager knows this node has."""
        return {tid: r.status for tid, r in self.runners.items() if r.assigned and not r.removed}

    def _start(self, runner: TaskRunner) -> None:
        task_id = runner.task.id
        self.runners[task_id] = runner
        task = asyncio.create_task(runner.run(), name=f"task-{task_id}")
        self._tasks[task_id] = task
        task.add_done_callback(functools.partial(self._finished, task_id, runner))

    def _finished(self, task_id: str, runner: TaskRunner, task: asyncio.Task[None]) -> None:
        if self.runners.get(task_id) is runner:
            del self.runners[task_id]
            self._tasks.pop(task_id, None)
        if not task.cancelled() and task.exception() is not None:
            _log.error("task runner crashed", task_id=task_id, exc_info=task.exception())
            # Start over from what the runner last knew; it re-checks the container.
            if not runner.removed:
                controller = self.executor.controller(runner.task, self.node_id)
                fresh = TaskRunner(runner.task, controller, self.reporter.add)
                fresh.status = runner.status
                self._start(fresh)

    async def stop(self) -> None:
        """Stop the runners (not the containers: they keep running while the agent is away)."""
        await cancel_all(list(self._tasks.values()))
        self._tasks.clear()
