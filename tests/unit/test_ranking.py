"""Each ranking rule of the scheduler on its own (manager/scheduler/scheduler.py), through
`schedule_group` over nodes that differ in one respect at a time: recent failures of the
service, tasks of the service, tasks overall, spread preferences, free share of the
reserved resources, binpack."""

from __future__ import annotations

from collections import Counter
from typing import cast

import pytest

from common import states
from common.api import objects_pb2, specs_pb2
from manager.scheduler.nodeinfo import FAILURE_THRESHOLD, FAILURE_WINDOW, NodeInfo, NodeInfos
from manager.scheduler.pipeline import Pipeline
from manager.scheduler.ranking import Binpack, Ranking, Spread, SpreadByShare, rank_key
from manager.scheduler.scheduler import schedule_group
from tests.unit import factories as f
from tests.unit.factories import NOW
from tests.unit.test_filters import node, on, task


def place(
    infos: list[NodeInfo] | NodeInfos, t: objects_pb2.Task, n: int = 1, now: float = NOW
) -> list[str]:
    """Where n tasks like `t` go, in order."""
    group = []
    for slot in range(1, n + 1):
        one = f.copy(t)
        one.id, one.slot = f"{t.id}-{slot}", slot
        group.append(one)
    return [d.node_id or d.explanation for d in schedule_group(group, infos, Pipeline(), now)]


def others(n: int, service_id: str = "other") -> list[objects_pb2.Task]:
    return [task(service_id=service_id) for _ in range(n)]


# ---- recent failures ------------------------------------------------------------------------


def failing(info: NodeInfo, times: int, ago: float = 10.0, service_id: str = "svc1") -> NodeInfo:
    for i in range(times):
        info.note_failure(service_id, NOW - ago - i)
    return info


def test_a_node_with_five_recent_failures_of_the_service_comes_last() -> None:
    # n1 would win on every other rule (no tasks at all).
    infos = [failing(on(node("n1")), FAILURE_THRESHOLD), on(node("n2"), *others(3), task())]
    assert place(infos, task()) == ["n2"]


def test_four_failures_are_not_enough() -> None:
    infos = [failing(on(node("n1")), FAILURE_THRESHOLD - 1), on(node("n2"), *others(3))]
    assert place(infos, task()) == ["n1"]


def test_failures_older_than_five_minutes_stop_counting() -> None:
    infos = [
        failing(on(node("n1")), FAILURE_THRESHOLD, ago=FAILURE_WINDOW + 1),
        on(node("n2"), *others(3)),
    ]
    assert place(infos, task()) == ["n1"]
    # Recent at first, old once time has passed.
    fresh = [failing(on(node("n1")), FAILURE_THRESHOLD), on(node("n2"), *others(3))]
    assert place(fresh, task()) == ["n2"]
    assert place(fresh, task(), now=NOW + FAILURE_WINDOW) == ["n1"]


def test_failures_of_another_service_do_not_count() -> None:
    infos = [
        failing(on(node("n1")), FAILURE_THRESHOLD, service_id="other"),
        on(node("n2"), *others(3)),
    ]
    assert place(infos, task()) == ["n1"]


def test_a_failing_node_still_takes_tasks_when_nothing_else_fits() -> None:
    infos = [failing(on(node("n1")), FAILURE_THRESHOLD), on(node("n2", state="down"))]
    assert place(infos, task(), 2) == ["n1", "n1"]


def test_failures_are_learnt_from_task_events_and_from_a_rebuild() -> None:
    svc = f.service(service_id="svc1")
    failed = [
        f.task(svc, 1, state=states.FAILED, desired=states.SHUTDOWN, node="n1")
        for _ in range(FAILURE_THRESHOLD)
    ]
    for t in failed:
        t.status.timestamp.CopyFrom(f.timestamp(NOW - 5))
    nodes = f.nodes(node("n1"), node("n2"))
    busy = [f.task(f.service(service_id="other"), s, node="n2") for s in (1, 2, 3)]
    rebuilt = NodeInfos()
    rebuilt.rebuild(nodes, [*failed, *busy], NOW)
    assert place(rebuilt, task()) == ["n2"]
    # The same failures, arriving as events.
    table = NodeInfos()
    table.rebuild(nodes, busy, NOW)
    for t in failed:
        running = f.copy(t)
        running.status.state = states.RUNNING
        running.desired_state = states.RUNNING
        table.task_changed(None, running, NOW)
        table.task_changed(running, t, NOW)
    assert place(table, task()) == ["n2"]


# ---- fewest tasks of the service, then fewest overall ------------------------------------------


def test_fewest_tasks_of_this_service_first() -> None:
    infos = [on(node("n1"), task()), on(node("n2"), *others(5))]
    assert place(infos, task()) == ["n2"]


def test_then_fewest_tasks_overall() -> None:
    infos = [on(node("n1"), task(), *others(2)), on(node("n2"), task(), *others(1))]
    assert place(infos, task()) == ["n2"]


def test_ties_go_to_the_lowest_node_id() -> None:
    infos = [on(node("n2")), on(node("n3")), on(node("n1"))]
    assert place(infos, task(), 3) == ["n1", "n2", "n3"]


def test_spread_evens_out_the_service() -> None:
    infos = [on(node("n1"), task(), task()), on(node("n2")), on(node("n3"), task())]
    assert Counter(place(infos, task(), 3)) == Counter({"n2": 2, "n3": 1})


# ---- spread preferences ---------------------------------------------------------------------


def spread(t: objects_pb2.Task, *descriptors: str) -> objects_pb2.Task:
    for d in descriptors:
        t.spec.placement.preferences.add().spread.spread_descriptor = d
    return t


def test_spread_preference_balances_label_groups_not_nodes() -> None:
    infos = [
        on(node("a1", labels={"zone": "a"})),
        on(node("a2", labels={"zone": "a"})),
        on(node("a3", labels={"zone": "a"})),
        on(node("b1", labels={"zone": "b"})),
    ]
    placed = place(infos, spread(task(), "node.labels.zone"), 4)
    zones = Counter(p[0] for p in placed)
    assert zones == Counter({"a": 2, "b": 2})
    assert placed.count("b1") == 2  # b has one node: it takes half the tasks


def test_nodes_without_the_label_form_their_own_group() -> None:
    infos = [
        on(node("a1", labels={"zone": "a"})),
        on(node("a2", labels={"zone": "a"})),
        on(node("b1", labels={"zone": "b"})),
        on(node("x1")),
        on(node("x2", labels={"rack": "r"})),  # another label is no zone
    ]
    placed = place(infos, spread(task(), "node.labels.zone"), 6)
    groups = Counter({"a1": "a", "a2": "a", "b1": "b", "x1": "", "x2": ""}[p] for p in placed)
    assert groups == Counter({"a": 2, "b": 2, "": 2})


def test_the_group_with_fewest_tasks_of_the_service_wins() -> None:
    infos = [
        on(node("a1", labels={"zone": "a"}), task(), task()),
        on(node("b1", labels={"zone": "b"}), *others(10)),  # busy, but not with this service
    ]
    assert place(infos, spread(task(), "node.labels.zone"), 2) == ["b1", "b1"]


def test_nested_preferences_spread_level_by_level() -> None:
    infos = [
        on(node("a-r1", labels={"zone": "a", "rack": "1"})),
        on(node("a-r2", labels={"zone": "a", "rack": "2"})),
        on(node("a-r2b", labels={"zone": "a", "rack": "2"})),
        on(node("b-r1", labels={"zone": "b", "rack": "1"})),
    ]
    placed = place(infos, spread(task(), "node.labels.zone", "node.labels.rack"), 8)
    assert Counter(p.split("-")[0] for p in placed) == Counter({"a": 4, "b": 4})
    # Within zone a, racks 1 and 2 get two each, rack 2's two on its two nodes.
    assert Counter(placed) == Counter({"b-r1": 4, "a-r1": 2, "a-r2": 1, "a-r2b": 1})


def test_spread_preferences_come_before_the_other_rules() -> None:
    infos = [
        on(node("a1", labels={"zone": "a"})),
        on(node("b1", labels={"zone": "b"}), task(), *others(4)),
        on(node("b2", labels={"zone": "b"})),
    ]
    # Zones a and b have 0 and 1 tasks of the service: zone a, though b2 is just as empty.
    assert place(infos, spread(task(), "node.labels.zone"), 1) == ["a1"]


# ---- free share of the reserved resources, and binpack ------------------------------------------


def test_spread_with_reservations_prefers_the_largest_free_share() -> None:
    infos = [
        on(node("n1", cpus=8), task(service_id="other", cpus=6)),  # 25% free
        on(node("n2", cpus=2), task(service_id="other", cpus=1)),  # 50% free
        on(node("n3", cpus=4), task(service_id="other", cpus=3)),  # 25% free
    ]
    assert place(infos, task(cpus=0.5)) == ["n2"]


def test_free_share_is_the_smallest_of_the_reserved_resources() -> None:
    infos = [
        on(node("n1", cpus=4, gib=8), task(service_id="o", cpus=0, gib=6)),  # memory 25% free
        on(node("n2", cpus=4, gib=8), task(service_id="o", cpus=2, gib=2)),  # CPU 50% free
    ]
    assert place(infos, task(cpus=0.5, gib=0.5)) == ["n2"]
    # A task that reserves CPU only looks at CPU.
    assert place(infos, task(service_id="cpu-only", cpus=0.5)) == ["n1"]


def test_without_reservations_the_free_share_does_not_matter() -> None:
    infos = [
        on(node("n1", cpus=8), task(service_id="o", cpus=7)),
        on(node("n2", cpus=8), *others(2)),
    ]
    assert place(infos, task()) == ["n1"]  # fewer tasks overall


def test_tasks_of_the_service_count_before_the_free_share() -> None:
    infos = [on(node("n1", cpus=64), task(cpus=1)), on(node("n2", cpus=2))]
    assert place(infos, task(cpus=1)) == ["n2"]


def binpack(t: objects_pb2.Task) -> objects_pb2.Task:
    t.spec.placement.strategy = specs_pb2.PLACEMENT_STRATEGY_BINPACK
    return t


def test_binpack_fills_the_fullest_node_that_fits_first() -> None:
    infos = [
        on(node("n1", cpus=4)),
        on(node("n2", cpus=4), task(service_id="o", cpus=2)),
        on(node("n3", cpus=4), task(service_id="o", cpus=3.5)),  # too full for 1 CPU
    ]
    assert place(infos, binpack(task(cpus=1)), 4) == ["n2", "n2", "n1", "n1"]


def test_binpack_without_reservations_stacks_on_the_busiest_node() -> None:
    infos = [on(node("n1"), *others(1)), on(node("n2"), *others(3))]
    assert place(infos, binpack(task()), 3) == ["n2", "n2", "n2"]


def test_binpack_still_puts_failing_nodes_last() -> None:
    infos = [
        failing(on(node("n1", cpus=4), task(service_id="o", cpus=3)), FAILURE_THRESHOLD),
        on(node("n2", cpus=4)),
    ]
    assert place(infos, binpack(task(cpus=1))) == ["n2"]


# ---- the key itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["spread", "binpack"])
def test_rank_key_ends_with_the_node_id(strategy: str) -> None:
    t = task(cpus=1)
    if strategy == "binpack":
        binpack(t)
    key = rank_key(t, on(node("zz")), NOW)
    assert key[-1] == "zz"
    assert key[0] is False  # not failing


# ---- the strategy objects ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpus", "gib", "strategy", "expected"),
    [
        (0, 0, "spread", Spread()),
        (1, 0, "spread", SpreadByShare(cpu=True)),
        (0, 1, "spread", SpreadByShare(memory=True)),
        (1, 1, "spread", SpreadByShare(cpu=True, memory=True)),
        (0, 0, "binpack", Binpack()),
        (1, 1, "binpack", Binpack(cpu=True, memory=True)),
    ],
)
def test_the_ranking_follows_the_strategy_and_the_reservations(
    cpus: float, gib: float, strategy: str, expected: Ranking
) -> None:
    t = task(cpus=cpus, gib=gib)
    if strategy == "binpack":
        binpack(t)
    chosen = Ranking.of(t)
    assert chosen == expected
    # Equal rankings order a pool alike: they are one key of the pools kept.
    assert hash(chosen) == hash(expected)
    # Different strategies are different pools, whatever they look at.
    assert cast(object, Binpack(cpu=True)) != SpreadByShare(cpu=True)


@pytest.mark.parametrize("strategy", ["spread", "share", "binpack"])
def test_a_pool_entry_orders_nodes_as_their_keys_do(strategy: str) -> None:
    """For nodes that run none of the service's tasks and did not fail it (a pool's
    nodes), the pool's order is the full key's order, both ways round."""
    t = task(cpus=0.5 if strategy != "spread" else 0)
    if strategy == "binpack":
        binpack(t)
    ranking = Ranking.of(t)
    infos = [
        on(node(f"n{i}", cpus=cpus), *[task(service_id="o", cpus=used) for _ in range(n)])
        for i, (cpus, used, n) in enumerate(
            [(4, 0, 0), (4, 1, 1), (2, 1, 1), (8, 1, 3), (4, 0.5, 2), (4, 1, 1), (2, 0, 0)]
        )
    ]
    key, entry = ranking.key(t.service_id, NOW), ranking.entry()
    by_key = sorted(infos, key=key)
    by_entry = sorted(infos, key=entry)
    assert [i.id for i in by_entry] == [i.id for i in by_key]
    # Spread: such nodes rank below the ceiling, a node running the service above it.
    if ranking.pool_first:
        assert ranking.pool_ceiling is not None
        assert all(key(i) < ranking.pool_ceiling for i in infos)
        assert key(on(node("x"), task(cpus=0.5 if strategy != "spread" else 0))) >= (
            ranking.pool_ceiling
        )
