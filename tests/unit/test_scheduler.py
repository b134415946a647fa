"""The scheduler's pure parts: the filter pipeline and its explanations, the ranking in
schedule_group, and the incremental per-node counts."""

from __future__ import annotations

from collections import Counter

import pytest

from common import states
from common.api import objects_pb2
from manager.domain.placer import Decision
from manager.scheduler.filters import Filter, Matcher, ReadyFilter, default_filters
from manager.scheduler.nodeinfo import NodeInfo, NodeInfos, counts_against_node
from manager.scheduler.pipeline import Pipeline
from manager.scheduler.scheduler import _assign, _explain, is_pending, schedule_group
from tests.unit import factories as f


def infos(*nodes: objects_pb2.Node, tasks: tuple[objects_pb2.Task, ...] = ()) -> list[NodeInfo]:
    table = NodeInfos()
    table.rebuild(f.nodes(*nodes), list(tasks), f.NOW)
    return list(table.infos.values())


def pending(svc: objects_pb2.Service, n: int) -> list[objects_pb2.Task]:
    return [f.task(svc, slot, state=states.PENDING) for slot in range(1, n + 1)]


def placed(decisions: list[Decision]) -> Counter[str]:
    return Counter(d.node_id for d in decisions if d.node_id)


class LabelFilter(Filter):
    """A second filter, to check how the pipeline combines them."""

    name = "label"
    reason = "zone label not matched"

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled

    def enabled(self, task: objects_pb2.Task) -> bool:
        return self._enabled

    def matcher(self, task: objects_pb2.Task) -> Matcher:
        return lambda info: info.node.spec.annotations.labels.get("zone") == "a"


# ---- is_pending ---------------------------------------------------------------------------


def test_is_pending() -> None:
    svc = f.service()
    assert is_pending(f.task(svc, 1, state=states.PENDING))
    assert not is_pending(f.task(svc, 1, state=states.PENDING, desired=states.SHUTDOWN))
    assert not is_pending(f.task(svc, 1, state=states.PENDING, desired=states.REMOVE))
    assert not is_pending(f.task(svc, 1, state=states.ASSIGNED))
    assert not is_pending(f.task(svc, 1, state=states.NEW))
    assert not is_pending(None)


# ---- filters and pipeline -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "ok"),
    [
        (f.node(), True),
        (f.node(state="down"), False),
        (f.node(state="unknown"), False),
        (f.node(state="disconnected"), False),
        (f.node(availability="drain"), False),
        (f.node(availability="pause"), False),
    ],
)
def test_ready_filter(node: objects_pb2.Node, ok: bool) -> None:
    rf = ReadyFilter()
    t = f.task(f.service(), 1, state=states.PENDING)
    assert rf.enabled(t)
    assert rf.check(t, NodeInfo(node)) is ok


def test_ready_filter_explains_in_docker_words() -> None:
    assert ReadyFilter().explain(1) == "1 node not available for new tasks"
    assert ReadyFilter().explain(3) == "3 nodes not available for new tasks"


def test_default_pipeline_starts_with_the_ready_filter() -> None:
    assert isinstance(default_filters()[0], ReadyFilter)
    assert isinstance(Pipeline().filters[0], ReadyFilter)


def test_pipeline_counts_the_first_filter_that_rejects() -> None:
    p = Pipeline([ReadyFilter(), LabelFilter()])
    t = f.task(f.service(), 1, state=states.PENDING)
    p.set_task(t)
    table = infos(
        f.node("n1", state="down", labels={"zone": "a"}),
        f.node("n2", labels={"zone": "b"}),
        f.node("n3", labels={"zone": "b"}),
        f.node("n4", labels={"zone": "a"}),
    )
    assert [i.node.id for i in p.eligible(t, table)] == ["n4"]
    assert p.failures == Counter({"ready": 1, "label": 2})
    assert p.explain() == (
        "no suitable node (1 node not available for new tasks; zone label not matched on 2 nodes)"
    )


def test_pipeline_skips_disabled_filters() -> None:
    p = Pipeline([ReadyFilter(), LabelFilter(enabled=False)])
    t = f.task(f.service(), 1, state=states.PENDING)
    p.set_task(t)
    assert [i.node.id for i in p.eligible(t, infos(f.node("n1", labels={"zone": "b"})))] == ["n1"]


def test_pipeline_set_task_resets_the_counts() -> None:
    p = Pipeline()
    t = f.task(f.service(), 1, state=states.PENDING)
    p.set_task(t)
    p.eligible(t, infos(f.node("n1", state="down")))
    assert p.failures
    p.set_task(t)
    assert not p.failures
    assert p.explain() == "no suitable node (no nodes in the cluster)"


# ---- schedule_group ---------------------------------------------------------------------


def test_no_tasks_no_decisions() -> None:
    assert schedule_group([], infos(f.node()), Pipeline()) == []


def test_no_nodes_explained() -> None:
    tasks = pending(f.service(2), 2)
    decisions = schedule_group(tasks, [], Pipeline())
    assert decisions == [
        Decision(t.id, explanation="no suitable node (no nodes in the cluster)") for t in tasks
    ]


@pytest.mark.parametrize(
    ("nodes", "why"),
    [
        ([f.node("n1", state="down")], "1 node not available for new tasks"),
        (
            [f.node("n1", state="down"), f.node("n2", availability="drain")],
            "2 nodes not available for new tasks",
        ),
        (
            [f.node("n1", availability="pause"), f.node("n2", state="unknown")],
            "2 nodes not available for new tasks",
        ),
    ],
)
def test_no_suitable_node_explained(nodes: list[objects_pb2.Node], why: str) -> None:
    tasks = pending(f.service(3), 3)
    decisions = schedule_group(tasks, infos(*nodes), Pipeline())
    assert [d.node_id for d in decisions] == ["", "", ""]
    assert {d.explanation for d in decisions} == {f"no suitable node ({why})"}


def test_tasks_spread_over_the_nodes() -> None:
    table = infos(f.node("n1"), f.node("n2"), f.node("n3"))
    decisions = schedule_group(pending(f.service(6), 6), table, Pipeline())
    assert all(not d.explanation for d in decisions)
    assert placed(decisions) == Counter({"n1": 2, "n2": 2, "n3": 2})


def test_unusable_nodes_get_nothing() -> None:
    table = infos(f.node("n1"), f.node("n2", state="down"), f.node("n3", availability="drain"))
    decisions = schedule_group(pending(f.service(4), 4), table, Pipeline())
    assert placed(decisions) == Counter({"n1": 4})


def test_placements_are_counted_into_the_infos() -> None:
    table = infos(f.node("n1"), f.node("n2"))
    svc = f.service(3)
    schedule_group(pending(svc, 3), table, Pipeline())
    assert sorted(i.total for i in table) == [1, 2]
    assert sum(i.by_service[svc.id] for i in table) == 3


def test_fewest_tasks_of_the_service_first() -> None:
    web, db = f.service(service_id="web"), f.service(service_id="db", name="db")
    # n1 runs one web task; n2 runs three db tasks but no web task.
    existing = (
        f.task(web, 1, node="n1"),
        *(f.task(db, s, node="n2") for s in (1, 2, 3)),
    )
    table = infos(f.node("n1"), f.node("n2"), tasks=existing)
    (d,) = schedule_group([f.task(web, 2, state=states.PENDING)], table, Pipeline())
    assert d.node_id == "n2"


def test_then_fewest_tasks_overall() -> None:
    web, db = f.service(service_id="web"), f.service(service_id="db", name="db")
    existing = (f.task(db, 1, node="n1"), f.task(db, 2, node="n1"), f.task(db, 3, node="n3"))
    table = infos(f.node("n1"), f.node("n2"), f.node("n3"), tasks=existing)
    decisions = schedule_group(pending(web, 3), table, Pipeline())
    assert [d.node_id for d in decisions] == ["n2", "n3", "n1"]


def test_ties_broken_by_node_id() -> None:
    table = infos(f.node("nb"), f.node("nc"), f.node("na"))
    decisions = schedule_group(pending(f.service(2), 2), table, Pipeline())
    assert [d.node_id for d in decisions] == ["na", "nb"]


def test_finished_and_unwanted_tasks_do_not_count() -> None:
    web = f.service(service_id="web")
    existing = (
        f.task(web, 1, node="n1", state=states.FAILED),
        f.task(web, 2, node="n1", desired=states.SHUTDOWN),
        f.task(web, 3, node="n1", state=states.COMPLETE, desired=states.SHUTDOWN),
        f.task(web, 4, node="n2"),
    )
    table = infos(f.node("n1"), f.node("n2"), tasks=existing)
    assert {i.node.id: i.total for i in table} == {"n1": 0, "n2": 1}
    (d,) = schedule_group([f.task(web, 5, state=states.PENDING)], table, Pipeline())
    assert d.node_id == "n1"


def test_task_bound_to_a_node() -> None:
    svc = f.service()
    table = infos(f.node("n1"), f.node("n2"), f.node("n3", state="down"))
    fits = f.task(svc, 0, state=states.PENDING, node="n2")
    stuck = f.task(svc, 0, state=states.PENDING, node="n3")
    decisions = schedule_group([fits, stuck], table, Pipeline())
    assert decisions[0] == Decision(fits.id, "n2")
    assert decisions[1].node_id == ""
    assert decisions[1].explanation == "no suitable node (1 node not available for new tasks)"


# ---- the scheduler's mutators ---------------------------------------------------------------


def test_assign_moves_a_pending_task_to_its_node() -> None:
    t = f.task(f.service(), 1, state=states.PENDING)
    t.status.err = "no suitable node (no nodes in the cluster)"
    out = _assign("n1")(f.copy(t))
    assert out is not None
    assert out.node_id == "n1"
    assert out.status.state == states.ASSIGNED
    assert out.status.err == ""
    # No longer pending (shut down meanwhile, or already placed elsewhere): left alone.
    assert _assign("n1")(f.task(f.service(), 1, state=states.ASSIGNED)) is None
    gone = f.task(f.service(), 1, state=states.PENDING, desired=states.SHUTDOWN)
    assert _assign("n1")(gone) is None


def test_explain_writes_only_a_new_explanation() -> None:
    t = f.task(f.service(), 1, state=states.PENDING)
    out = _explain("no suitable node (x)")(f.copy(t))
    assert out is not None
    assert out.status.err == "no suitable node (x)"
    assert out.status.state == states.PENDING
    assert _explain("no suitable node (x)")(out) is None
    assert _explain("why")(f.task(f.service(), 1, state=states.RUNNING)) is None


# ---- NodeInfo / NodeInfos ------------------------------------------------------------------


def test_counts_against_node() -> None:
    svc = f.service()
    assert counts_against_node(f.task(svc, 1))
    assert counts_against_node(f.task(svc, 1, state=states.ASSIGNED))
    assert not counts_against_node(f.task(svc, 1, state=states.PENDING))
    assert not counts_against_node(f.task(svc, 1, state=states.FAILED))
    assert not counts_against_node(f.task(svc, 1, desired=states.SHUTDOWN))
    assert not counts_against_node(None)


def test_node_info_add_remove() -> None:
    svc = f.service()
    info = NodeInfo(f.node())
    a, b = f.task(svc, 1), f.task(svc, 2)
    info.add(a)
    info.add(b)
    assert (info.total, info.by_service[svc.id]) == (2, 2)
    info.remove(a)
    info.remove(b)
    assert info.total == 0
    assert svc.id not in info.by_service


def snapshot(table: NodeInfos) -> dict[str, tuple[int, dict[str, int]]]:
    return {k: (i.total, dict(i.by_service)) for k, i in table.infos.items()}


def test_incremental_counts_follow_task_changes() -> None:
    svc = f.service()
    nodes = f.nodes(f.node("n1"), f.node("n2"))
    tasks: dict[str, objects_pb2.Task] = {}
    table = NodeInfos()
    table.rebuild(nodes, tasks.values())

    def change(new: objects_pb2.Task | None, old_id: str | None = None) -> None:
        old = tasks.get(old_id or (new.id if new else ""))
        if new is None:
            assert old_id is not None
            del tasks[old_id]
        else:
            tasks[new.id] = new
        table.task_changed(old, new)
        fresh = NodeInfos()
        fresh.rebuild(nodes, tasks.values())
        assert snapshot(table) == snapshot(fresh)

    t = f.task(svc, 1, state=states.PENDING)
    change(t)
    t2 = f.copy(t)
    t2.node_id, t2.status.state = "n1", states.ASSIGNED
    change(t2)
    t3 = f.copy(t2)
    t3.status.state = states.RUNNING
    change(t3)
    t4 = f.copy(t3)
    t4.desired_state = states.SHUTDOWN
    change(t4)
    change(None, t4.id)
    other = f.task(svc, 2, node="n2")
    change(other)
    change(None, other.id)
    assert snapshot(table) == {"n1": (0, {}), "n2": (0, {})}


def test_node_changes() -> None:
    table = NodeInfos()
    table.rebuild(f.nodes(f.node("n1")), [])
    table.node_changed(None, f.node("n2"))
    assert set(table.infos) == {"n1", "n2"}
    drained = f.node("n1", availability="drain")
    table.node_changed(f.node("n1"), drained)
    assert table.infos["n1"].node is drained
    table.node_changed(drained, None)
    assert set(table.infos) == {"n2"}
    # A task on a node the scheduler does not know is ignored.
    table.task_changed(None, f.task(f.service(), 1, node="n9"))
    assert snapshot(table) == {"n2": (0, {})}


def test_node_readded_keeps_counting_its_tasks() -> None:
    svc = f.service()
    nodes = f.nodes(f.node("n1"))
    tasks = {t.id: t for t in [f.task(svc, 1, node="n1")]}
    table = NodeInfos()
    table.rebuild(nodes, tasks.values())
    # `swarmctl node rm --force`, then the agent (same identity) opens a new session
    # before the orchestrator has shut the node's tasks down.
    table.node_changed(nodes["n1"], None)
    table.node_changed(None, f.node("n1"))
    fresh = NodeInfos()
    fresh.rebuild(nodes, tasks.values())
    assert snapshot(table) == snapshot(fresh)
