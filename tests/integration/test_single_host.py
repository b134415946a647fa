"""A single-host cluster end to end: real etcd, real dockerd, real gRPC, driven by swarmctl."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from common.api import control_pb2
from tests.conftest import Cluster
from tests.harness import IMAGE, SLEEPER, wait_until

pytestmark = pytest.mark.docker


def running_slots(cluster: Cluster, name: str) -> list[int]:
    return sorted(t.slot for t in cluster.manager.running_tasks(name))


def started_at(container: Any) -> str:
    container.reload()
    return str(container.attrs["State"]["StartedAt"])


def test_create_runs_exactly_n_labelled_containers(cluster: Cluster, name: str) -> None:
    out = cluster.ctl(
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        "3",
        "-p",
        "80",
        IMAGE,
        check=True,
        timeout=90,
    )
    assert "converged" in out.stdout
    containers = cluster.containers(name)
    assert len(containers) == 3
    tasks = {t.id: t for t in cluster.manager.running_tasks(name)}
    assert len(tasks) == 3
    service = (
        cluster.manager.api().GetService(control_pb2.GetServiceRequest(service_id=name)).service
    )
    for c in containers:
        labels = c.labels
        assert labels["swarmlet.service.name"] == name
        assert labels["swarmlet.service.id"] == service.id
        assert labels["swarmlet.node.id"] == cluster.agent.node_id
        task = tasks[labels["swarmlet.task.id"]]
        assert labels["swarmlet.slot"] == str(task.slot)
        assert c.name == f"{name}.{task.slot}.{task.id}"
        assert c.status == "running"
    # Each task's published port is reported and serves.
    ps = cluster.ctl("service", "ps", name, check=True).stdout
    assert ps.count("Running") >= 3
    assert "->80/tcp" in ps


def test_scale_keeps_slots_one_to_n(cluster: Cluster, name: str) -> None:
    cluster.ctl("service", "create", "-d", "--name", name, "--replicas", "3", SLEEPER, check=True)
    wait_until(lambda: running_slots(cluster, name) == [1, 2, 3], 60, what="3 slots")
    cluster.ctl("service", "scale", f"{name}=5", check=True, timeout=90)
    assert running_slots(cluster, name) == [1, 2, 3, 4, 5]
    cluster.ctl("service", "scale", f"{name}=1", check=True, timeout=90)
    wait_until(lambda: running_slots(cluster, name) == [1], 60, what="only slot 1 left")
    wait_until(lambda: len(cluster.containers(name)) == 1, 60, what="one container running")


def test_killed_container_is_replaced_in_the_same_slot(cluster: Cluster, name: str) -> None:
    cluster.ctl(
        "service",
        "create",
        "-d",
        "--name",
        name,
        "--replicas",
        "2",
        "--restart-delay",
        "200ms",
        SLEEPER,
        check=True,
    )
    wait_until(lambda: running_slots(cluster, name) == [1, 2], 60, what="2 slots")
    victim = next(t for t in cluster.manager.running_tasks(name) if t.slot == 2)
    container = cluster.docker.containers.get(victim.status.container_status.container_id)
    container.kill()

    def replaced() -> bool:
        running = {t.slot: t.id for t in cluster.manager.running_tasks(name)}
        return running.get(2) not in (None, victim.id) and len(running) == 2

    wait_until(replaced, 30, what="a replacement in slot 2")
    old = next(t for t in cluster.manager.tasks(name) if t.id == victim.id)
    assert old.status.state == 704  # FAILED
    assert "non-zero exit (137)" in old.status.err
    ps = cluster.ctl("service", "ps", name, check=True).stdout
    assert "non-zero exit (137)" in ps
    assert r"\_" in ps


def test_restarting_the_agent_restarts_no_container(fresh_cluster: Cluster, name: str) -> None:
    c = fresh_cluster
    c.ctl("service", "create", "--name", name, "--replicas", "3", SLEEPER, check=True, timeout=90)
    before = {x.id: started_at(x) for x in c.containers(name)}
    assert len(before) == 3
    c.agent.stop()
    c.agent.start()
    c.wait_node_ready()
    # Give the new session time to sync: nothing may be restarted or replaced.
    wait_until(lambda: len(c.manager.running_tasks(name)) == 3, 30, what="3 running tasks")
    time.sleep(3)
    after = {x.id: started_at(x) for x in c.containers(name)}
    assert after == before
    assert len(c.manager.running_tasks(name)) == 3


def test_restarting_the_manager_keeps_services_and_tasks(fresh_cluster: Cluster, name: str) -> None:
    c = fresh_cluster
    c.ctl("service", "create", "--name", name, "--replicas", "2", SLEEPER, check=True, timeout=90)
    tasks_before = sorted((t.id, t.slot, t.status.state) for t in c.manager.running_tasks(name))
    containers_before = {x.id: started_at(x) for x in c.containers(name)}
    assert c.manager.stop() == 0  # SIGTERM: a clean exit
    c.manager.start()
    c.wait_node_ready()
    time.sleep(3)
    tasks_after = sorted((t.id, t.slot, t.status.state) for t in c.manager.running_tasks(name))
    assert tasks_after == tasks_before
    assert {x.id: started_at(x) for x in c.containers(name)} == containers_before
    ls = c.ctl("service", "ls", check=True).stdout
    assert name in ls
    assert "2/2" in ls


def test_service_rm_leaves_no_container(cluster: Cluster, name: str) -> None:
    cluster.ctl(
        "service", "create", "--name", name, "--replicas", "2", SLEEPER, check=True, timeout=90
    )
    assert len(cluster.containers(name)) == 2
    out = cluster.ctl("service", "rm", name, check=True)
    assert name in out.stdout
    wait_until(lambda: not cluster.containers(name, all=True), 30, what="containers removed")
    wait_until(
        lambda: not [t for t in cluster.manager.tasks() if t.service_name == name],
        30,
        what="tasks deleted",
    )
    assert name not in cluster.ctl("service", "ls", check=True).stdout


def test_drain_the_only_node_shuts_tasks_down_and_explains(
    fresh_cluster: Cluster, name: str
) -> None:
    c = fresh_cluster
    c.ctl("service", "create", "--name", name, "--replicas", "2", SLEEPER, check=True, timeout=90)
    c.ctl("node", "update", "--availability", "drain", "node-1", check=True)
    wait_until(lambda: not c.containers(name), 30, what="the drained node's containers stopped")

    def waiting() -> list[Any]:
        pending = [
            t for t in c.manager.tasks(name) if t.desired_state == 512 and t.status.state == 64
        ]
        return pending if len(pending) == 2 and all(t.status.err for t in pending) else []

    pending = wait_until(waiting, 30, what="2 new tasks waiting with an explanation")
    # The manager's node has no agent here (the agent joined as a node of its own).
    assert pending[0].status.err == (
        "no suitable node (1 manager with no agent; 1 node not available for new tasks)"
    )
    ps = c.ctl("service", "ps", name, check=True).stdout
    assert "no suitable node" in ps
    # Back to active: the waiting tasks are placed.
    c.ctl("node", "update", "--availability", "active", "node-1", check=True)
    wait_until(lambda: len(c.manager.running_tasks(name)) == 2, 60, what="tasks placed again")


def test_node_ls_and_inspect(cluster: Cluster) -> None:
    out = cluster.ctl("node", "ls", check=True).stdout
    assert "node-1" in out
    assert "Ready" in out
    assert "Active" in out
    inspected = json.loads(cluster.ctl("node", "inspect", "node-1", check=True).stdout)
    assert inspected[0]["id"] == cluster.agent.node_id
    assert inspected[0]["description"]["hostname"] == "node-1"
    assert inspected[0]["description"]["engine"]["engine_version"]


def test_sigterm_stops_the_manager_cleanly(fresh_cluster: Cluster) -> None:
    c = fresh_cluster
    assert c.manager.stop(signal.SIGTERM) == 0
    assert not c.manager.socket.exists()
    assert "manager stopped" in c.manager.process.log()
