"""A node whose agent restarts and opens its new session with another manager stays
ready: the manager that held the old session must not declare it down when that
session expires (found by the chaos suite: the node stayed down for good, its tasks
moved away, although its agent heartbeated).

An agent that stops cleanly (SIGTERM) says goodbye and its node stays ready for the
manager's restart grace; one killed without a goodbye is declared down as before."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster
from tests.harness import SLEEPER, Agent, EtcdCluster, Manager, short_tmpdir, wait_until

HOLLOW = ["--executor", "hollow", "--hollow-prepare", "10ms", "--hollow-start", "10ms"]
READY, DOWN = 2, 1
SHUTDOWN, REMOVE = 640, 800


@pytest.fixture
def two_managers() -> Iterator[tuple[Manager, Manager]]:
    etcd = EtcdCluster().start()
    managers: list[Manager] = []
    try:
        first = Manager(etcd=etcd.endpoints).start()
        managers.append(first)
        token = first.join_token("manager")
        managers.append(Manager(etcd=etcd.endpoints, extra=["--join-token", token]).start())
        yield first, managers[1]
    finally:
        for m in managers:
            m.cleanup()
        etcd.cleanup()


def test_restarted_agent_on_another_manager_is_not_declared_down(
    two_managers: tuple[Manager, Manager],
) -> None:
    first, second = two_managers
    state = short_tmpdir("swl-a-")
    token = first.join_token()
    old = Agent([second.addr], "unix:///nonexistent", state_dir=state, join_token=token,
                extra=HOLLOW).start()  # fmt: skip
    new: Agent | None = None
    try:
        node_id = old.node_id

        def state_of() -> int:
            return int(next(n.status.state for n in first.nodes() if n.id == node_id))

        wait_until(lambda: state_of() == READY, 30, what="the node ready")
        # The agent dies and comes back at once, talking to the first manager only; the
        # second still holds its old session, which expires three heartbeats later.
        old.stop(signal.SIGKILL)
        new = Agent([first.addr], "unix:///nonexistent", state_dir=state, extra=HOLLOW).start()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert state_of() == READY, "declared down although its agent heartbeats"
            time.sleep(0.2)
    finally:
        if new is not None:
            new.cleanup(None)
        old.cleanup(None)


# ---- agent restart grace (real manager, real agent, real dockerd) ----------------------


def _node_state(c: Cluster) -> int:
    node_id = c.agent.node_id
    return int(next(n.status.state for n in c.manager.nodes() if n.id == node_id))


def _containers_by_task(c: Cluster, name: str) -> dict[str, str]:
    return {x.labels["swarmlet.task.id"]: x.id for x in c.containers(name)}


@pytest.mark.docker
def test_agent_stopped_cleanly_and_restarted_late_restarts_no_container(
    fresh_cluster: Cluster, name: str
) -> None:
    """An agent upgrade: SIGTERM, a few seconds away (longer than 3 heartbeats), start
    again. The agent said goodbye, so its node stays ready through the restart grace:
    no task is replaced, no container restarted."""
    c = fresh_cluster
    c.ctl("service", "create", "--name", name, "--replicas", "2", SLEEPER, check=True, timeout=90)
    before = _containers_by_task(c, name)
    assert len(before) == 2
    tasks_before = {t.id for t in c.manager.tasks(name)}
    assert c.agent.stop(signal.SIGTERM) == 0
    # Longer than MISSED_HEARTBEATS (3) periods of 1 s: without the grace the node is
    # declared down in this time and its tasks replaced.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert _node_state(c) == READY, "declared down although its agent said goodbye"
        time.sleep(0.2)
    node = next(n for n in c.manager.nodes() if n.id == c.agent.node_id)
    assert "agent restarting" in node.status.message
    c.agent.start()
    c.wait_node_ready()
    wait_until(lambda: len(c.manager.running_tasks(name)) == 2, 30, what="2 running tasks")
    time.sleep(3)  # the new session's full assignment set has been applied by now
    assert _containers_by_task(c, name) == before
    assert {t.id for t in c.manager.tasks(name)} == tasks_before
    node = next(n for n in c.manager.nodes() if n.id == c.agent.node_id)
    assert node.status.message == ""


@pytest.mark.docker
def test_agent_killed_is_declared_down_after_missed_heartbeats(
    fresh_cluster: Cluster, name: str
) -> None:
    """No goodbye (SIGKILL, a dead host): the node is down after the usual 3 periods."""
    c = fresh_cluster
    c.ctl("service", "create", "--name", name, "--replicas", "1", SLEEPER, check=True, timeout=90)
    c.agent.stop(signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: _node_state(c) == DOWN, 15, what="the node down")
    down_after = time.monotonic() - killed
    print(f"SIGKILLed agent: node down after {down_after:.1f}s")
    assert down_after < 8


# ---- a node that comes back, and the history of what its tasks became -----------------


def _task(c: Cluster, task_id: str) -> Any:
    return next((t for t in c.manager.tasks() if t.id == task_id), None)


@pytest.mark.docker
def test_node_back_before_the_replacement_runs_keeps_its_running_container(
    fresh_cluster: Cluster, name: str
) -> None:
    """Killed agent: the node is declared down and its task replaced (shut down, "node
    down"); the replacement has nowhere to run. The agent comes back: the old task lives
    again in the same container and the replacement is retired."""
    c = fresh_cluster
    c.ctl("service", "create", "--name", name, "--replicas", "1", SLEEPER, check=True, timeout=90)
    before = _containers_by_task(c, name)
    (old_id,) = before
    c.agent.stop(signal.SIGKILL)
    wait_until(lambda: _node_state(c) == DOWN, 15, what="the node down")

    def replaced() -> bool:
        old = _task(c, old_id)
        return (
            old is not None
            and old.desired_state == SHUTDOWN
            and old.shutdown_reason == "node down"
            and len(c.manager.tasks(name)) == 2
        )

    wait_until(replaced, 15, what="the task shut down and replaced")
    assert "node down" in c.ctl("service", "ps", name, check=True).stdout
    c.agent.start()
    c.wait_node_ready()
    wait_until(
        lambda: [t.id for t in c.manager.running_tasks(name)] == [old_id],
        30,
        what="the old task running again",
    )
    time.sleep(3)
    assert _containers_by_task(c, name) == before  # same container: nothing restarted
    assert [t.id for t in c.manager.running_tasks(name)] == [old_id]
    others = [t for t in c.manager.tasks(name) if t.id != old_id]
    assert all(t.desired_state == REMOVE for t in others)
    assert _task(c, old_id).shutdown_reason == ""


@pytest.mark.docker
def test_replacement_running_first_wins_and_service_ps_says_why(
    fresh_cluster: Cluster, name: str
) -> None:
    """The replacement runs on another node before the lost node comes back: the old
    task is stopped when its node returns, and its history entry says "node down"."""
    c = fresh_cluster
    c.ctl("service", "create", "--name", name, "--replicas", "1", SLEEPER, check=True, timeout=90)
    (old_id,) = _containers_by_task(c, name)
    other = Agent(
        [c.manager.addr],
        "unix:///nonexistent",
        hostname="hollow-2",
        join_token=c.manager.join_token(),
        extra=HOLLOW,
    ).start()
    try:
        other_id = other.node_id
        wait_until(
            lambda: any(n.id == other_id and n.status.state == READY for n in c.manager.nodes()),
            30,
            what="the second node ready",
        )
        c.agent.stop(signal.SIGKILL)
        wait_until(
            lambda: [t.node_id for t in c.manager.running_tasks(name)] == [other_id],
            30,
            what="the replacement running on the other node",
        )
        c.agent.start()
        c.wait_node_ready()
        # Stopped and removed (the task stays in the history, its container is stale).
        wait_until(lambda: not c.containers(name, all=True), 30, what="the old container removed")
        old = _task(c, old_id)
        assert old.desired_state == SHUTDOWN
        assert old.shutdown_reason == "node down"
        ps = c.ctl("service", "ps", name, check=True).stdout
        line = next(x for x in ps.splitlines() if x.startswith(old_id[:12]))
        assert "node down" in line
        assert "Shutdown" in line
    finally:
        other.cleanup(None)
