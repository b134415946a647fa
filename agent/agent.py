"""Wires the agent together: identity, executor, worker, reporter, session loop."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from agent.executor import Executor, ExecutorError
from agent.identity import load_or_create_node_id
from agent.reporter import StatusReporter
from agent.session import SessionLoop
from agent.worker import Worker
from common.log import get_logger
from common.supervise import cancel_all, supervise

_log = get_logger("agent")


@dataclass
class AgentConfig:
    managers: list[str]
    state_dir: Path


class Agent:
    """One node's agent."""

    def __init__(self, config: AgentConfig, executor: Executor) -> None:
        self.config = config
        self.executor = executor
        self.node_id = load_or_create_node_id(config.state_dir)
        self.reporter = StatusReporter()
        self.worker = Worker(executor, self.reporter, self.node_id)
        self.session = SessionLoop(
            config.managers, self.node_id, executor, self.worker, self.reporter
        )

    async def _adopt(self) -> None:
        """Find this node's containers; keep trying while the engine does not answer."""
        backoff = 0.2
        while True:
            try:
                self.worker.adopt(await self.executor.adopt(self.node_id))
                return
            except ExecutorError as exc:
                _log.warning(
                    "cannot list this node's containers yet", error=str(exc), retry_in=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def run(self, stop: asyncio.Event) -> None:
        _log.info("agent starting", node_id=self.node_id, managers=self.config.managers)
        await self._adopt()
        loop = supervise("session", self.session.run, node_id=self.node_id)
        try:
            await stop.wait()
        finally:
            _log.info("agent stopping; containers keep running")
            await cancel_all([loop])
            await self.worker.stop()
            await self.executor.close()
