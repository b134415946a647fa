"""swarmlet across hosts: the local 3-host cluster (network namespaces, each with its own
dockerd and agent, a registry, mutual TLS), driven through swarmctl like an operator
would. What is checked is what each host's own Docker engine runs."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from tests.clusterlib import (
    DOWN,
    READY,
    LocalCluster,
    container_problems,
    daemon_pids,
    fetch,
    running,
    slot_problems,
)
from tests.harness import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.cluster]

# The manager's defaults: a node is down after 3 missed heartbeats of 1 s.
DOWN_WITHIN = 10.0
MOVED_WITHIN = 20.0


@pytest.fixture
def name(local_cluster: LocalCluster) -> Iterator[str]:
    """A service name of the test's own; the service is removed afterwards."""
    svc = f"t{uuid.uuid4().hex[:8]}"
    yield svc
    local_cluster.ctl("service", "rm", svc, check=False)
    wait_until(
        lambda: not any(local_cluster.running_on_hosts(svc).values()),
        30,
        what=f"{svc}'s containers to be gone",
    )


def create(cluster: LocalCluster, name: str, replicas: int, *args: str) -> None:
    # Without -d, swarmctl returns once the service has converged.
    cluster.ctl(
        "service", "create", "--name", name, "--replicas", str(replicas), *args,
        cluster.image(), timeout=120,
    )  # fmt: skip


def converged(cluster: LocalCluster) -> list[str]:
    """What stops the cluster from being converged: empty or doubled slots, containers
    that no running task owns (on every host's engine)."""
    tasks = cluster.tasks()
    return slot_problems(cluster.services(), tasks, cluster.nodes()) + container_problems(
        cluster, tasks
    )


def test_a_second_up_is_harmless(local_cluster: LocalCluster, name: str) -> None:
    """`scripts/cluster.sh up 3` again on the running cluster: the same nodes, the same
    daemons (no process restarted), the same tasks and containers."""
    create(local_cluster, name, 3)
    nodes = local_cluster.node_ids()
    daemons = daemon_pids()
    assert {"manager/manager.pid", "manager/etcd.pid", "h1/agent.pid", "h1/dockerd.pid"} <= set(
        daemons
    )
    tasks = sorted(t.id for t in local_cluster.tasks(name) if running(t))
    containers = {n: sorted(c.id for c in local_cluster.containers(n)) for n in (1, 2, 3)}
    local_cluster.script("up", "3", timeout=600)
    assert local_cluster.node_ids() == nodes
    assert len(local_cluster.nodes()) == len(nodes) + 1  # and the manager: nothing new
    assert all(local_cluster.node_state(h) == READY for h in nodes)
    assert daemon_pids() == daemons
    assert sorted(t.id for t in local_cluster.tasks(name) if running(t)) == tasks
    assert {n: sorted(c.id for c in local_cluster.containers(n)) for n in (1, 2, 3)} == containers


def test_replicas_spread_evenly_and_serve_pages(local_cluster: LocalCluster, name: str) -> None:
    create(local_cluster, name, 6, "-p", "80")
    assert local_cluster.running_on_hosts(name) == {1: 2, 2: 2, 3: 2}
    # A page from every task, through its host's address and the port the engine bound.
    ids = {v: k for k, v in local_cluster.node_ids().items()}
    served = 0
    for task in local_cluster.tasks(name):
        if not running(task):
            continue
        [port] = task.status.port_status.ports
        host = int(ids[task.node_id].removeprefix("h"))
        body = fetch(local_cluster.host_addr(host), port.published_port)
        assert "hello from swarmlet" in body
        served += 1
    assert served == 6


def test_a_node_label_constraint_lands_only_there(local_cluster: LocalCluster, name: str) -> None:
    local_cluster.ctl("node", "update", "--label-add", f"{name}=yes", "h2")
    try:
        create(local_cluster, name, 4, "--constraint", f"node.labels.{name}==yes")
        assert local_cluster.running_on_hosts(name) == {1: 0, 2: 4, 3: 0}
    finally:
        local_cluster.ctl("node", "update", "--label-rm", name, "h2")


def test_drain_moves_tasks_off_within_seconds(local_cluster: LocalCluster, name: str) -> None:
    create(local_cluster, name, 6)
    assert local_cluster.running_on_hosts(name)[1] == 2
    started = time.monotonic()
    local_cluster.ctl("node", "update", "--availability", "drain", "h1")
    try:

        def moved() -> bool:
            on = local_cluster.running_on_hosts(name)
            live = [t for t in local_cluster.tasks(name) if running(t)]
            return on[1] == 0 and on[2] + on[3] == 6 and len(live) == 6

        wait_until(moved, 15, 0.2, what="h1's tasks to run on h2 and h3")
        took = time.monotonic() - started
        assert took < 10, f"drain took {took:.1f}s"
        assert not converged(local_cluster)
    finally:
        local_cluster.ctl("node", "update", "--availability", "active", "h1")


def _fault_then_back(cluster: LocalCluster, name: str, host: int, fault: str, repair: str) -> None:
    """`fault` host `host`: it is declared down and its tasks run elsewhere; `repair`
    it: its stale containers go, and every slot has exactly one running task."""
    create(cluster, name, 6)
    hostname = f"h{host}"
    before = {t.id for t in cluster.tasks(name) if running(t)}
    assert cluster.running_on_hosts(name)[host] == 2
    node_id = cluster.node_ids()[hostname]
    started = time.monotonic()
    cluster.script(fault, str(host))
    try:
        wait_until(
            lambda: cluster.node_state(hostname) == DOWN, DOWN_WITHIN, 0.2,
            what=f"{hostname} to be declared down",
        )  # fmt: skip
        down_after = time.monotonic() - started

        def elsewhere() -> bool:
            live = [t for t in cluster.tasks(name) if running(t) and t.node_id != node_id]
            return len(live) == 6

        wait_until(elsewhere, MOVED_WITHIN, 0.2, what=f"{hostname}'s tasks to run elsewhere")
        moved_after = time.monotonic() - started
        # Only the lost host's tasks were replaced.
        now = {t.id for t in cluster.tasks(name) if running(t)}
        assert len(before - now) == 2, (before, now)
    finally:
        cluster.script(repair, str(host))
    wait_until(lambda: cluster.node_state(hostname) == READY, 60, 0.2, what=f"{hostname} back")
    # Its stale containers are removed, and nothing is doubled.
    problems: list[str] = []

    def settled() -> bool:
        problems[:] = converged(cluster)
        return not problems

    try:
        wait_until(settled, 30, 0.5, what=f"converged after {repair}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {problems}") from None
    assert not cluster.containers(host)
    print(f"{fault} h{host}: down after {down_after:.1f}s, tasks moved after {moved_after:.1f}s")


def test_a_killed_host_is_declared_down_and_its_tasks_move(
    local_cluster: LocalCluster, name: str
) -> None:
    _fault_then_back(local_cluster, name, 3, "kill-host", "restore-host")


def test_a_cut_link_is_declared_down_and_its_tasks_move(
    local_cluster: LocalCluster, name: str
) -> None:
    _fault_then_back(local_cluster, name, 2, "cut-link", "heal-link")


def test_service_logs_gather_the_lines_of_every_host(
    local_cluster: LocalCluster, name: str
) -> None:
    """Issue 7: `service logs` shows the lines of 3 tasks on 2 or more hosts, each under
    its task's `name.slot.taskid@node |` prefix, streamed from each host's agent."""
    local_cluster.ctl(
        "service", "create", "--name", name, "--replicas", "3", local_cluster.image("sleeper"),
        "sh", "-c", "trap 'exit 0' TERM INT; echo hello-$HOSTNAME; sleep 3600 & wait",
        timeout=120,
    )  # fmt: skip
    tasks = [t for t in local_cluster.tasks(name) if running(t)]
    assert len(tasks) == 3
    hostnames = {n.id: n.description.hostname for n in local_cluster.nodes()}
    assert len({t.node_id for t in tasks}) >= 2, [hostnames[t.node_id] for t in tasks]
    # Each container's hostname is the first 12 characters of its id.
    expected = sorted(
        f"{name}.{t.slot}.{t.id[:12]}@{hostnames[t.node_id]}    | "
        f"hello-{t.status.container_status.container_id[:12]}"
        for t in tasks
    )

    def lines() -> list[str] | None:
        out = sorted(local_cluster.ctl("service", "logs", name, timeout=30).splitlines())
        return out if len(out) >= 3 else None

    assert wait_until(lines, 30, 0.5, what="the lines of the 3 tasks") == expected
