"""Several managers on a 3-member etcd cluster: leader election, failover, agents moving
between managers, and etcd faults. Agents are hollow (what is tested is the managers)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from common.api import control_pb2
from tests.harness import Agent, EtcdCluster, Manager, swarmctl, wait_until

HOLLOW = ["--executor", "hollow", "--count", "3", "--hollow-prepare", "10ms",
          "--hollow-start", "10ms"]  # fmt: skip


@dataclass
class HA:
    etcd: EtcdCluster
    managers: list[Manager]
    agents: Agent

    def manager_id(self, m: Manager) -> str:
        return (m.state_dir / "manager_id").read_text().strip()

    def live(self) -> list[Manager]:
        return [m for m in self.managers if m.process.running]

    def leader(self) -> Manager:
        """The manager whose own view says it leads (waits for one)."""

        def find() -> Manager | None:
            for m in self.live():
                me = self.manager_id(m)
                for n in m.nodes(managers=True):
                    if n.id == me and n.manager_status.leader:
                        return m
            return None

        found = wait_until(find, 30, what="a leader")
        assert found is not None
        return found

    def ready_workers(self, m: Manager) -> int:
        return sum(1 for n in m.nodes() if n.status.state == 2)


@pytest.fixture
def ha() -> Iterator[HA]:
    etcd = EtcdCluster().start()
    managers: list[Manager] = []
    agents: Agent | None = None
    try:
        first = Manager(etcd=etcd.endpoints).start()
        managers.append(first)
        token = first.join_token("manager")
        for _ in range(2):
            managers.append(Manager(etcd=etcd.endpoints, extra=["--join-token", token]).start())
        # The agents know the first manager only; they learn the others in their sessions.
        agents = Agent([first.addr], "unix:///nonexistent", join_token=first.join_token(),
                       extra=HOLLOW).start()  # fmt: skip
        cluster = HA(etcd, managers, agents)
        wait_until(lambda: cluster.ready_workers(first) == 3, 30, what="3 ready nodes")
        yield cluster
    finally:
        if agents is not None:
            agents.cleanup(None)
        for m in managers:
            m.cleanup()
        etcd.cleanup()


def test_one_leader_and_every_manager_serves(ha: HA) -> None:
    leader = ha.leader()
    statuses = sorted(n.manager_status.leader for n in leader.nodes(managers=True) if n.role == 1)
    assert statuses == [False, False, True]
    out = swarmctl(ha.managers[2].host, "node", "ls", check=True).stdout
    assert out.count("Leader") == 1
    assert out.count("Reachable") == 2
    # Every manager serves the control API: create on a follower, read on another.
    follower = next(m for m in ha.managers if m is not leader)
    swarmctl(follower.host, "service", "create", "-d", "--name", "web", "--replicas", "6",
             "busybox", check=True)  # fmt: skip
    wait_until(lambda: len(ha.managers[0].running_tasks("web")) == 6, 30, what="6 running")


def test_a_manager_needs_the_manager_token_to_join(ha: HA) -> None:
    for extra, message in [
        ([], "start it with --join-token"),
        (["--join-token", ha.managers[0].join_token("worker")], "not this cluster's manager"),
    ]:
        m = Manager(etcd=ha.etcd.endpoints, extra=extra)
        try:
            m.process.start()
            assert m.process.proc is not None
            assert m.process.proc.wait(30) == 1
            assert message in m.process.log()
        finally:
            m.cleanup()


def test_killing_the_leader_fails_over_without_restarting_tasks(ha: HA) -> None:
    swarmctl(ha.managers[0].host, "service", "create", "--name", "web", "--replicas", "6",
             "busybox", check=True)  # fmt: skip
    before = sorted(t.id for t in ha.managers[0].running_tasks("web"))
    old = ha.leader()
    old_id = ha.manager_id(old)
    started = time.monotonic()
    old.stop(signal.SIGKILL)
    survivor = ha.live()[0]
    new = ha.leader()
    assert ha.manager_id(new) != old_id
    swarmctl(survivor.host, "service", "create", "-d", "--name", "after", "--replicas", "3",
             "busybox", check=True)  # fmt: skip
    wait_until(lambda: len(survivor.running_tasks("after")) == 3, 30, what="new service placed")
    took = time.monotonic() - started
    assert took < 15
    # Nodes stay ready through the extended grace, and nothing was restarted.
    time.sleep(8)
    assert ha.ready_workers(survivor) == 3
    assert sorted(t.id for t in survivor.running_tasks("web")) == before
    out = swarmctl(survivor.host, "node", "ls", check=True).stdout
    assert "Unreachable" in out


def test_agents_move_to_another_manager_when_theirs_dies(ha: HA) -> None:
    first = ha.managers[0]
    swarmctl(first.host, "service", "create", "--name", "web", "--replicas", "3", "busybox",
             check=True)  # fmt: skip
    before = sorted(t.id for t in first.running_tasks("web"))
    first.stop(signal.SIGKILL)  # the manager every agent is connected to
    other = ha.live()[0]
    wait_until(lambda: ha.ready_workers(other) == 3, 10, what="nodes still ready")
    time.sleep(8)  # longer than any grace: a node that lost its session would be down by now
    assert ha.ready_workers(other) == 3
    assert sorted(t.id for t in other.running_tasks("web")) == before
    assert "session established" in ha.agents.process.log()


def test_losing_one_etcd_member_interrupts_nothing(ha: HA) -> None:
    ha.etcd.stop_member("e3")
    m = ha.managers[1]
    swarmctl(m.host, "service", "create", "-d", "--name", "web", "--replicas", "3", "busybox",
             check=True)  # fmt: skip
    wait_until(lambda: len(m.running_tasks("web")) == 3, 30, what="placed with 2 of 3 members")
    ha.etcd.start_member("e3")


def test_losing_etcd_quorum_is_unavailable_then_resumes(ha: HA) -> None:
    m = ha.managers[0]
    swarmctl(m.host, "service", "create", "--name", "web", "--replicas", "3", "busybox",
             check=True)  # fmt: skip
    before = sorted(t.id for t in m.running_tasks("web"))
    ha.etcd.stop_member("e2")
    ha.etcd.stop_member("e3")

    def refused() -> bool:
        result = swarmctl(m.host, "service", "ls", timeout=30)
        return result.returncode != 0 and "does not answer" in result.stderr

    wait_until(refused, 20, what="the control API to refuse")
    with pytest.raises(grpc.RpcError) as err:
        m.api().ListServices(control_pb2.ListServicesRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Traceback" not in swarmctl(m.host, "service", "ls").stderr
    time.sleep(3)
    ha.etcd.start_member("e2")
    ha.etcd.start_member("e3")
    wait_until(ha.etcd.healthy, 30, what="etcd quorum back")
    wait_until(lambda: swarmctl(m.host, "service", "ls").returncode == 0, 30, what="API back")
    # The agents kept their tasks; once etcd is back nothing was replaced.
    wait_until(lambda: len(m.running_tasks("web")) == 3, 30, what="3 running")
    time.sleep(8)
    assert sorted(t.id for t in m.running_tasks("web")) == before
    swarmctl(m.host, "service", "scale", "-d", "web=4", check=True)
    wait_until(lambda: len(m.running_tasks("web")) == 4, 30, what="changes resume")
