"""The agent and a Docker engine that goes away: containers of gone tasks are removed
once the engine is back (however long it was away), the agent sweeps containers of its
own node that no task owns, and a node whose engine does not answer is shown so and
gets no new tasks until it answers again.

Tests that stop and start an engine use a private one (`scripts/dockerd.sh start
NAME`, stopped in teardown), never the shared engine other tests run on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from tests.harness import ROOT, SLEEPER, Agent, Manager, swarmctl, wait_until

pytestmark = pytest.mark.docker

ENGINE_NAME = "agentlife-outage"
DOCKERD = ROOT / "scripts" / "dockerd.sh"


@dataclass
class PrivateEngine:
    """A dockerd of this test's own, which it may stop and start."""

    name: str
    addr: str = ""

    def _script(self, action: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
        out = subprocess.run(
            [str(DOCKERD), action, self.name],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""

    def start(self) -> str:
        addr = self._script("start")
        assert self.name in addr, f"dockerd.sh reused another engine ({addr})"
        self.addr = addr
        return addr

    def stop(self) -> None:
        self._script("stop")

    def client(self) -> Any:
        return docker.DockerClient(base_url=self.addr, version="auto", timeout=30)


@pytest.fixture
def engine(docker_client: Any) -> Iterator[PrivateEngine]:
    private = PrivateEngine(ENGINE_NAME)
    try:
        private.start()
        client = private.client()
        try:
            # The private engine has no images: give it the sleeper from the shared one.
            client.images.load(b"".join(docker_client.images.get(SLEEPER).save(named=True)))
        finally:
            client.close()
        yield private
    finally:
        private.stop()
        shutil.rmtree(ROOT / ".run" / "docker" / ENGINE_NAME, ignore_errors=True)


@dataclass
class Node:
    manager: Manager
    agent: Agent

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return swarmctl(self.manager.host, *args, check=check, timeout=60)

    def node(self) -> Any:
        node_id = self.agent.node_id
        return next(n for n in self.manager.nodes() if n.id == node_id)


@contextlib.contextmanager
def one_node(docker_host: str, *agent_flags: str) -> Iterator[Node]:
    """A manager and an agent on `docker_host`, both stopped (and the agent's containers
    removed) on the way out."""
    manager = Manager()
    agent: Agent | None = None
    try:
        manager.start()
        agent = Agent(
            [manager.addr],
            docker_host,
            hostname="node-1",
            join_token=manager.join_token(),
            extra=list(agent_flags),
        ).start()
        node = Node(manager, agent)
        wait_until(lambda: node.node().status.state == 2, 30, what="the node ready")
        yield node
    finally:
        if agent is not None:
            agent.stop()
            try:
                client = docker.DockerClient(base_url=docker_host, version="auto", timeout=10)
                agent.cleanup(client)
                client.close()
            except Exception:
                agent.cleanup(None)  # the engine is gone: so are its containers' processes
        manager.cleanup()


def test_gone_task_container_is_removed_once_a_long_dead_engine_is_back(
    engine: PrivateEngine, name: str
) -> None:
    """The engine is down for longer than the agent used to retry (5 attempts, ~15 s)
    while the service is removed: its exited container goes once the engine is back."""
    # No sweep during the test: the removal retry alone must get the container.
    with one_node(engine.addr, "--sweep-interval", "1h") as node:
        node.ctl("service", "create", "--name", name, "--replicas", "1", SLEEPER)
        wait_until(lambda: len(node.manager.running_tasks(name)) == 1, 60, what="the task running")
        engine.stop()
        node.ctl("service", "rm", name)
        time.sleep(20)
        engine.start()
        client = engine.client()
        try:
            labels = {"label": f"swarmlet.node.id={node.agent.node_id}"}
            assert client.containers.list(all=True, filters=labels), "container gone too soon"
            started = time.monotonic()
            wait_until(
                lambda: not client.containers.list(all=True, filters=labels),
                45,
                what="the gone task's container removed",
            )
            print(f"engine back: container removed after {time.monotonic() - started:.1f}s")
        finally:
            client.close()


def test_sweep_removes_own_orphans_and_never_other_nodes_containers(
    docker_client: Any, docker_host: str
) -> None:
    """A container labelled with this node's id whose task is not this node's goes; one
    labelled with another node's id (another cluster on the same engine) stays."""
    made: list[Any] = []
    try:
        with one_node(docker_host, "--sweep-interval", "1s") as node:
            node_id = node.agent.node_id
            other = f"other{uuid.uuid4().hex[:12]}"

            def sleeper(owner: str) -> Any:
                container = docker_client.containers.run(
                    SLEEPER,
                    detach=True,
                    labels={"swarmlet.node.id": owner, "swarmlet.task.id": uuid.uuid4().hex},
                )
                made.append(container)
                return container

            orphan, foreign = sleeper(node_id), sleeper(other)

            def gone(container: Any) -> bool:
                try:
                    container.reload()
                except docker.errors.NotFound:
                    return True
                return False

            wait_until(lambda: gone(orphan), 20, what="the orphan container removed")
            time.sleep(3)  # a few more sweeps
            assert not gone(foreign), "removed another node's container"
            log = node.agent.process.log()
            assert "removed a container whose task is no longer this node's" in log
    finally:
        for c in made:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)


def test_node_whose_engine_is_down_is_shown_and_gets_no_tasks_until_it_answers(
    engine: PrivateEngine, name: str
) -> None:
    with one_node(engine.addr) as node:
        engine.stop()
        stopped = time.monotonic()
        wait_until(lambda: node.node().status.engine_error, 20, what="the engine error recorded")
        print(f"engine stopped: shown on the node after {time.monotonic() - stopped:.1f}s")
        shown = node.node()
        assert shown.status.state == 2  # still connected
        assert shown.status.message.startswith("engine not answering")
        assert "Ready (engine down)" in node.ctl("node", "ls").stdout
        node.ctl("service", "create", "-d", "--name", name, "--replicas", "1", SLEEPER)
        wait_until(
            lambda: any("engine down on 1 node" in t.status.err for t in node.manager.tasks(name)),
            20,
            what="the task pending, explained",
        )
        time.sleep(8)  # rejected tasks would have piled up by now (one every 5 s)
        tasks = node.manager.tasks(name)
        assert len(tasks) == 1
        assert tasks[0].status.state == 64  # PENDING
        engine.start()
        started = time.monotonic()
        wait_until(lambda: not node.node().status.engine_error, 20, what="the engine error cleared")
        print(f"engine back: cleared on the node after {time.monotonic() - started:.1f}s")
        assert "engine down" not in node.ctl("node", "ls").stdout
        wait_until(lambda: len(node.manager.running_tasks(name)) == 1, 60, what="the task running")
