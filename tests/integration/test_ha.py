"""Several managers on a 3-member etcd cluster: leader election, failover, agents moving
between managers, and etcd faults. Agents are hollow (what is tested is the managers)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from common.api import control_pb2
from tests.harness import Agent, EtcdCluster, Manager, free_port, swarmctl, wait_until

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


def sessions_established(agents: Agent, since: int) -> dict[str, str]:
    """node id -> manager of each agent's latest session opened after log offset `since`."""
    latest: dict[str, str] = {}
    for line in agents.process.log()[since:].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "session established":
            latest[record["node_id"]] = record["manager"]
    return latest


def test_agents_leave_a_silent_manager_without_restarting_anything(ha: HA) -> None:
    """SIGSTOP the agents' manager: like a dead or cut-off host, its connections go
    silent (no RST). The agents must notice and move to another manager before its
    lease and anyone's grace run out: no node goes down, no task is replaced, also
    after the stopped manager comes back."""
    first = ha.managers[0]  # every agent's manager
    swarmctl(first.host, "service", "create", "--name", "web", "--replicas", "3", "busybox",
             check=True)  # fmt: skip
    before = sorted(t.id for t in first.running_tasks("web"))
    nodes = {n.id for n in first.nodes()}
    assert set(sessions_established(ha.agents, 0).values()) == {first.addr}
    mark = len(ha.agents.process.log())
    assert first.process.proc is not None
    first.process.proc.send_signal(signal.SIGSTOP)
    try:
        moved = wait_until(
            lambda: (s := sessions_established(ha.agents, mark)).keys() == nodes and s,
            20,
            what="every agent in session with another manager",
        )
        assert first.addr not in moved.values()
        other = next(m for m in ha.managers if m.addr in moved.values())
        # Longer than any grace (3 periods, 6 after a leader change): a node that lost
        # its session would be declared down within this.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert ha.ready_workers(other) == 3
            time.sleep(0.5)
        # It comes back (a healed partition): its stale sessions must not undo the move.
        first.process.proc.send_signal(signal.SIGCONT)
        first.wait_ready()
        time.sleep(4)
        for m in ha.managers:
            assert ha.ready_workers(m) == 3
            assert sorted(t.id for t in m.running_tasks("web")) == before
    finally:
        if first.process.proc is not None:
            first.process.proc.send_signal(signal.SIGCONT)


def test_an_agent_gives_up_a_silent_manager_within_a_heartbeat_period() -> None:
    """The detection itself, with a period long enough to tell it from the heartbeat
    deadline (2 periods after a heartbeat sent up to a period after the last): a
    stopped manager is given up within a period, not ~3; and each further attempt on
    it is given up once the connection is not up within a period (not 10 s). The agent
    knows of a second manager (an address where none listens): an agent watches its
    manager's liveness when there is another to move to."""
    period = 3.0
    m = Manager(heartbeat=f"{period:g}s").start()
    nobody = f"127.0.0.1:{free_port()}"
    agent = Agent([m.addr, nobody], "unix:///nonexistent", join_token=m.join_token(),
                  extra=["--executor", "hollow"]).start()  # fmt: skip
    try:
        node_id = agent.node_id
        wait_until(lambda: any(n.id == node_id and n.status.state == 2 for n in m.nodes()), 20,
                   what="the node to be ready")  # fmt: skip
        mark = len(agent.process.log())
        assert m.process.proc is not None
        m.process.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()

        def failures() -> list[str]:
            lines = agent.process.log()[mark:].splitlines()
            return [line for line in lines if '"no session with manager"' in line]

        wait_until(failures, 4 * period, 0.05, what="the agent to give up the silent manager")
        # Within one period (plus slack for a loaded machine); the heartbeat deadline
        # alone would take at least 2.8 periods.
        assert time.monotonic() - stopped < 2 * period
        wait_until(
            lambda: any(f"no connection within {period:g}s" in r for r in failures()[1:]),
            6 * period,
            what="an attempt on the stopped manager given up within a period",
        )
    finally:
        if m.process.proc is not None:
            m.process.proc.send_signal(signal.SIGCONT)
        agent.cleanup(None)
        m.cleanup()


def test_losing_one_etcd_member_interrupts_nothing(ha: HA) -> None:
    # The leader, the worst case: reads fail with "leader changed" during the election.
    lost = ha.etcd.leader()
    m = ha.managers[1]
    api = m.api()
    ha.etcd.stop_member(lost)
    # Every call through the election is answered (polled: the window is about a second).
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        api.ListServices(control_pb2.ListServicesRequest(), timeout=10)
        time.sleep(0.05)
    swarmctl(m.host, "service", "create", "-d", "--name", "web", "--replicas", "3", "busybox",
             check=True)  # fmt: skip
    wait_until(lambda: len(m.running_tasks("web")) == 3, 30, what="placed with 2 of 3 members")
    ha.etcd.start_member(lost)


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
