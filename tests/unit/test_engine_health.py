"""A node whose agent reports that its container engine does not answer gets no new
tasks, says why ("engine down on 1 node"), and is shown so in `node ls`; it gets tasks
again once the error is cleared (the scheduler's kept pools follow the node object)."""

from __future__ import annotations

from collections import Counter

from common import states
from common.api import objects_pb2
from manager.scheduler.filters import EngineFilter
from manager.scheduler.nodeinfo import NodeInfo, NodeInfos
from manager.scheduler.pipeline import Pipeline
from manager.scheduler.scheduler import schedule_group
from swarmctl.node import node_rows, node_status
from tests.unit import factories as f

ERROR = "engine not answering: Docker engine at unix:///x unreachable: connection refused"


def engine_down(node: objects_pb2.Node) -> objects_pb2.Node:
    down = objects_pb2.Node()
    down.CopyFrom(node)
    down.status.engine_error = ERROR
    down.status.message = ERROR
    return down


def pending(svc: objects_pb2.Service, n: int) -> list[objects_pb2.Task]:
    return [f.task(svc, slot, state=states.PENDING) for slot in range(1, n + 1)]


def test_engine_filter() -> None:
    flt = EngineFilter()
    task = pending(f.service(), 1)[0]
    assert flt.enabled(task)
    up, down = NodeInfo(f.node("n1")), NodeInfo(engine_down(f.node("n2")))
    assert flt.check(task, up)
    assert flt.matcher(task)(up)
    assert not flt.check(task, down)
    assert not flt.matcher(task)(down)
    assert flt.explain(1) == "engine down on 1 node"
    assert flt.explain(2) == "engine down on 2 nodes"


def test_a_node_with_its_engine_down_gets_nothing_and_it_is_explained() -> None:
    table = NodeInfos()
    table.rebuild(f.nodes(engine_down(f.node("n1"))), [])
    decisions = schedule_group(pending(f.service(2), 2), table, Pipeline())
    assert [d.node_id for d in decisions] == ["", ""]
    assert {d.explanation for d in decisions} == {"no suitable node (engine down on 1 node)"}


def test_tasks_go_to_the_nodes_whose_engine_answers_and_back_once_it_does() -> None:
    n1, n2 = f.node("n1"), f.node("n2")
    table = NodeInfos()
    table.rebuild(f.nodes(n1, n2), [])
    svc = f.service(4)
    first = schedule_group(pending(svc, 2), table, Pipeline())
    assert Counter(d.node_id for d in first) == Counter({"n1": 1, "n2": 1})
    # The engine of n1 stops answering: the pools kept from the first group follow.
    table.node_changed(n1, engine_down(n1))
    more = schedule_group(
        [f.task(svc, slot, state=states.PENDING) for slot in (3, 4)], table, Pipeline()
    )
    assert Counter(d.node_id for d in more) == Counter({"n2": 2})
    # It answers again: n1 (1 task, n2 has 3) gets the next ones.
    table.node_changed(table.infos["n1"].node, n1)
    again = schedule_group(pending(f.service(2), 2), table, Pipeline())
    assert Counter(d.node_id for d in again) == Counter({"n1": 2})


def test_node_ls_shows_a_node_whose_engine_is_down() -> None:
    assert node_status(f.node("n1")) == "Ready"
    assert node_status(engine_down(f.node("n1"))) == "Ready (engine down)"
    assert node_status(engine_down(f.node("n1", state="down"))) == "Down"
    rows = node_rows([engine_down(f.node("n1"))])
    assert rows[0][2] == "Ready (engine down)"
