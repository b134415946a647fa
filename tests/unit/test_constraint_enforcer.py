"""The constraint enforcer (manager/orchestrator/constraintenforcer.py): which tasks no
longer fit their node and why, which node changes wake it, its pass over a real Cache,
and what the orchestrator and the status writer then do with an evicted task."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from common import states
from common.api import objects_pb2
from manager.dispatcher.status import forward_only
from manager.orchestrator.constraintenforcer import (
    ConstraintEnforcer,
    fit_changed,
    noncompliant,
)
from manager.orchestrator.replicated import plan_service
from manager.store import BatchResult, Cache, Kind, Update
from manager.store.store import Op
from tests.fakes import Stored, offline_cache
from tests.unit import factories as f
from tests.unit.factories import NOW

GiB = 1024**3


def _constrained(*exprs: str, memory: int = 0, cpus: float = 0) -> objects_pb2.Service:
    svc = f.service(3)
    svc.spec.task.placement.constraints.extend(exprs)
    svc.spec.task.resources.reservations.memory_bytes = memory
    svc.spec.task.resources.reservations.nano_cpus = int(cpus * 1e9)
    return svc


def _sized(node: objects_pb2.Node, memory: int = 0, cpus: float = 0) -> objects_pb2.Node:
    node.description.resources.memory_bytes = memory
    node.description.resources.nano_cpus = int(cpus * 1e9)
    return node


# ---- noncompliant ----------------------------------------------------------------------


def test_removed_label_evicts_with_the_constraint_named() -> None:
    svc = _constrained("node.labels.zone==east")
    tasks = [f.task(svc, 1), f.task(svc, 2)]
    assert noncompliant(f.node(labels={"zone": "east"}), tasks) == []
    out = noncompliant(f.node(labels={}), tasks)
    assert {e.task_id for e in out} == {t.id for t in tasks}
    assert out[0].reason == "constraint no longer satisfied: node.labels.zone==east"


def test_not_equal_constraint_broken_by_an_added_label() -> None:
    svc = _constrained("node.labels.disk!=hdd")
    (e,) = noncompliant(f.node(labels={"disk": "HDD"}), [f.task(svc, 1)])
    assert e.reason == "constraint no longer satisfied: node.labels.disk!=hdd"


def test_only_live_wanted_tasks_on_that_node_are_checked() -> None:
    svc = _constrained("node.labels.zone==east")
    skipped = [
        f.task(svc, 1, desired=states.SHUTDOWN),  # already going
        f.task(svc, 2, state=states.FAILED),  # already ended
        f.task(svc, 3, node="n2"),  # elsewhere
        f.task(svc, 4, state=states.PENDING),  # not placed
    ]
    assert noncompliant(f.node("n1"), skipped) == []
    job = f.task(svc, 5, desired=states.COMPLETE, state=states.STARTING)
    assert [e.task_id for e in noncompliant(f.node("n1"), [job])] == [job.id]


def test_skip_leaves_tasks_alone() -> None:
    svc = _constrained("node.labels.zone==east")
    assert noncompliant(f.node(), [f.task(svc, 1)], skip=lambda t: True) == []


def test_memory_shrink_evicts_the_newest_tasks_until_the_rest_fit() -> None:
    svc = _constrained(memory=1 * GiB)
    tasks = [f.task(svc, i, created_at=NOW - 100 + i) for i in (3, 1, 4, 2)]
    node = _sized(f.node(), memory=4 * GiB)
    assert noncompliant(node, tasks) == []
    node = _sized(f.node(), memory=int(2.5 * GiB))
    out = noncompliant(node, tasks)
    by_slot = {t.id: t.slot for t in tasks}
    assert sorted(by_slot[e.task_id] for e in out) == [3, 4]  # slots 1, 2 are older
    assert out[0].reason == (
        "insufficient memory on the node: it advertises 2560 MiB, 2048 MiB of it reserved "
        "by older tasks, and this task reserves 1024 MiB"
    )


def test_cpu_shrink_evicts() -> None:
    svc = _constrained(cpus=1.5)
    tasks = [f.task(svc, 1, created_at=NOW - 10), f.task(svc, 2, created_at=NOW - 5)]
    (e,) = noncompliant(_sized(f.node(), cpus=2), tasks)
    assert e.task_id == tasks[1].id
    assert e.reason.startswith("insufficient CPU on the node: it advertises 2 CPUs, 1.5 of")


def test_a_resource_the_node_does_not_advertise_is_not_checked() -> None:
    svc = _constrained(memory=GiB, cpus=1)
    assert noncompliant(_sized(f.node(), memory=0, cpus=0), [f.task(svc, 1)]) == []


def test_a_constraint_broken_task_frees_what_it_reserved() -> None:
    east = _constrained("node.labels.zone==east", memory=GiB)
    plain = _constrained(memory=GiB)
    old = f.task(east, 1, created_at=NOW - 50)
    new = f.task(plain, 2, created_at=NOW - 10)
    out = noncompliant(_sized(f.node(), memory=GiB), [old, new])
    assert [e.task_id for e in out] == [old.id]


# ---- fit_changed -----------------------------------------------------------------------


def test_fit_changed() -> None:
    node = f.node(labels={"zone": "east"})
    same = objects_pb2.Node()
    same.CopyFrom(node)
    assert not fit_changed(node, same)
    assert fit_changed(None, node)
    assert not fit_changed(node, None)
    relabelled = f.node(labels={})
    assert fit_changed(node, relabelled)
    smaller = f.node(labels={"zone": "east"})
    smaller.description.resources.memory_bytes = 1
    assert fit_changed(node, smaller)
    # A status change alone (a heartbeat's READY, a message) changes nothing of the fit.
    moved = objects_pb2.Node()
    moved.CopyFrom(node)
    moved.status.message = "heartbeat"
    assert not fit_changed(node, moved)


# ---- the reconciler over a real Cache --------------------------------------------------


class CacheStore:
    """Applies Update mutators to the tasks of a real Cache, as Store.commit and the
    watch that follows would."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.revision = 1

    async def commit(self, ops: Sequence[Op]) -> BatchResult:
        self.revision += 1
        result = BatchResult(revision=self.revision)
        changed: list[Any] = []
        for op in ops:
            assert isinstance(op, Update), op
            assert op.kind is Kind.TASK
            current = self.cache.tasks.get(op.obj_id)
            if current is None:
                continue
            new = op.mutate(current)
            if new is not None:
                changed.append(new)
                result.written.append(new)
        self.cache.load(changed, self.revision)
        return result


def _enforcer(objs: list[Stored]) -> tuple[ConstraintEnforcer, Cache]:
    cache = offline_cache(*objs)
    return ConstraintEnforcer(cache, CacheStore(cache), clock=lambda: NOW), cache


async def _one_pass(enforcer: ConstraintEnforcer) -> None:
    runner = asyncio.create_task(enforcer.run())
    try:
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not enforcer.has_work():
                break
        await asyncio.sleep(0.01)
    finally:
        runner.cancel()


async def test_label_removal_shuts_down_tasks_on_that_node_only() -> None:
    svc = _constrained("node.labels.zone==east")
    east1 = f.node("n1", labels={"zone": "east"})
    east2 = f.node("n2", labels={"zone": "east"})
    t1, t2 = f.task(svc, 1, node="n1"), f.task(svc, 2, node="n2")
    enforcer, cache = _enforcer([svc, east1, east2, t1, t2])
    await _one_pass(enforcer)
    assert enforcer.evicted == 0  # the start-up pass finds everything in order

    cache.load([f.node("n1", labels={"zone": "west"})], 5)
    assert enforcer.has_work()
    await _one_pass(enforcer)
    moved = cache.tasks[t1.id]
    assert moved.desired_state == states.SHUTDOWN
    assert moved.status.err == "constraint no longer satisfied: node.labels.zone==east"
    assert moved.status.state == states.RUNNING  # the agent says when it has stopped
    assert cache.tasks[t2.id].desired_state == states.RUNNING
    assert enforcer.evicted == 1


async def test_start_up_pass_finds_what_changed_while_nobody_led() -> None:
    svc = _constrained("node.labels.zone==east")
    t1 = f.task(svc, 1, node="n1")
    enforcer, cache = _enforcer([svc, f.node("n1"), t1])
    await _one_pass(enforcer)
    assert cache.tasks[t1.id].desired_state == states.SHUTDOWN


async def test_paused_drained_nodes_and_global_services_are_left_alone() -> None:
    svc = _constrained("node.labels.zone==east")
    glob = f.global_service(service_id="g1", name="agent")
    glob.spec.task.placement.constraints.append("node.labels.zone==east")
    paused = f.node("n1", availability="pause")
    drained = f.node("n2", availability="drain")
    active = f.node("n3")
    tasks = [
        f.task(svc, 1, node="n1"),
        f.task(svc, 2, node="n2"),
        f.task(glob, 0, node="n3"),
    ]
    enforcer, cache = _enforcer([svc, glob, paused, drained, active, *tasks])
    await _one_pass(enforcer)
    assert [cache.tasks[t.id].desired_state for t in tasks] == [states.RUNNING] * 3
    # Made active again, the paused node is looked at afresh.
    cache.load([f.node("n1")], 5)
    await _one_pass(enforcer)
    assert cache.tasks[tasks[0].id].desired_state == states.SHUTDOWN


# ---- what follows an eviction -----------------------------------------------------------


def test_orchestrator_refills_an_evicted_slot_at_once_without_counting_a_restart() -> None:
    svc = _constrained("node.labels.zone==east")
    svc.spec.replicated.replicas = 1
    evicted = f.task(svc, 1, desired=states.SHUTDOWN)
    evicted.status.err = "constraint no longer satisfied: node.labels.zone==east"
    plan = plan_service(svc, [evicted], f.all_ok, NOW)
    (new,) = plan.creates
    assert new.slot == 1
    assert new.restart_attempt == 0
    assert plan.wake_at is None


def test_agent_shutdown_report_keeps_the_managers_reason() -> None:
    svc = f.service()
    task = f.task(svc, 1, desired=states.SHUTDOWN)
    task.status.err = "constraint no longer satisfied: node.labels.zone==east"
    report = objects_pb2.TaskStatus(state=states.SHUTDOWN, message="shutdown")
    out = forward_only(report)(f.copy(task))
    assert out is not None
    assert out.status.state == states.SHUTDOWN
    assert out.status.message == "shutdown"
    assert out.status.err == "constraint no longer satisfied: node.labels.zone==east"
    # An error of the agent's own wins; a wanted task's old error is not carried over.
    failed = objects_pb2.TaskStatus(state=states.FAILED, err="exit 1")
    assert forward_only(failed)(f.copy(task)).status.err == "exit 1"  # type: ignore[union-attr]
    running = f.task(svc, 2, state=states.STARTING)
    running.status.err = "stale"
    report = objects_pb2.TaskStatus(state=states.RUNNING)
    assert forward_only(report)(running).status.err == ""  # type: ignore[union-attr]
