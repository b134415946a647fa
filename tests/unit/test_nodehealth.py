"""Node health's timing on a fake clock: a node without a session is declared down
after three heartbeat periods, but never within six periods of a leadership change
(the extended grace that lets agents move to another manager after a failover)."""

from __future__ import annotations

from collections.abc import Callable

from common.api import objects_pb2, types_pb2
from manager.dispatcher.dispatcher import MAX_HEARTBEATS_PER_SECOND, effective_period
from manager.dispatcher.nodehealth import SessionWatch
from tests.unit import factories as f

PERIOD = 1.0
STEP = PERIOD / 2  # NodeHealth.run looks every half period


def no_session(_node_id: str) -> bool:
    return False


def first_down(
    watch: SessionWatch,
    nodes: list[objects_pb2.Node],
    start: float,
    has_session: Callable[[str], bool] = no_session,
) -> float:
    """Scan from `start` on, every half period; the time the first node is declared down."""
    now = start
    while now < start + 100 * PERIOD:
        if watch.stale(nodes, has_session, now, wall=1_000_000 + now):
            return now
        now += STEP
    raise AssertionError("never declared down")


def test_after_a_leader_change_not_down_within_six_periods_but_after() -> None:
    leader_since = 50.0
    watch = SessionWatch(PERIOD, started=leader_since)
    # The old leader died with the node's session (its lease went): no session from
    # the first look of the new leader on.
    down_at = first_down(watch, [f.node("n1")], leader_since)
    assert down_at - leader_since > 6 * PERIOD
    assert down_at - leader_since <= 6 * PERIOD + STEP


def test_normally_down_after_three_periods() -> None:
    watch = SessionWatch(PERIOD, started=0.0)
    nodes = [f.node("n1")]
    assert watch.stale(nodes, lambda _: True, 40.0, 1_000_040.0) == []  # in session
    lost = 40.5
    down_at = first_down(watch, nodes, lost)
    assert down_at - lost > 3 * PERIOD
    assert down_at - lost <= 3 * PERIOD + STEP
    assert watch.missing_wall["n1"] == 1_000_000 + lost


def test_a_session_found_again_resets_the_count() -> None:
    watch = SessionWatch(PERIOD, started=0.0)
    nodes = [f.node("n1")]
    assert watch.stale(nodes, no_session, 20.0, 0.0) == []
    assert watch.stale(nodes, lambda _: True, 22.0, 0.0) == []  # it reconnected
    assert watch.stale(nodes, no_session, 23.5, 0.0) == []  # missing again, from 23.5
    assert first_down(watch, nodes, 24.0) > 23.5 + 3 * PERIOD


def test_down_nodes_and_managers_without_an_engine_are_not_counted() -> None:
    watch = SessionWatch(PERIOD, started=0.0)
    manager = f.node("m1")
    manager.role = types_pb2.NODE_ROLE_MANAGER
    down = f.node("n2", state="down")
    for now in (10.0, 20.0, 30.0):
        assert watch.stale([manager, down], no_session, now, now) == []
    assert watch.missing_since == {}


# ---- the heartbeat period grows with the cluster -------------------------------------------


def test_effective_period_keeps_the_configured_one_in_small_clusters() -> None:
    assert effective_period(1.0, 3) == 1.0
    assert effective_period(1.0, MAX_HEARTBEATS_PER_SECOND) == 1.0
    assert effective_period(2.0, 500) == 2.0


def test_effective_period_caps_the_heartbeat_rate_in_large_clusters() -> None:
    assert MAX_HEARTBEATS_PER_SECOND == 500
    assert effective_period(1.0, 5000) == 10.0
    assert effective_period(1.0, 1234) == 2.5  # whole tenths, rounded up
    assert effective_period(1.0, 20_000) == 40.0
    assert effective_period(1.0, 10**7) == 60.0  # never beyond the longest period
    assert effective_period(90.0, 10) == 90.0  # unless configured so


def test_session_watch_follows_a_longer_period() -> None:
    watch = SessionWatch(PERIOD, started=0.0)
    nodes = [f.node("n1")]
    assert watch.stale(nodes, no_session, 100.0, 0.0) == []  # missing from 100
    # The cluster grew: the period is now 4x as long, and so is the timeout.
    longer = 4 * PERIOD
    assert watch.stale(nodes, no_session, 100.0 + 3 * PERIOD + 0.1, 0.0, longer) == []
    assert watch.stale(nodes, no_session, 100.0 + 3 * longer + 0.1, 0.0, longer) == ["n1"]
