"""A node whose agent restarts and opens its new session with another manager stays
ready: the manager that held the old session must not declare it down when that
session expires (found by the chaos suite: the node stayed down for good, its tasks
moved away, although its agent heartbeated)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from tests.harness import Agent, EtcdCluster, Manager, short_tmpdir, wait_until

HOLLOW = ["--executor", "hollow", "--hollow-prepare", "10ms", "--hollow-start", "10ms"]
READY, DOWN = 2, 3


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
