"""Fixtures shared by every test: the Docker engine and a one-node cluster of real
processes (swarm-manager on an embedded etcd, swarm-agent on that engine)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest

from tests.harness import IMAGE, Agent, Manager, swarmctl, wait_until


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@pytest.fixture(scope="session")
def docker_host() -> str:
    return _docker_host()


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[Any]:
    client = docker.DockerClient(base_url=docker_host, version="auto")
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(
            f"no Docker engine answers at {docker_host} ({exc}): run the tests with `make test`, "
            "which starts one, or export DOCKER_HOST"
        )
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"test image {IMAGE} is missing: run scripts/build-images.sh (make test does)")
    yield client
    client.close()


@dataclass
class Cluster:
    """A manager and an agent; `ctl` runs swarmctl against the manager."""

    manager: Manager
    agent: Agent
    docker: Any

    def ctl(self, *args: str, check: bool = False, timeout: float = 120.0) -> Any:
        return swarmctl(self.manager.host, *args, check=check, timeout=timeout)

    def containers(self, service: str = "", all: bool = False) -> list[Any]:
        labels = [f"swarmlet.node.id={self.agent.node_id}"]
        if service:
            labels.append(f"swarmlet.service.name={service}")
        found: list[Any] = self.docker.containers.list(all=all, filters={"label": labels})
        return found

    def wait_node_ready(self) -> None:
        node_id = self.agent.node_id
        wait_until(
            lambda: any(n.id == node_id and n.status.state == 2 for n in self.manager.nodes()),
            30,
            what="the node to be ready",
        )


def start_cluster(docker_client: Any, docker_host: str, heartbeat: str = "1s") -> Cluster:
    """A manager and an agent; if the cluster does not come up, both are stopped again."""
    manager = Manager(heartbeat=heartbeat)
    agent: Agent | None = None
    try:
        manager.start()
        agent = Agent(
            [manager.addr], docker_host, hostname="node-1", join_token=manager.join_token()
        ).start()
        cluster = Cluster(manager, agent, docker_client)
        cluster.wait_node_ready()
    except BaseException:
        if agent is not None:
            agent.cleanup(docker_client)
        manager.cleanup()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(docker_client: Any, docker_host: str) -> Iterator[Cluster]:
    c = None
    try:
        c = start_cluster(docker_client, docker_host)
        yield c
    finally:
        if c is not None:
            c.agent.cleanup(docker_client)
            c.manager.cleanup()


@pytest.fixture
def fresh_cluster(docker_client: Any, docker_host: str) -> Iterator[Cluster]:
    """A cluster of its own, for tests that restart or break its processes."""
    c = None
    try:
        c = start_cluster(docker_client, docker_host)
        yield c
    finally:
        if c is not None:
            c.agent.cleanup(docker_client)
            c.manager.cleanup()


@pytest.fixture
def name() -> str:
    """A service name no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"
