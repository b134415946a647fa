"""The hollow executor: a stand-in engine for tests and benchmarks that need many nodes.

It runs no containers. A task's states advance on short timers (preparing, starting),
a configurable share of tasks fail after a while, and tasks that run to completion
(jobs) exit 0 after a set time. Everything else in the agent, the session with the
manager and the reports it sends, is the real thing, so the manager does all the work
it would do for real nodes. It is named "hollow" wherever it appears (node engine
version, hostnames chosen by the farm), so it is never mistaken for a real engine.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agent.executor.base import (
    AdoptedContainer,
    ExecutorError,
    ExitStatus,
    LogLine,
    RunningInfo,
)
from common import states
from common.api import objects_pb2, types_pb2
from common.ids import new_id

HOLLOW_ENGINE_VERSION = "hollow"


@dataclass
class HollowConfig:
    """Timings and capacity of hollow nodes."""

    prepare_delay: float = 0.05
    start_delay: float = 0.05
    # Share of tasks (0..1) that fail `fail_after` seconds after they start.
    fail_rate: float = 0.0
    fail_after: float = 1.0
    # How long a task that runs to completion (a job's task) runs before exiting 0.
    job_duration: float = 0.5
    # Image names that "cannot be pulled": preparing their tasks is rejected.
    missing_images: set[str] = field(default_factory=set)
    nano_cpus: int = 4_000_000_000
    memory_bytes: int = 8 * 1024**3
    os: str = "linux"
    architecture: str = "x86_64"
    labels: dict[str, str] = field(default_factory=dict)


class HollowExecutor:
    """Pretends to run tasks; one instance per hollow node."""

    # No engine to watch: a farm of thousands of agents need not ask one every 2 s.
    always_answers = True

    def __init__(self, hostname: str, config: HollowConfig | None = None) -> None:
        self.hostname = hostname
        self.config = config or HollowConfig()
        # Task id -> controller, so an agent restart within the process adopts them.
        self.controllers: dict[str, HollowController] = {}

    async def describe(self) -> objects_pb2.NodeDescription:
        c = self.config
        desc = objects_pb2.NodeDescription(hostname=self.hostname)
        desc.platform.os = c.os
        desc.platform.architecture = c.architecture
        desc.resources.nano_cpus = c.nano_cpus
        desc.resources.memory_bytes = c.memory_bytes
        desc.engine.engine_version = HOLLOW_ENGINE_VERSION
        desc.engine.labels.update(c.labels)
        return desc

    async def adopt(self, node_id: str) -> list[AdoptedContainer]:
        return [
            AdoptedContainer(
                task_id, ctl.container_id, "running" if ctl.running else "exited", ctl.exit_code
            )
            for task_id, ctl in self.controllers.items()
            if ctl.created
        ]

    async def node_containers(self, node_id: str) -> dict[str, str]:
        return {
            ctl.container_id: task_id for task_id, ctl in self.controllers.items() if ctl.created
        }

    async def ping(self) -> None:
        return None

    def controller(
        self, task: objects_pb2.Task, node_id: str, container_id: str = ""
    ) -> HollowController:
        existing = self.controllers.get(task.id)
        if existing is not None:
            existing.task = task
            return existing
        ctl = HollowController(self, task)
        self.controllers[task.id] = ctl
        return ctl

    async def close(self) -> None:
        for ctl in self.controllers.values():
            ctl.stop_timers()


class HollowController:
    """One hollow task."""

    def __init__(self, executor: HollowExecutor, task: objects_pb2.Task) -> None:
        self.executor = executor
        self.task = task
        self.container_id = ""
        self.created = False
        self.running = False
        self.exit_code = 0
        self._exited: asyncio.Future[ExitStatus] | None = None
        self._watchers: list[asyncio.Future[ExitStatus]] = []
        self._timer: asyncio.TimerHandle | None = None

    @property
    def config(self) -> HollowConfig:
        return self.executor.config

    async def exists(self) -> bool:
        return self.created

    async def prepare(self) -> None:
        if self.created:
            return
        await asyncio.sleep(self.config.prepare_delay)
        image = self.task.spec.container.image
        if image in self.config.missing_images:
            raise ExecutorError(f"No such image: {image} (hollow node: listed as missing)")
        self.container_id = new_id()
        self.created = True

    async def start(self) -> RunningInfo:
        if not self.created:
            raise ExecutorError("container to start does not exist")
        await asyncio.sleep(self.config.start_delay)
        loop = asyncio.get_running_loop()
        self._exited = loop.create_future()
        self.running = True
        if self.task.desired_state == states.COMPLETE:
            self._timer = loop.call_later(self.config.job_duration, self._exit, 0)
        elif self.config.fail_rate and random.random() < self.config.fail_rate:
            self._timer = loop.call_later(self.config.fail_after, self._exit, 1)
        ports = [
            types_pb2.PortConfig(
                protocol=p.protocol,
                target_port=p.target_port,
                published_port=p.published_port or random.randint(32768, 60999),
                publish_mode=types_pb2.PUBLISH_MODE_HOST,
            )
            for p in self.task.endpoint.ports
        ]
        return RunningInfo(self.container_id, 0, ports)

    def _exit(self, code: int) -> None:
        self.running = False
        self.exit_code = code
        status = ExitStatus(code)
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(status)
        watchers, self._watchers = self._watchers, []
        for w in watchers:
            if not w.done():
                w.set_result(status)

    async def health(self) -> str | None:
        return None  # hollow tasks have no health checks

    def next_health(self) -> asyncio.Future[str]:
        return asyncio.get_running_loop().create_future()  # never resolves

    async def logs(self, *, follow: bool, tail: int, since: float) -> AsyncIterator[LogLine]:
        """Two made-up lines (a hollow task writes nothing), then silence while following."""
        now = time.time()
        lines = [
            LogLine(now, False, f"hollow task {self.task.id}: started".encode()),
            LogLine(now, True, f"hollow task {self.task.id}: no container behind me".encode()),
        ]
        for line in lines[-tail:] if tail >= 0 else lines:
            if line.timestamp >= since:
                yield line
        if follow:
            await asyncio.Event().wait()

    async def wait(self) -> ExitStatus:
        if not self.running or self._exited is None:
            return ExitStatus(self.exit_code)
        return await asyncio.shield(self._exited)

    def watch_exit(self) -> asyncio.Future[ExitStatus]:
        # A plain future per watcher, no task: a farm watches 150,000 of these.
        future: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()
        if not self.running or self._exited is None:
            future.set_result(ExitStatus(self.exit_code))
        else:
            self._watchers = [w for w in self._watchers if not w.done()]
            self._watchers.append(future)
        return future

    async def shutdown(self, grace: float) -> None:
        self.stop_timers()
        if self.running:
            self._exit(0)

    async def remove(self) -> None:
        self.stop_timers()
        self.running = False
        self.created = False
        self.executor.controllers.pop(self.task.id, None)

    def stop_timers(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
