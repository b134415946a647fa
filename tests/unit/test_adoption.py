"""Adoption (manager/dispatcher/adoption.py): a node that comes back still running a
task that was shut down because the node went down gets it back while the slot's
replacement does not run yet, and the replacement is retired; otherwise nothing."""

from __future__ import annotations

from collections.abc import Iterable

from common import states
from common.api import objects_pb2
from manager.dispatcher.adoption import RETIRED, Adoption, operations, plan_adoption
from manager.domain.reasons import NODE_DOWN
from manager.orchestrator.global_mode import plan_global
from manager.orchestrator.replicated import plan_service
from tests.unit import factories as f
from tests.unit.factories import NOW


def lost(svc: objects_pb2.Service, slot: int = 1, node: str = "n1") -> objects_pb2.Task:
    """A task shut down because its node went down (its status still says running)."""
    t = f.task(svc, slot, node=node, desired=states.SHUTDOWN, created_at=NOW - 100)
    t.shutdown_reason = NODE_DOWN
    return t


def plan(
    svc: objects_pb2.Service, tasks: Iterable[objects_pb2.Task], running: list[str]
) -> Adoption:
    table = {t.id: t for t in tasks}
    return plan_adoption(
        "n1",
        running,
        table.get,
        lambda sid: [t for t in table.values() if t.service_id == sid],
        {svc.id: svc}.get,
    )


def commit(adoption: Adoption, tasks: dict[str, objects_pb2.Task]) -> None:
    for op in operations(adoption, "n1"):
        copy = f.copy(tasks[op.obj_id])
        updated = op.mutate(copy)
        if updated is not None:
            tasks[op.obj_id] = updated


def test_running_task_back_before_its_replacement_runs_lives_again() -> None:
    svc = f.service(1)
    old = lost(svc)
    new = f.task(svc, 1, state=states.PENDING, created_at=NOW - 50)
    tasks = {old.id: old, new.id: new}
    adoption = plan(svc, tasks.values(), [old.id])
    assert adoption.revive == {old.id: states.RUNNING}
    assert adoption.retire == [new.id]
    commit(adoption, tasks)
    assert tasks[old.id].desired_state == states.RUNNING
    assert tasks[old.id].shutdown_reason == ""
    assert tasks[new.id].desired_state == states.REMOVE
    assert tasks[new.id].shutdown_reason == RETIRED
    # The orchestrator is content with that: one running task, nothing to do.
    nodes = f.nodes(f.node("n1"))
    assert not plan_service(svc, list(tasks.values()), f.node_ok(nodes), NOW, nodes)


def test_replacement_assigned_elsewhere_but_not_running_is_retired() -> None:
    svc = f.service(1)
    old = lost(svc)
    new = f.task(svc, 1, state=states.PREPARING, node="n2", created_at=NOW - 50)
    adoption = plan(svc, [old, new], [old.id])
    assert adoption.revive == {old.id: states.RUNNING}
    assert adoption.retire == [new.id]


def test_replacement_that_runs_keeps_the_slot() -> None:
    svc = f.service(1)
    old = lost(svc)
    new = f.task(svc, 1, node="n2", created_at=NOW - 50)  # running
    assert not plan(svc, [old, new], [old.id])


def test_only_what_the_node_says_it_runs_is_adopted() -> None:
    svc = f.service(2)
    one, two = lost(svc, 1), lost(svc, 2)
    assert set(plan(svc, [one, two], [two.id]).revive) == {two.id}
    assert not plan(svc, [one, two], [])


def test_tasks_shut_down_for_other_reasons_are_not_adopted() -> None:
    svc = f.service(1)
    updated_away = f.task(svc, 1, desired=states.SHUTDOWN)  # a rolling update's
    removed = lost(svc)
    removed.desired_state = states.REMOVE  # the service was deleted
    other_node = lost(svc, node="n2")
    for t in (updated_away, removed, other_node):
        assert not plan(svc, [t], [t.id]), t


def test_a_write_that_finds_things_changed_declines() -> None:
    svc = f.service(1)
    old = lost(svc)
    new = f.task(svc, 1, state=states.PENDING, created_at=NOW - 50)
    adoption = plan(svc, [old, new], [old.id])
    ops = {op.obj_id: op for op in operations(adoption, "n1")}
    ran = f.copy(new)
    ran.status.state = states.RUNNING
    assert ops[new.id].mutate(ran) is None  # the replacement runs by now: it stays
    again = f.copy(old)
    again.desired_state = states.REMOVE
    assert ops[old.id].mutate(again) is None


def test_global_service_slot_is_the_node() -> None:
    svc = f.global_service()
    old = lost(svc, 0, node="n1")
    other_node = f.task(svc, 0, node="n2", state=states.PENDING, created_at=NOW - 50)
    new = f.task(svc, 0, node="n1", state=states.PENDING, created_at=NOW - 50)
    adoption = plan(svc, [old, other_node, new], [old.id])
    assert adoption.revive == {old.id: states.RUNNING}
    assert adoption.retire == [new.id]
    tasks = {t.id: t for t in (old, other_node, new)}
    commit(adoption, tasks)
    nodes = f.nodes(f.node("n1"), f.node("n2"))
    made = plan_global(svc, list(tasks.values()), nodes, NOW)
    assert not [t for t in made.creates if t.node_id == "n1"]
