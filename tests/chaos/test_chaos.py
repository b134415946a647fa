"""Faults an operator meets, one after the other on one cluster, each followed by the
checks: desired state (in etcd) equals what clients were last told, every slot has
exactly one running task (one per eligible node for the global service), no container
runs that no task owns (every host's engine), and no task is stuck in a transitional
state once the cluster has converged.

Services: `hol` (hollow replicas on the farm), `real` (demo containers on the three
namespace hosts, restart delay 1 s) and `glob` (a global service on those hosts).
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable

import pytest

from tests.chaos.conftest import (
    FARM_ONLY,
    HOL_BASE,
    HOLLOW,
    KILL_LOOP,
    REAL_BASE,
    ROUNDS,
    Chaos,
    signal_pid,
    wait_gone,
)
from tests.chaos.ledger import Expect
from tests.clusterlib import DOWN, RUN
from tests.harness import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.cluster, pytest.mark.chaos]


def _host(round_: int, shift: int) -> int:
    return 1 + (round_ + shift) % 3


def kill_leader_during_scale_up(c: Chaos, round_: int) -> None:
    """kill -9 the leader while it scales up 200 hollow replicas and 10 containers."""
    c.scale("hol", HOL_BASE)
    c.scale("real", REAL_BASE)
    c.assert_converged("scaling back to the base")
    leader = c.leader()
    follower = next(m for m in (1, 2, 3) if m != leader)
    ops = [
        threading.Thread(target=c.scale, args=("hol", HOL_BASE + 200, leader)),
        threading.Thread(target=c.scale, args=("real", 10, follower)),
    ]
    for t in ops:
        t.start()
    time.sleep(random.uniform(0.3, 0.9))  # swarmctl's start-up is ~0.4 s
    c.cluster.script("kill-manager", str(leader))
    for t in ops:
        t.join(90)
    wait_until(lambda: c.leader() != leader, 30, 0.5, what="a new leader")
    c.cluster.script("restore-manager", str(leader))


def kill_agent(c: Chaos, round_: int) -> None:
    """SIGKILL a host's agent, then start it again: its containers are adopted."""
    n = _host(round_, 0)
    c.cluster.script("kill-agent", str(n))
    time.sleep(1)
    c.cluster.script("restore-host", str(n))


def restart_dockerd(c: Chaos, round_: int) -> None:
    """Stop a host's dockerd (SIGTERM: it stops its containers) and start it again."""
    n = _host(round_, 1)
    pid = c.pid(RUN / f"h{n}" / "dockerd.pid")
    assert pid is not None
    signal_pid(pid)
    assert not wait_gone([pid], 60), f"dockerd of h{n} did not stop"
    c.cluster.script("restore-host", str(n))


def kill_containers(c: Chaos, round_: int) -> None:
    """docker kill a running task's container, again and again."""
    for _ in range(KILL_LOOP):
        running = [
            (n, ct)
            for n in c.cluster.hosts
            for ct in c.cluster.docker(n).containers.list(
                filters={"label": "swarmlet.service.name=real", "status": "running"}
            )
        ]
        if running:
            _, victim = random.choice(running)
            victim.kill()
        time.sleep(1.5)


def partition_host(c: Chaos, round_: int) -> None:
    """Cut a host's link until it is declared down (a change is made meanwhile), heal it."""
    n = _host(round_, 2)
    c.cluster.script("cut-link", str(n))
    try:
        wait_until(lambda: c.cluster.node_state(f"h{n}") == DOWN, 20, 0.5, what=f"h{n} down")
        assert c.scale("real", REAL_BASE + 1), "a scale while a host is cut off failed"
    finally:
        c.cluster.script("heal-link", str(n))


def kill_etcd_member(c: Chaos, round_: int) -> None:
    """kill -9 one etcd member: changes still go through; then it comes back."""
    member = c.etcd.names[round_ % 3]
    c.etcd.stop_member(member)
    try:
        assert c.relabel("real", f"r{round_}-{member}"), "a change with 2 of 3 members failed"
        assert c.scale("hol", HOL_BASE + 5), "a scale with 2 of 3 members failed"
        tmp = f"tmp{round_}"
        assert c.change(tmp, Expect(True, 2), "service", "create", "-d", "--name", tmp,
                        "--replicas", "2", "--constraint", FARM_ONLY, HOLLOW)  # fmt: skip
        assert c.change(tmp, Expect(exists=False), "service", "rm", tmp)
    finally:
        c.etcd.start_member(member)
    wait_until(c.etcd.healthy, 30, 0.5, what="etcd healthy again")


def sigterm_everything(c: Chaos, round_: int) -> None:
    """SIGTERM every process of the cluster at once, then start it all again."""
    run = RUN
    pids = [
        c.pid(run / f"h{n}" / f"{what}.pid")
        for n in c.cluster.hosts
        for what in ("agent", "dockerd")
    ]
    pids += [c.pid(run / d / "manager.pid") for d in ("manager", "manager2", "manager3")]
    pids += [p.proc.pid for p in c.etcd.members.values() if p.proc is not None]
    if c.farm.process.proc is not None:
        pids.append(c.farm.process.proc.pid)
    live = [p for p in pids if p is not None]
    for p in live:
        signal_pid(p, signal.SIGTERM)
    left = wait_gone(live, 60)
    assert not left, f"still running 60 s after SIGTERM: {left}"
    for member in c.etcd.members.values():
        member.stop()  # reap
    c.farm.stop()
    c.etcd.start()
    for m in (1, 2, 3):
        c.cluster.script("restore-manager", str(m))
    for n in c.cluster.hosts:
        c.cluster.script("restore-host", str(n))
    c.farm.start()


FAULTS: list[Callable[[Chaos, int], None]] = [
    kill_leader_during_scale_up,
    kill_agent,
    restart_dockerd,
    kill_containers,
    partition_host,
    kill_etcd_member,
    sigterm_everything,
]
CASES = [(r, f) for r in range(ROUNDS) for f in FAULTS]


@pytest.mark.parametrize(
    ("round_", "fault"), CASES, ids=[f"{r + 1}-{f.__name__}" for r, f in CASES]
)
def test_fault_then_converged(
    chaos: Chaos, round_: int, fault: Callable[[Chaos, int], None]
) -> None:
    if time.monotonic() > chaos.deadline:
        pytest.skip("the chaos suite's time budget (SWARMLET_CHAOS_MINUTES) is spent")
    started = time.monotonic()
    fault(chaos, round_)
    took = chaos.assert_converged(fault.__name__)
    spent = time.monotonic() - started - took
    print(f"{fault.__name__}: fault {spent:.1f}s, converged in {took:.1f}s")
