"""One task's life on the node, driven by its desired state.

ASSIGNED -> ACCEPTED -> PREPARING (pull if missing, create) -> READY -> STARTING ->
RUNNING -> COMPLETE | FAILED, or SHUTDOWN when the manager asks, or REJECTED when it
could not be prepared. Every state is reported with a timestamp; the observed state
only ever moves forward. A task whose desired state is READY is prepared and then
waits; one whose desired state is COMPLETE (a job's) runs until it exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agent.executor import AdoptedContainer, Controller, ExecutorError, ExitStatus, RunningInfo
from agent.metrics import TASK_STATE
from common import states
from common.api import objects_pb2
from common.defaults import NETWORK_DRAIN, STOP_GRACE_PERIOD
from common.log import get_logger
from common.timeutil import duration_seconds, stamp_now

Report = Callable[[str, objects_pb2.TaskStatus], None]
# One lazy proxy for every runner: binding a fresh proxy per task cost more than all
# the rest of starting a hollow task.
_log = get_logger("taskrunner")
# Removing a container is retried until the engine answers: first after this, then
# doubling up to TEARDOWN_MAX_BACKOFF (an engine down for minutes is retried twice a
# minute, and the container goes within that once it is back).
TEARDOWN_BACKOFF = 0.5
TEARDOWN_MAX_BACKOFF = 30.0


def status_from_adopted(adopted: AdoptedContainer) -> objects_pb2.TaskStatus:
    status = objects_pb2.TaskStatus()
    stamp_now(status.timestamp)
    status.container_status.container_id = adopted.container_id
    if adopted.state == "running":
        status.state = states.RUNNING
        status.message = "started"
        status.container_status.pid = adopted.pid
        status.port_status.ports.extend(adopted.ports)
    elif adopted.state == "created":
        status.state = states.READY
        status.message = "prepared"
    else:
        _set_exit(status, ExitStatus(adopted.exit_code))
    return status


def _set_exit(status: objects_pb2.TaskStatus, exit_status: ExitStatus) -> None:
    status.container_status.exit_code = exit_status.exit_code
    if exit_status.exit_code == 0 and not exit_status.error:
        status.state = states.COMPLETE
        status.message = "finished"
        status.err = ""
    else:
        status.state = states.FAILED
        status.message = "started"
        status.err = exit_status.error or f"task: non-zero exit ({exit_status.exit_code})"


class TaskRunner:
    """Runs one task through `controller`, reporting each state with `report`."""

    def __init__(
        self,
        task: objects_pb2.Task,
        controller: Controller,
        report: Report,
        *,
        adopted: AdoptedContainer | None = None,
    ) -> None:
        self.task = task
        self.controller = controller
        self._report_fn = report
        self.log = _log.bind(task_id=task.id, service_id=task.service_id)
        # Until the manager has sent the task, an adopted container is only watched.
        self.assigned = adopted is None
        self._adopted = adopted is not None
        self.status = objects_pb2.TaskStatus()
        if adopted is not None:
            self.status = status_from_adopted(adopted)
        else:
            self.status.CopyFrom(task.status)
        self._changed = asyncio.Event()
        # A future that the next change resolves, while a running task is watched.
        self._change_waiter: asyncio.Future[None] | None = None
        self._removed = False
        self._exit: asyncio.Future[ExitStatus] | None = None
        # Health checks: None until known; the start's info is kept until healthy.
        self._has_health: bool | None = None
        # Whether the task has been given its moment out of the load balancing (_drain).
        self._drained = False
        # Whether the container of an ended task was removed (_of_no_further_use).
        self._container_removed = False
        self._awaiting_health = False
        self._info: RunningInfo | None = None

    # ---- from the worker ------------------------------------------------------------

    def update(self, task: objects_pb2.Task) -> None:
        """The manager sent a newer version of the task."""
        first = not self.assigned
        self.task = task
        self.controller.task = task
        self.assigned = True
        if first and self._adopted:
            # What the container was found in at start (exited, say, because the engine
            # stopped while the agent was away) has not been reported: the manager may
            # still think the task runs.
            self._report_fn(task.id, self.status)
        self._signal_change()

    def remove(self) -> None:
        """The task is no longer this node's: stop it and remove its container."""
        self._removed = True
        self._signal_change()

    def _signal_change(self) -> None:
        self._changed.set()
        waiter = self._change_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def removed(self) -> bool:
        return self._removed

    # ---- the state machine ----------------------------------------------------------

    def _report(
        self,
        state: int,
        message: str,
        *,
        err: str = "",
        info: RunningInfo | None = None,
        exit_status: ExitStatus | None = None,
    ) -> None:
        if state < self.status.state:
            return
        status = objects_pb2.TaskStatus()
        status.CopyFrom(self.status)
        status.state = state  # type: ignore[assignment]
        status.message = message
        status.err = err
        stamp_now(status.timestamp)
        if info is not None:
            status.container_status.container_id = info.container_id
            status.container_status.pid = info.pid
            del status.port_status.ports[:]
            status.port_status.ports.extend(info.ports)
        if exit_status is not None:
            _set_exit(status, exit_status)
        self.status = status
        TASK_STATE(status.state).inc()
        # The steps on the way to running (accepted, preparing, ready, starting) are
        # debug: at info they were four lines of five per task started, and a tenth of
        # the CPU of 5,000 hollow agents in one process (docs/performance.md).
        log = self.log.info if status.state >= states.RUNNING else self.log.debug
        log(
            "task state",
            state=states.state_name(status.state),
            message=status.message,
            err=status.err or None,
        )
        self._report_fn(self.task.id, status)

    async def _wait_for_change(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    def _grace(self) -> float:
        spec = self.task.spec.container
        if spec.HasField("stop_grace_period"):
            return duration_seconds(spec.stop_grace_period)
        return STOP_GRACE_PERIOD

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self._exit is not None and not self._exit.done():
                self._exit.cancel()

    async def _run(self) -> None:
        if (
            self.assigned
            and self.status.state >= states.STARTING
            and not states.is_terminal(self.status.state)
            and not await self.controller.exists()
        ):
            self._report(
                states.FAILED, "started", err="the task's container no longer exists on the node"
            )
        while True:
            if self._removed:
                await self._teardown()
                return
            state = self.status.state
            if states.is_terminal(state):
                if self._of_no_further_use():
                    # Ended (killed with its host, say) and shut down by the manager for
                    # a reason of the node's: its replacement runs elsewhere, and the
                    # task stays in the history without its container.
                    self._container_removed = True
                    await self._teardown()
                    continue
                await self._wait_for_change()
                continue
            if not self.assigned:
                await self._watch_until_change()
                continue
            desired = self.task.desired_state
            if not states.is_runnable(desired):
                await self._shut_down()
                continue
            if state < states.READY:
                await self._prepare()
                continue
            if not states.should_start(desired):
                await self._wait_for_change()  # prepared, waiting to be told to start
                continue
            if state < states.RUNNING and not self._awaiting_health:
                await self._start()
                continue
            await self._watch_until_change()

    async def _prepare(self) -> None:
        if self.status.state < states.ACCEPTED:
            self._report(states.ACCEPTED, "accepted")
        self._report(states.PREPARING, "preparing")
        try:
            await self.controller.prepare()
        except ExecutorError as exc:
            self._report(states.REJECTED, "preparing failed", err=str(exc))
            return
        self._report(states.READY, "prepared")

    async def _start(self) -> None:
        self._report(states.STARTING, "starting")
        try:
            info = await self.controller.start()
            health = await self.controller.health()
        except ExecutorError as exc:
            self._report(states.FAILED, "starting failed", err=str(exc))
            return
        self._has_health = health is not None
        if health in (None, "healthy"):
            self._report(states.RUNNING, "started", info=info)
        elif health == "unhealthy":
            await self._unhealthy()
        else:
            # A task counts as running only once its health check passes.
            self._info = info
            self._awaiting_health = True
            self._report(states.STARTING, "starting: waiting for the health check", info=info)

    async def _unhealthy(self) -> None:
        self._awaiting_health = False
        try:
            await self.controller.shutdown(self._grace())
        except ExecutorError as exc:
            self.log.warning("could not stop the unhealthy container", error=str(exc))
        self._report(states.FAILED, "unhealthy", err="task: unhealthy container")

    async def _watch_until_change(self) -> None:
        """Wait for the process to end, its health to change, or news from the manager."""
        if self.status.state != states.RUNNING and not self._awaiting_health:
            await self._wait_for_change()
            return
        if self._exit is None or self._exit.cancelled():
            self._exit = self.controller.watch_exit()
        health: asyncio.Future[str] | None = None
        if self._has_health is None:  # an adopted container: find out
            self._has_health = await self.controller.health() is not None
        if self._has_health:
            health = self.controller.next_health()
            # It may have changed before we listened.
            now = await self.controller.health()
            if now == "unhealthy" or (now == "healthy" and self._awaiting_health):
                health.cancel()
                await self._health_changed(now)
                return
        # A plain future rather than a task waiting on the event: a node runs thousands
        # of tasks, and each wait here would otherwise start one more.
        changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._changed.is_set():
            changed.set_result(None)
        self._change_waiter = changed
        exited: asyncio.Future[object] = self._exit  # type: ignore[assignment]
        waiting: set[asyncio.Future[Any]] = {exited, changed}
        if health is not None:
            waiting.add(health)
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._change_waiter = None
            changed.cancel()
        if self._changed.is_set():
            self._changed.clear()
        if self._exit.done() and not self._exit.cancelled():
            exit_status = self._exit.result()
            self._exit = None
            self._awaiting_health = False
            if health is not None:
                health.cancel()
            self._report(states.COMPLETE, "finished", exit_status=exit_status)
            return
        if health is not None:
            if health.done() and not health.cancelled():
                await self._health_changed(health.result())
            else:
                health.cancel()

    async def _health_changed(self, health: str) -> None:
        if health == "unhealthy":
            await self._unhealthy()
        elif health == "healthy" and self._awaiting_health:
            self._awaiting_health = False
            self._report(states.RUNNING, "started", info=self._info)

    async def _drain(self) -> None:
        """A task that serves on a network leaves every node's load balancing the moment
        the manager decides to stop it; its container is stopped a moment later, once
        the other nodes have had the time to hear it (new connections no longer reach
        it; those already open go on within its stop grace)."""
        if self.task.networks and self.status.state == states.RUNNING and not self._drained:
            self._drained = True
            await asyncio.sleep(NETWORK_DRAIN)

    async def _shut_down(self) -> None:
        await self._drain()
        if self.status.state >= states.PREPARING:
            try:
                await self.controller.shutdown(self._grace())
            except ExecutorError as exc:
                self.log.warning("could not stop container; retrying", error=str(exc))
                await asyncio.sleep(1.0)
                return
        prepared = self.status.state >= states.PREPARING
        self._report(states.SHUTDOWN, "shutdown")
        if prepared and self.task.shutdown_reason:
            # Shut down by the manager for a reason of the node's ("node down": its
            # replacement runs elsewhere; "constraint no longer met"): the task stays
            # in the history, its container is of no further use.
            await self._teardown()

    def _of_no_further_use(self) -> bool:
        return (
            bool(self.task.shutdown_reason)
            and not states.is_runnable(self.task.desired_state)
            and not self._container_removed
        )

    async def _teardown(self) -> None:
        """Stop and remove the container, retrying (backoff capped at
        TEARDOWN_MAX_BACKOFF) for as long as the engine does not answer: giving up
        left exited containers behind whenever the engine was down for a while."""
        await self._drain()
        backoff = TEARDOWN_BACKOFF
        attempt = 0
        while True:
            attempt += 1
            try:
                if (
                    not states.is_terminal(self.status.state)
                    and self.status.state >= states.PREPARING
                ):
                    await self.controller.shutdown(self._grace())
                await self.controller.remove()
                self.log.info("task removed", attempts=attempt)
                return
            except ExecutorError as exc:
                self.log.warning(
                    "could not remove container; retrying",
                    error=str(exc),
                    attempt=attempt,
                    retry_in=backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, TEARDOWN_MAX_BACKOFF)
