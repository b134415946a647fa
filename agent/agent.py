"""Wires the agent together: credentials (join or load), executor, worker, reporter, the
session loop, and certificate renewal."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from dataclasses import dataclass
from pathlib import Path

from agent import credentials
from agent.credentials import JoinError, JoinRefusedError, NodeCredentials
from agent.executor import Executor, ExecutorError
from agent.executor.docker import DockerExecutor
from agent.logs import LogPublisher
from agent.network.controller import NetworkController
from agent.network.engine import EngineNetworks
from agent.network.view import from_proto
from agent.reporter import StatusReporter
from agent.session import NodeRemovedError, SessionLoop
from agent.worker import Worker
from common import pki
from common.log import get_logger
from common.supervise import cancel_all, supervise

_log = get_logger("agent")


@dataclass
class AgentConfig:
    managers: list[str]
    state_dir: Path
    join_token: str = ""
    # How often containers of this node that no task of it owns any more are removed.
    sweep_interval: float = 60.0


class Agent:
    """One node's agent."""

    def __init__(self, config: AgentConfig, executor: Executor) -> None:
        self.config = config
        self.executor = executor
        self.credentials = credentials.load(config.state_dir)
        if self.credentials is None:
            if not config.join_token:
                raise JoinError(
                    f"this node has not joined a cluster yet (no certificate in "
                    f"{config.state_dir}): give its join token in SWARMLET_JOIN_TOKEN or "
                    "--join-token-file (on a manager: swarmctl join-token worker)"
                )
            try:
                pki.JoinToken.parse(config.join_token)
            except pki.PKIError as exc:
                raise JoinRefusedError(str(exc)) from None
        self.reporter = StatusReporter()
        self.worker: Worker | None = None
        self.session: SessionLoop | None = None
        self.failure: BaseException | None = None

    @property
    def node_id(self) -> str:
        return self.credentials.node_id if self.credentials else ""

    async def _join(self) -> NodeCredentials:
        """Join through the first manager that lets us; keep trying while none answers."""
        backoff = 0.2
        while True:
            for addr in self.config.managers:
                try:
                    creds = await credentials.join(addr, self.config.join_token)
                except JoinRefusedError:
                    raise
                except JoinError as exc:
                    _log.warning("cannot join yet", manager=addr, error=str(exc))
                    continue
                credentials.save(self.config.state_dir, creds)
                _log.info("joined the cluster", node_id=creds.node_id, role=creds.identity.role)
                return creds
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 8.0)

    async def _adopt(self, worker: Worker) -> None:
        """Find this node's containers; keep trying while the engine does not answer."""
        backoff = 0.2
        while True:
            try:
                worker.adopt(await self.executor.adopt(self.node_id))
                return
            except ExecutorError as exc:
                _log.warning(
                    "cannot list this node's containers yet", error=str(exc), retry_in=backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _network_controller(self, node_id: str) -> NetworkController | None:
        """The node's network data plane, fed by the session (Docker executor only: a
        hollow node runs no containers to connect)."""
        if not isinstance(self.executor, DockerExecutor) or self.session is None:
            return None
        engine = EngineNetworks(self.executor.api, self.executor.call)
        controller = NetworkController(node_id, engine)
        self.executor.networks = controller
        self.session.on_networks = lambda view: controller.update(from_proto(view))
        return controller

    def _current_credentials(self) -> NodeCredentials:
        assert self.credentials is not None
        return self.credentials

    async def _renew_forever(self) -> None:
        while True:
            assert self.credentials is not None
            assert self.session is not None
            due = pki.renewal_time(self.credentials.cert_pem)
            await asyncio.sleep(max(1.0, due - time.time()))
            addr = self.session.manager or self.config.managers[0]
            try:
                fresh = await credentials.renew(addr, self.credentials)
            except Exception as exc:
                _log.warning("certificate renewal failed; retrying", error=str(exc))
                await asyncio.sleep(random.uniform(5, 15))
                continue
            credentials.save(self.config.state_dir, fresh)
            self.credentials = fresh
            self.session.use(fresh)
            _log.info(
                "certificate renewed", node_id=self.node_id, expires=int(fresh.identity.not_after)
            )

    async def run(self, stop: asyncio.Event) -> None:
        if self.credentials is None:
            self.credentials = await self._join()
        node_id = self.node_id
        _log.info("agent starting", node_id=node_id, managers=self.config.managers)
        self.worker = Worker(self.executor, self.reporter, node_id)
        self.session = SessionLoop(
            self.config.managers, self.credentials, self.executor, self.worker, self.reporter
        )
        self.session.logs = LogPublisher(
            lambda: self.worker.runners if self.worker else {}, self._current_credentials
        )
        network = self._network_controller(node_id)
        await self._adopt(self.worker)
        tasks = [
            supervise("session", self.session.run, restart=False, node_id=node_id),
            supervise("renew", self._renew_forever, node_id=node_id),
            supervise(
                "sweep",
                functools.partial(self.worker.sweep_forever, self.config.sweep_interval),
                node_id=node_id,
            ),
        ]
        if network is not None:
            tasks.append(supervise("network", network.run, node_id=node_id))
        if not getattr(self.executor, "always_answers", False):
            tasks.append(supervise("engine", self.session.watch_engine, node_id=node_id))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([stopped, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
            if tasks[0].done() and self.session.removed is not None:
                self.failure = self.session.removed
            elif stop.is_set():
                # A clean stop (an upgrade, a restart): the containers keep running, and
                # the manager keeps the node ready for its restart grace.
                await self.session.goodbye("agent stopping; containers keep running")
        finally:
            stopped.cancel()
            _log.info("agent stopping; containers keep running")
            await cancel_all(tasks)
            await self.session.logs.stop()
            await self.worker.stop()
            await self.executor.close()
        if self.failure is not None:
            raise self.failure


__all__ = ["Agent", "AgentConfig", "NodeRemovedError"]
