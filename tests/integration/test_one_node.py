"""One node per host: the agent on a manager's host runs the manager's own node (it
starts with the identity the manager writes to <state-dir>/node), so `node ls` shows
one row per host, and a label put on that row is where constrained tasks go. A manager
that no agent runs is named when a task fits nowhere. Real etcd, real gRPC, real
dockerd (hollow agents for the several-managers case)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from manager.ca.credentials import local_node_dir
from tests.harness import SLEEPER, Agent, EtcdCluster, Manager, swarmctl, wait_until

PENDING, RUNNING = 64, 512
READY = 2
MANAGER_ROLE = 1
HOLLOW = ["--executor", "hollow", "--hollow-prepare", "10ms", "--hollow-start", "10ms"]


def manager_id(m: Manager) -> str:
    return (m.state_dir / "manager_id").read_text().strip()


def local_agent(
    m: Manager, docker_host: str, hostname: str, extra: list[str] | None = None
) -> Agent:
    """The agent on the manager's host: no join token, the manager's node identity."""
    return Agent(
        [m.addr], docker_host, hostname=hostname, state_dir=local_node_dir(m.state_dir), extra=extra
    )


def node_rows(m: Manager) -> list[str]:
    return swarmctl(m.host, "node", "ls", check=True).stdout.splitlines()[1:]


def ready_with_engine(m: Manager, node_id: str) -> Any:
    for n in m.nodes(managers=True):
        if n.id == node_id and n.status.state == READY and n.description.engine.engine_version:
            return n
    return None


@pytest.fixture
def manager() -> Iterator[Manager]:
    m = Manager()
    try:
        yield m.start()
    finally:
        m.cleanup()


@pytest.mark.docker
def test_the_agent_on_the_managers_host_is_the_managers_node(
    manager: Manager, docker_client: Any, docker_host: str, name: str
) -> None:
    me = manager_id(manager)
    agent = local_agent(manager, docker_host, "onenode-1").start()
    try:
        node = wait_until(lambda: ready_with_engine(manager, me), 30, what="the manager's node")
        assert node.role == MANAGER_ROLE
        assert node.description.hostname == "onenode-1"
        # One row: the manager (Leader) with the agent's engine.
        [row] = wait_until(lambda: node_rows(manager), 10, what="node ls")
        assert row.split()[1:] == [
            "onenode-1",
            "Ready",
            "Active",
            "Leader",
            node.description.engine.engine_version,
        ]
        # Labelled as a Swarm user would, the one node takes the constrained service.
        swarmctl(manager.host, "node", "update", "--label-add", "zone=a", "onenode-1", check=True)
        out = swarmctl(
            manager.host,
            "service",
            "create",
            "--name",
            name,
            "--replicas",
            "2",
            "--constraint",
            "node.labels.zone==a",
            SLEEPER,
            check=True,
            timeout=90,
        )
        assert "converged" in out.stdout
        tasks = [t for t in manager.tasks(name) if t.desired_state == RUNNING]
        assert [t.node_id for t in tasks] == [me, me]
        containers = docker_client.containers.list(
            filters={"label": [f"swarmlet.node.id={me}", f"swarmlet.service.name={name}"]}
        )
        assert len(containers) == 2
        assert all(c.status == "running" for c in containers)
        inspected = json.loads(swarmctl(manager.host, "node", "inspect", me, check=True).stdout)
        assert inspected[0]["spec"]["annotations"]["labels"] == {"zone": "a"}
        # The manager restarting keeps the identity the agent has (it renews it itself).
        cert = (local_node_dir(manager.state_dir) / "certificates" / "node.crt").read_bytes()
        manager.stop()
        manager.start()
        assert (local_node_dir(manager.state_dir) / "certificates" / "node.crt").read_bytes() == (
            cert
        )
        wait_until(lambda: ready_with_engine(manager, me), 30, what="the node back")
        assert len(node_rows(manager)) == 1
    finally:
        swarmctl(manager.host, "service", "rm", name)
        agent.cleanup(docker_client)


@pytest.mark.docker
def test_a_manager_without_an_agent_is_named_then_takes_tasks_once_one_runs_it(
    manager: Manager, docker_client: Any, docker_host: str, name: str
) -> None:
    # The layout of the issue: the agent joined as a node of its own, and the user
    # labelled the manager's node (the first row of node ls).
    me = manager_id(manager)
    worker = Agent(
        [manager.addr], docker_host, hostname="worker-1", join_token=manager.join_token()
    ).start()
    agent: Agent | None = None
    try:
        wait_until(
            lambda: any(n.status.state == READY for n in manager.nodes()),
            30,
            what="the worker ready",
        )
        swarmctl(manager.host, "node", "update", "--label-add", "zone=a", me, check=True)
        swarmctl(
            manager.host,
            "service",
            "create",
            "-d",
            "--name",
            name,
            "--constraint",
            "node.labels.zone==a",
            SLEEPER,
            check=True,
        )
        explanation = (
            "no suitable node (1 manager with no agent; "
            "scheduling constraints not satisfied on 1 node)"
        )

        def explained() -> list[Any]:
            return [
                t
                for t in manager.tasks(name)
                if t.status.state == PENDING and t.status.err == explanation
            ]

        wait_until(explained, 30, what="the task waiting with the manager named")
        ps = swarmctl(manager.host, "service", "ps", "--no-trunc", name, check=True).stdout
        assert "1 manager with no agent" in ps
        # The dry run names it too.
        preview = json.loads(
            swarmctl(
                manager.host,
                "service",
                "create",
                "--dry-run",
                "--format",
                "json",
                "--name",
                f"{name}-dry",
                "--constraint",
                "node.labels.zone==a",
                SLEEPER,
                check=True,
            ).stdout
        )
        reasons = {r["node_id"]: r["reason"] for r in preview["rejections"]}
        assert reasons[me] == "a manager with no agent (no engine to run tasks)"
        # An agent started on the manager's node: the waiting task goes there.
        agent = local_agent(manager, docker_host, "manager-1").start()
        wait_until(
            lambda: [t.node_id for t in manager.running_tasks(name)] == [me],
            60,
            what="the task running on the manager's node",
        )
    finally:
        swarmctl(manager.host, "service", "rm", name)
        if agent is not None:
            agent.cleanup(docker_client)
        worker.cleanup(docker_client)


@pytest.fixture
def two_managers() -> Iterator[tuple[list[Manager], list[Agent]]]:
    etcd = EtcdCluster(size=1).start()
    managers: list[Manager] = []
    agents: list[Agent] = []
    try:
        first = Manager(etcd=etcd.endpoints).start()
        managers.append(first)
        token = first.join_token("manager")
        managers.append(Manager(etcd=etcd.endpoints, extra=["--join-token", token]).start())
        for i, m in enumerate(managers, start=1):
            agents.append(local_agent(m, "unix:///nonexistent", f"host-{i}", HOLLOW).start())
        yield managers, agents
    finally:
        for a in agents:
            a.cleanup(None)
        for m in managers:
            m.cleanup()
        etcd.cleanup()


def test_each_manager_is_its_own_node_with_its_hosts_agent(
    two_managers: tuple[list[Manager], list[Agent]], name: str
) -> None:
    managers, _agents = two_managers
    first, second = managers
    ids = [manager_id(m) for m in managers]
    for node_id in ids:
        wait_until(lambda: ready_with_engine(first, node_id), 30, what=f"node {node_id} ready")  # noqa: B023
    rows = node_rows(first)
    assert len(rows) == 2
    statuses = sorted(row.split()[4] for row in rows)
    assert statuses == ["Leader", "Reachable"]
    swarmctl(
        first.host,
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        "4",
        SLEEPER,
        check=True,
        timeout=90,
    )
    on = sorted(t.node_id for t in first.running_tasks(name))
    assert on == sorted([ids[0], ids[0], ids[1], ids[1]])
    # The first manager stops: its host's agent moves to the other manager, and the
    # node stays one row, still ready, its tasks untouched.
    before = {t.id for t in first.running_tasks(name)}
    first.stop()
    wait_until(lambda: ready_with_engine(second, ids[0]), 30, what="the node on the other manager")
    wait_until(lambda: len(node_rows(second)) == 2, 10, what="node ls")
    assert {t.id for t in second.running_tasks(name)} == before
