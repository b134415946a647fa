"""The replicated orchestrator's rules (plan_service, plan_removal, the restart policy)
and the Reconciler loop every reconciler runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Unpack

import pytest

from common import states
from common.api import objects_pb2, types_pb2
from common.defaults import RESTART_DELAY
from common.nodes import keeps_tasks
from common.timeutil import timestamp_seconds
from manager.domain.specs import restart_delay
from manager.domain.tasks import new_task, runs_current_spec
from manager.orchestrator.orchestrator import _shut_down
from manager.orchestrator.replicated import Plan, ShutdownTask, plan_removal, plan_service
from manager.orchestrator.restart import restart_verdict
from manager.orchestrator.taskreaper import tasks_to_delete
from manager.reconciler import Reconciler
from manager.store import StoreError
from tests.fakes import fake_store
from tests.unit import factories as f
from tests.unit.factories import NOW


def by_id(plan: Plan) -> dict[str, ShutdownTask]:
    return {s.task_id: s for s in plan.shutdowns}


def running(svc: objects_pb2.Service, n: int, **kw: Unpack[f.TaskArgs]) -> list[objects_pb2.Task]:
    return [f.task(svc, slot, **kw) for slot in range(1, n + 1)]


def apply(tasks: dict[str, objects_pb2.Task], plan: Plan, now: float) -> list[objects_pb2.Task]:
    """Commit `plan` the way ReplicatedOrchestrator.reconcile does; the tasks it made."""
    for s in plan.shutdowns:
        updated = _shut_down(s)(f.copy(tasks[s.task_id]))
        if updated is not None:
            tasks[s.task_id] = updated
    for i, t in enumerate(plan.creates):
        t.meta.created_at.CopyFrom(f.timestamp(now + i * 1e-6))
        tasks[t.id] = t
    return list(plan.creates)


# ---- keeps_tasks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "usable"),
    [
        (None, False),
        (f.node(), True),
        (f.node(state="down"), False),
        (f.node(availability="drain"), False),
        (f.node(state="ready", availability="pause"), True),
        (f.node(state="unknown"), True),
        (f.node(state="disconnected"), True),
        (f.node(state="down", availability="drain"), False),
    ],
)
def test_keeps_tasks(node: objects_pb2.Node | None, usable: bool) -> None:
    assert keeps_tasks(node) is usable


# ---- tasks.py -----------------------------------------------------------------------


def test_new_task_is_a_pending_copy_of_the_template() -> None:
    svc = f.service(3, ports=[(80, 8080)], spec_version=4)
    svc.spec.annotations.labels["tier"] = "front"
    t = new_task(svc, 2, restart_attempt=3)
    assert t.id
    assert len(t.id) == 25
    assert t.service_id == svc.id
    assert t.slot == 2
    assert t.node_id == ""
    assert t.annotations.name == "web.2"
    assert dict(t.annotations.labels) == {"tier": "front"}
    assert t.service_name == "web"
    assert t.spec == svc.spec.task
    assert t.endpoint == svc.spec.endpoint
    assert t.spec_version == 4
    assert t.desired_state == states.RUNNING
    assert t.status.state == states.PENDING
    assert t.status.message == "pending task scheduling"
    assert t.restart_attempt == 3
    assert not t.HasField("restart_at")
    assert not t.restart_declined


def test_new_task_for_a_node_is_named_after_it() -> None:
    t = new_task(f.service(), 0, node_id="n7", desired=states.READY)
    assert t.annotations.name == "web.n7"
    assert t.node_id == "n7"
    assert t.desired_state == states.READY


def test_new_task_ids_differ() -> None:
    svc = f.service()
    assert len({new_task(svc, 1).id for _ in range(50)}) == 50


def test_runs_current_spec() -> None:
    svc = f.service(2)
    t = f.task(svc, 1)
    assert runs_current_spec(t, svc)
    # A scale changes the spec version but not the template: still current.
    assert runs_current_spec(t, f.changed(svc, replicas=5))
    assert not runs_current_spec(t, f.changed(svc, image="nginx:1.26"))
    ported = f.changed(svc)
    ported.spec.endpoint.ports.add(target_port=80, publish_mode=types_pb2.PUBLISH_MODE_HOST)
    assert not runs_current_spec(t, ported)


def test_restart_delay() -> None:
    assert restart_delay(f.service().spec.task) == RESTART_DELAY == 5.0
    assert restart_delay(f.service(delay=0).spec.task) == 0.0
    assert restart_delay(f.service(delay=2.5).spec.task) == 2.5


@pytest.mark.parametrize(
    ("condition", "state", "restart"),
    [
        ("none", states.FAILED, False),
        ("none", states.COMPLETE, False),
        ("on-failure", states.COMPLETE, False),
        ("on-failure", states.FAILED, True),
        ("on-failure", states.REJECTED, True),
        ("on-failure", states.SHUTDOWN, True),
        ("any", states.COMPLETE, True),
        ("any", states.FAILED, True),
    ],
)
def test_restart_verdict_condition(condition: str, state: f.State, restart: bool) -> None:
    t = f.task(f.service(condition=condition), 1, state=state)
    verdict = restart_verdict(t, [t], NOW)
    assert verdict.restart is restart
    assert bool(verdict.reason) is not restart


@pytest.mark.parametrize(("attempt", "restart"), [(0, True), (2, True), (3, False), (9, False)])
def test_restart_verdict_max_attempts(attempt: int, restart: bool) -> None:
    t = f.task(f.service(max_attempts=3), 1, state=states.FAILED, restart_attempt=attempt)
    verdict = restart_verdict(t, [t], NOW)
    assert verdict.restart is restart
    if not restart:
        assert verdict.reason == "restart max attempts (3) reached"


def test_restart_verdict_window_counts_recent_restarts_only() -> None:
    svc = f.service(max_attempts=2, window=60, delay=5)

    def ended(attempt: int, created: float, restart_at: float, *recent: float) -> objects_pb2.Task:
        return f.task(
            svc, 1, state=states.FAILED, desired=states.SHUTDOWN, restart_attempt=attempt,
            created_at=created, restart_at=restart_at, recent_restarts=recent,
        )  # fmt: skip

    # Restarted long ago, then twice within the last minute; the newest has just failed.
    # Each task carries the times of the restarts that led to it.
    a = ended(0, NOW - 500, NOW - 395)
    b = ended(1, NOW - 395, NOW - 35, NOW - 395)
    c = ended(2, NOW - 35, NOW - 15, NOW - 395, NOW - 35)
    d = f.task(
        svc,
        1,
        state=states.FAILED,
        restart_attempt=3,
        created_at=NOW - 15,
        recent_restarts=(NOW - 395, NOW - 35, NOW - 15),
    )
    assert not restart_verdict(d, [a, b, c, d], NOW).restart
    # Half a minute later only one of those restarts is within the window.
    assert restart_verdict(d, [a, b, c, d], NOW + 30).restart
    # Had it failed right after the first of them, one restart would be left too.
    assert restart_verdict(c, [a, b, c], NOW - 20).restart


# ---- plan_service: filling slots -------------------------------------------------------


def test_new_service_gets_one_task_per_slot() -> None:
    svc = f.service(3)
    plan = plan_service(svc, [], f.all_ok, NOW)
    assert sorted(t.slot for t in plan.creates) == [1, 2, 3]
    assert not plan.shutdowns
    assert plan.wake_at is None
    for t in plan.creates:
        assert t.status.state == states.PENDING
        assert t.desired_state == states.RUNNING
        assert t.restart_attempt == 0
        assert t.service_id == svc.id


def test_a_plan_told_to_make_fewer_fills_the_lowest_slots_and_says_so() -> None:
    svc = f.service(5)
    plan = plan_service(svc, running(svc, 1), f.all_ok, NOW, max_creates=2)
    assert sorted(t.slot for t in plan.creates) == [2, 3]
    assert plan.more
    enough = plan_service(svc, running(svc, 1), f.all_ok, NOW, max_creates=4)
    assert sorted(t.slot for t in enough.creates) == [2, 3, 4, 5]
    assert not enough.more


def test_converged_service_needs_nothing() -> None:
    svc = f.service(3)
    plan = plan_service(svc, running(svc, 3), f.all_ok, NOW)
    assert not plan
    assert plan == Plan()


def test_zero_replicas_needs_nothing() -> None:
    assert not plan_service(f.service(0), [], f.all_ok, NOW)


def test_tasks_on_their_way_up_are_left_alone() -> None:
    svc = f.service(4)
    tasks = [
        f.task(svc, 1, state=states.PENDING),
        f.task(svc, 2, state=states.ASSIGNED),
        f.task(svc, 3, state=states.PREPARING),
        f.task(svc, 4, state=states.STARTING),
    ]
    assert not plan_service(svc, tasks, f.all_ok, NOW)


def test_scale_up_fills_the_new_slots() -> None:
    svc = f.service(2)
    plan = plan_service(f.changed(svc, replicas=4), running(svc, 2), f.all_ok, NOW)
    assert sorted(t.slot for t in plan.creates) == [3, 4]
    assert not plan.shutdowns


def test_empty_slot_in_the_middle_is_filled() -> None:
    svc = f.service(3)
    tasks = [f.task(svc, 1), f.task(svc, 3)]
    plan = plan_service(svc, tasks, f.all_ok, NOW)
    assert [t.slot for t in plan.creates] == [2]


def test_scale_down_removes_the_slots_above_n() -> None:
    svc = f.service(4)
    tasks = [*running(svc, 3), f.task(svc, 4, state=states.PENDING)]
    plan = plan_service(f.changed(svc, replicas=1), tasks, f.all_ok, NOW)
    assert not plan.creates
    assert by_id(plan) == {t.id: ShutdownTask(t.id, states.REMOVE) for t in tasks if t.slot > 1}


def test_scale_down_to_zero_removes_everything() -> None:
    svc = f.service(2)
    tasks = running(svc, 2)
    plan = plan_service(f.changed(svc, replicas=0), tasks, f.all_ok, NOW)
    assert {s.task_id for s in plan.shutdowns} == {t.id for t in tasks}
    assert all(s.desired == states.REMOVE for s in plan.shutdowns)


def test_scale_down_removes_the_history_of_removed_slots_too() -> None:
    """The orchestrator removes the live tasks of slots above N; the reaper (given the
    replica count, as TaskReaper passes it) deletes their ended ones."""
    svc = f.service(3)
    failed = f.task(
        svc,
        3,
        state=states.FAILED,
        desired=states.SHUTDOWN,
        restart_at=NOW - 55,
        created_at=NOW - 60,
    )
    tasks = {t.id: t for t in [*running(svc, 3, created_at=NOW - 50), failed]}
    nodes = f.nodes(f.node("n1"))
    svc = f.changed(svc, replicas=2)
    apply(tasks, plan_service(svc, list(tasks.values()), f.all_ok, NOW), NOW)
    # The agent stops what it was told to stop; the reaper deletes what it may.
    for t in tasks.values():
        if t.desired_state > states.RUNNING and not states.is_terminal(t.status.state):
            t.status.state = states.SHUTDOWN
    for _ in range(3):
        for t in tasks_to_delete(list(tasks.values()), nodes, 5, max_slot=2):
            del tasks[t.id]
        apply(tasks, plan_service(svc, list(tasks.values()), f.all_ok, NOW), NOW)
    assert sorted(t.slot for t in tasks.values()) == [1, 2], "slot 3 is gone for good"
    # Scaled up again, slot 3 starts afresh.
    plan = plan_service(f.changed(svc, replicas=3), list(tasks.values()), f.all_ok, NOW)
    assert [t.slot for t in plan.creates] == [3]


def test_surplus_tasks_in_a_slot_keep_the_most_advanced() -> None:
    svc = f.service(1)
    a = f.task(svc, 1, state=states.RUNNING, created_at=NOW - 50)
    b = f.task(svc, 1, state=states.PENDING, created_at=NOW - 10)
    c = f.task(svc, 1, state=states.RUNNING, created_at=NOW - 20)
    plan = plan_service(svc, [a, b, c], f.all_ok, NOW)
    assert not plan.creates
    assert by_id(plan) == {
        a.id: ShutdownTask(a.id, states.REMOVE),
        b.id: ShutdownTask(b.id, states.REMOVE),
    }


def test_tasks_already_shut_down_are_not_touched_again() -> None:
    svc = f.service(1)
    old = f.task(svc, 1, state=states.SHUTDOWN, desired=states.SHUTDOWN, created_at=NOW - 50)
    gone = f.task(svc, 1, state=states.RUNNING, desired=states.REMOVE, created_at=NOW - 40)
    current = f.task(svc, 1, created_at=NOW - 30)
    assert not plan_service(svc, [old, gone, current], f.all_ok, NOW)


# ---- plan_service: tasks that ended by themselves ----------------------------------------


def test_failed_task_waits_for_the_restart_delay() -> None:
    svc = f.service(2, delay=3)
    failed = f.task(svc, 2, state=states.FAILED)
    plan = plan_service(svc, [f.task(svc, 1), failed], f.all_ok, NOW)
    assert plan.shutdowns == [ShutdownTask(failed.id, states.SHUTDOWN, restart_at=NOW + 3)]
    assert not plan.creates
    assert plan.wake_at == NOW + 3


def test_default_restart_delay_is_five_seconds() -> None:
    svc = f.service(1)
    failed = f.task(svc, 1, state=states.COMPLETE)
    plan = plan_service(svc, [failed], f.all_ok, NOW)
    assert plan.shutdowns[0].restart_at == NOW + 5
    assert plan.wake_at == NOW + 5


def test_replacement_comes_once_the_delay_has_passed() -> None:
    svc = f.service(1, delay=3)
    tasks = {t.id: t for t in [f.task(svc, 1, state=states.FAILED, restart_attempt=1)]}
    apply(tasks, plan_service(svc, list(tasks.values()), f.all_ok, NOW), NOW)
    (stored,) = tasks.values()
    assert stored.desired_state == states.SHUTDOWN
    assert timestamp_seconds(stored.restart_at) == pytest.approx(NOW + 3)
    assert not stored.restart_declined

    early = plan_service(svc, list(tasks.values()), f.all_ok, NOW + 2.9)
    assert not early
    assert early.wake_at == pytest.approx(NOW + 3)

    plan = plan_service(svc, list(tasks.values()), f.all_ok, NOW + 3.5)
    assert not plan.shutdowns
    assert [(t.slot, t.restart_attempt) for t in plan.creates] == [(1, 2)]
    assert plan.wake_at is None


def test_zero_delay_restarts_in_the_same_pass() -> None:
    svc = f.service(1, delay=0)
    failed = f.task(svc, 1, state=states.FAILED)
    plan = plan_service(svc, [failed], f.all_ok, NOW)
    assert plan.shutdowns == [ShutdownTask(failed.id, states.SHUTDOWN, restart_at=NOW)]
    assert [(t.slot, t.restart_attempt) for t in plan.creates] == [(1, 1)]


def test_earliest_restart_decides_when_to_wake() -> None:
    svc = f.service(3, delay=10)
    tasks = [
        f.task(svc, 1, state=states.FAILED, desired=states.SHUTDOWN, restart_at=NOW + 7),
        f.task(svc, 2, state=states.FAILED, desired=states.SHUTDOWN, restart_at=NOW + 4),
        f.task(svc, 3, state=states.FAILED),
    ]
    plan = plan_service(svc, tasks, f.all_ok, NOW)
    assert plan.wake_at == NOW + 4
    assert not plan.creates


@pytest.mark.parametrize(
    ("condition", "state"),
    [("none", states.COMPLETE), ("none", states.FAILED), ("on-failure", states.COMPLETE)],
)
def test_declined_slot_stays_empty(condition: str, state: f.State) -> None:
    svc = f.service(1, condition=condition)
    tasks = {t.id: t for t in [f.task(svc, 1, state=state)]}
    plan = plan_service(svc, list(tasks.values()), f.all_ok, NOW)
    assert plan.shutdowns == [ShutdownTask(next(iter(tasks)), states.SHUTDOWN, declined=True)]
    assert not plan.creates
    assert plan.wake_at is None
    apply(tasks, plan, NOW)
    assert next(iter(tasks.values())).restart_declined
    # ...also later, and after a scale (which leaves the task template alone).
    assert not plan_service(svc, list(tasks.values()), f.all_ok, NOW + 3600)
    assert not plan_service(f.changed(svc, replicas=1), list(tasks.values()), f.all_ok, NOW)


def test_max_attempts_reached_declines() -> None:
    svc = f.service(1, max_attempts=2, delay=0)
    failed = f.task(svc, 1, state=states.FAILED, restart_attempt=2)
    plan = plan_service(svc, [failed], f.all_ok, NOW)
    assert plan.shutdowns == [ShutdownTask(failed.id, states.SHUTDOWN, declined=True)]
    assert not plan.creates


def test_restart_attempts_count_up_to_max_attempts() -> None:
    svc = f.service(1, max_attempts=3, delay=0)
    tasks = {t.id: t for t in [f.task(svc, 1, created_at=NOW)]}
    attempts = []
    now = NOW
    for _ in range(10):
        now += 1
        for t in tasks.values():
            if t.desired_state == states.RUNNING:
                t.status.state = states.FAILED
        made = apply(tasks, plan_service(svc, list(tasks.values()), f.all_ok, now), now)
        attempts += [t.restart_attempt for t in made]
    assert attempts == [1, 2, 3]


def test_declined_slot_gets_a_task_when_the_spec_changes() -> None:
    svc = f.service(1, condition="none")
    done = f.task(svc, 1, state=states.COMPLETE, desired=states.SHUTDOWN, declined=True)
    plan = plan_service(f.changed(svc, image="nginx:1.26"), [done], f.all_ok, NOW)
    assert [t.slot for t in plan.creates] == [1]
    assert plan.creates[0].spec.container.image == "nginx:1.26"
    assert not plan.shutdowns


def test_spec_change_gives_an_exhausted_slot_its_restarts_back() -> None:
    svc = f.service(1, max_attempts=2, delay=0)
    exhausted = f.task(
        svc, 1, state=states.FAILED, desired=states.SHUTDOWN, declined=True, restart_attempt=2
    )
    svc = f.changed(svc, image="nginx:1.26")
    (fresh,) = plan_service(svc, [exhausted], f.all_ok, NOW).creates
    fresh.meta.created_at.CopyFrom(f.timestamp(NOW))
    fresh.node_id, fresh.status.state = "n1", states.FAILED
    # The new spec's first failure: max_attempts=2 allows a restart.
    plan = plan_service(svc, [exhausted, fresh], f.all_ok, NOW + 1)
    assert [t.slot for t in plan.creates] == [1]


def test_old_spec_task_that_failed_is_replaced_at_once() -> None:
    svc = f.service(1, delay=30)
    failed = f.task(svc, 1, state=states.FAILED)
    new = f.changed(svc, image="nginx:1.26")
    plan = plan_service(new, [failed], f.all_ok, NOW)
    assert plan.shutdowns[0].task_id == failed.id
    assert [t.spec.container.image for t in plan.creates] == ["nginx:1.26"]


def test_terminal_desired_running_task_counts_as_ended_even_on_a_down_node() -> None:
    svc = f.service(1, delay=2)
    failed = f.task(svc, 1, state=states.FAILED, node="gone")
    plan = plan_service(svc, [failed], lambda n: False, NOW)
    assert plan.shutdowns == [ShutdownTask(failed.id, states.SHUTDOWN, restart_at=NOW + 2)]
    assert not plan.creates


# ---- plan_service: unusable nodes -------------------------------------------------------


@pytest.mark.parametrize("why", ["down", "drain", "gone"])
def test_task_on_unusable_node_is_replaced_at_once(why: str) -> None:
    svc = f.service(2, delay=30, max_attempts=1)
    table = f.nodes(f.node("n1"))
    if why == "down":
        table["n2"] = f.node("n2", state="down")
    elif why == "drain":
        table["n2"] = f.node("n2", availability="drain")
    lost = f.task(svc, 2, node="n2", restart_attempt=1)
    plan = plan_service(svc, [f.task(svc, 1), lost], f.node_ok(table), NOW)
    # Not a failure: no delay, no attempt counted, not declined (max_attempts is 1).
    assert plan.shutdowns == [ShutdownTask(lost.id, states.REMOVE)]
    assert [(t.slot, t.restart_attempt) for t in plan.creates] == [(2, 1)]
    assert plan.wake_at is None


def test_task_on_paused_node_stays() -> None:
    svc = f.service(1)
    table = f.nodes(f.node("n1", availability="pause"))
    assert not plan_service(svc, [f.task(svc, 1)], f.node_ok(table), NOW)


def test_pending_task_waits_when_every_node_is_down() -> None:
    svc = f.service(1)
    assert not plan_service(svc, [f.task(svc, 1, state=states.PENDING)], lambda n: False, NOW)


def test_replacement_of_lost_task_is_made_once() -> None:
    svc = f.service(1)
    table = f.nodes(f.node("n1", state="down"), f.node("n2"))
    tasks = {t.id: t for t in [f.task(svc, 1, node="n1")]}
    made = apply(tasks, plan_service(svc, list(tasks.values()), f.node_ok(table), NOW), NOW)
    assert len(made) == 1
    # The lost task still reports RUNNING (its agent is unreachable): no second replacement.
    assert not plan_service(svc, list(tasks.values()), f.node_ok(table), NOW + 1)


def lost_then_failed(svc: objects_pb2.Service) -> list[objects_pb2.Task]:
    """A slot's history: the first task failed and was restarted (attempt 1); the node of
    the restarted task went down, so it was replaced at once (no attempt counted, so the
    replacement carries attempt 1 too); now the replacement has failed."""
    first = f.task(
        svc,
        1,
        state=states.FAILED,
        desired=states.SHUTDOWN,
        restart_at=NOW - 40,
        created_at=NOW - 50,
    )
    restarted = f.task(
        svc, 1, desired=states.SHUTDOWN, node="n2", restart_attempt=1, created_at=NOW - 40
    )
    replacement = f.task(svc, 1, state=states.FAILED, restart_attempt=1, created_at=NOW - 30)
    return [first, restarted, replacement]


def test_node_losses_are_not_restart_attempts() -> None:
    svc = f.service(1, max_attempts=2, delay=0)
    table = f.nodes(f.node("n1"), f.node("n2", state="down"))
    plan = plan_service(svc, lost_then_failed(svc), f.node_ok(table), NOW)
    assert [(t.slot, t.restart_attempt) for t in plan.creates] == [(1, 2)]


def test_windowed_policy_does_not_count_node_losses() -> None:
    svc = f.service(1, max_attempts=2, window=3600, delay=0)
    table = f.nodes(f.node("n1"), f.node("n2", state="down"))
    plan = plan_service(svc, lost_then_failed(svc), f.node_ok(table), NOW)
    # One restart so far, max_attempts is 2: the slot is restarted once more.
    assert [(t.slot, t.restart_attempt) for t in plan.creates] == [(1, 2)]


def test_windowed_max_attempts_above_history_limit_is_reached() -> None:
    svc = f.service(1, max_attempts=7, window=3600, delay=0)
    table = f.nodes(f.node("n1"))
    tasks = {t.id: t for t in [f.task(svc, 1, created_at=NOW)]}
    restarts = 0
    now = NOW
    for _ in range(20):
        now += 1
        for t in tasks.values():
            if t.desired_state == states.RUNNING:
                t.status.state = states.FAILED
        for t in apply(tasks, plan_service(svc, list(tasks.values()), f.all_ok, now), now):
            t.node_id, t.status.state = "n1", states.RUNNING
            restarts += 1
        for t in tasks_to_delete(list(tasks.values()), table, 5):
            del tasks[t.id]
    assert restarts == 7


# ---- plan_service: rolling updates -----------------------------------------------------


@pytest.mark.parametrize(("parallelism", "replaced"), [(1, 1), (2, 2), (0, 4), (9, 4)])
def test_update_replaces_parallelism_slots_at_a_time(parallelism: int, replaced: int) -> None:
    svc = f.service(4, parallelism=parallelism)
    tasks = running(svc, 4)
    new = f.changed(svc, image="nginx:1.26")
    plan = plan_service(new, tasks, f.all_ok, NOW)
    assert [s.task_id for s in plan.shutdowns] == [t.id for t in tasks[:replaced]]
    assert all(s == ShutdownTask(s.task_id, states.SHUTDOWN) for s in plan.shutdowns)
    assert [t.slot for t in plan.creates] == list(range(1, replaced + 1))
    assert all(t.spec_version == new.spec_version for t in plan.creates)
    assert all(t.restart_attempt == 0 for t in plan.creates)


def test_update_waits_for_the_replacement_to_run() -> None:
    svc = f.service(3, parallelism=1)
    new = f.changed(svc, image="nginx:1.26")
    tasks = {t.id: t for t in running(svc, 3, created_at=NOW - 100)}
    (first,) = apply(tasks, plan_service(new, list(tasks.values()), f.all_ok, NOW), NOW)
    for state in (states.PENDING, states.ASSIGNED, states.STARTING):
        first.status.state = state
        assert not plan_service(new, list(tasks.values()), f.all_ok, NOW + 1)
    first.status.state = states.RUNNING
    first.node_id = "n1"
    plan = plan_service(new, list(tasks.values()), f.all_ok, NOW + 2)
    assert [t.slot for t in plan.creates] == [2]


def test_update_runs_to_completion() -> None:
    svc = f.service(3, parallelism=2)
    new = f.changed(svc, image="nginx:1.26")
    tasks = {t.id: t for t in running(svc, 3, created_at=NOW - 100)}
    now = NOW
    for _ in range(5):
        now += 1
        apply(tasks, plan_service(new, list(tasks.values()), f.all_ok, now), now)
        for t in tasks.values():
            if t.desired_state == states.RUNNING:
                t.node_id, t.status.state = "n1", states.RUNNING
            else:
                t.status.state = states.SHUTDOWN
    live = [t for t in tasks.values() if t.desired_state == states.RUNNING]
    assert sorted(t.slot for t in live) == [1, 2, 3]
    assert all(t.spec.container.image == "nginx:1.26" for t in live)


def test_update_does_not_start_while_slots_are_still_updating() -> None:
    """A slot whose current-spec task is not running yet counts against parallelism."""
    svc = f.service(3, parallelism=1)
    new = f.changed(svc, image="nginx:1.26")
    old1 = f.task(svc, 1, desired=states.SHUTDOWN, state=states.SHUTDOWN, created_at=NOW - 90)
    new1 = f.task(new, 1, state=states.PENDING, created_at=NOW - 10)
    tasks = [old1, new1, f.task(svc, 2), f.task(svc, 3)]
    assert not plan_service(new, tasks, f.all_ok, NOW)


def test_scale_is_not_an_update() -> None:
    svc = f.service(2)
    assert not plan_service(f.changed(svc, replicas=2), running(svc, 2), f.all_ok, NOW)


# ---- plan_service: rebalancing ---------------------------------------------------------


def _rebalance_round(requested: int, done: int) -> objects_pb2.Service:
    svc = f.service(4)
    svc.rebalance_requested, svc.rebalance_done = requested, done
    return svc


def test_rebalance_moves_a_task_off_the_node_over_its_share() -> None:
    svc = _rebalance_round(1, 0)
    tasks = [f.task(svc, s, node=n) for s, n in [(1, "n1"), (2, "n1"), (3, "n2"), (4, "n3")]]
    target = {"n1": 1, "n2": 1, "n3": 1, "n4": 1}
    plan = plan_service(svc, tasks, f.all_ok, NOW, f.nodes(), target)
    (move,) = plan.creates
    assert move.slot == 2  # the highest slot of the busiest node
    assert move.replaces == tasks[1].id
    assert move.rebalance_round == 1
    assert not plan.rebalance_done


def test_a_move_of_an_earlier_rebalance_does_not_end_this_one() -> None:
    # Round 1 moved slot 3 to n2; since then n4 was drained and came back, and slot 4's
    # replacement landed on n2 too. Round 2 must even that out, although the last move
    # (round 1's) now sits on a node over its share.
    svc = _rebalance_round(2, 1)
    old_move = f.task(svc, 3, node="n2", created_at=NOW - 50)
    old_move.replaces, old_move.rebalance_round = "gone", 1
    tasks = [f.task(svc, 1, node="n1"), f.task(svc, 2, node="n3"), old_move]
    tasks.append(f.task(svc, 4, node="n2", created_at=NOW - 10))
    target = {"n1": 1, "n2": 1, "n3": 1, "n4": 1}
    plan = plan_service(svc, tasks, f.all_ok, NOW, f.nodes(), target)
    assert not plan.rebalance_done
    (move,) = plan.creates
    assert move.replaces in {old_move.id, tasks[3].id}
    assert move.rebalance_round == 2


def test_rebalance_ends_when_its_last_move_found_nothing_better() -> None:
    svc = _rebalance_round(1, 0)
    move = f.task(svc, 2, node="n1", created_at=NOW - 5)
    move.replaces, move.rebalance_round = "gone", 1
    tasks = [f.task(svc, 1, node="n1"), move, f.task(svc, 3, node="n2"), f.task(svc, 4, node="n3")]
    target = {"n1": 1, "n2": 1, "n3": 1, "n4": 1}
    plan = plan_service(svc, tasks, f.all_ok, NOW, f.nodes(), target)
    assert plan.rebalance_done
    assert not plan.creates


# ---- plan_removal and the shut-down mutator ----------------------------------------------


def test_plan_removal_removes_every_task_once() -> None:
    svc = f.service(3)
    tasks = [
        f.task(svc, 1),
        f.task(svc, 2, state=states.FAILED, desired=states.SHUTDOWN),
        f.task(svc, 3, desired=states.REMOVE),
        f.task(svc, 4, state=states.PENDING),
    ]
    plan = plan_removal(tasks)
    assert plan.shutdowns == [
        ShutdownTask(tasks[0].id, states.REMOVE),
        ShutdownTask(tasks[1].id, states.REMOVE),
        ShutdownTask(tasks[3].id, states.REMOVE),
    ]
    assert not plan.creates
    assert not plan_removal([])


def test_shut_down_mutator_only_raises_the_desired_state() -> None:
    svc = f.service()
    t = f.task(svc, 1, state=states.FAILED)
    out = _shut_down(ShutdownTask(t.id, states.SHUTDOWN, restart_at=NOW + 5))(f.copy(t))
    assert out is not None
    assert out.desired_state == states.SHUTDOWN
    assert timestamp_seconds(out.restart_at) == pytest.approx(NOW + 5)
    assert not out.restart_declined
    out = _shut_down(ShutdownTask(t.id, states.SHUTDOWN, declined=True))(f.copy(t))
    assert out is not None
    assert out.restart_declined
    assert not out.HasField("restart_at")
    removed = f.task(svc, 1, desired=states.REMOVE)
    assert _shut_down(ShutdownTask(t.id, states.SHUTDOWN))(f.copy(removed)) is None
    assert _shut_down(ShutdownTask(t.id, states.REMOVE))(f.copy(removed)) is None


def test_plan_is_falsy_with_only_a_wake_time() -> None:
    plan = Plan()
    plan.wake(NOW + 5)
    plan.wake(NOW + 9)
    assert not plan
    assert plan.wake_at == NOW + 5
    plan.wake(NOW + 1)
    assert plan.wake_at == NOW + 1


def test_plan_service_does_not_change_its_inputs() -> None:
    svc = f.service(2, delay=1)
    tasks = [f.task(svc, 1, state=states.FAILED), f.task(svc, 3)]
    before = [f.copy(t) for t in tasks]
    svc_before = objects_pb2.Service()
    svc_before.CopyFrom(svc)
    plan_service(svc, tasks, f.all_ok, NOW)
    assert tasks == before
    assert svc == svc_before


# ---- the Reconciler loop ---------------------------------------------------------------


class Recorder(Reconciler):
    """Records the key sets it is asked to reconcile."""

    name = "test.recorder"

    def __init__(
        self,
        keys: Iterable[str] = (),
        debounce: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.debounce = debounce
        self.keys = set(keys)
        self.passes_seen: list[set[str]] = []
        self.fail_next = 0
        self.changed = asyncio.Event()

    def all_keys(self) -> Iterable[str]:
        return set(self.keys)

    async def reconcile(self, keys: set[str]) -> None:
        if not keys:
            return  # a pass for other pending work (has_work); nothing of ours
        self.passes_seen.append(set(keys))
        self.changed.set()
        if self.fail_next:
            self.fail_next -= 1
            raise StoreError("etcd hiccup")


async def wait_passes(r: Recorder, n: int, timeout: float = 3.0) -> None:
    async def until() -> None:
        while len(r.passes_seen) < n:
            r.changed.clear()
            await r.changed.wait()

    await asyncio.wait_for(until(), timeout)


Start = Callable[[Reconciler], Reconciler]


@pytest.fixture
async def started() -> AsyncIterator[Start]:
    tasks: list[asyncio.Task[None]] = []

    def start(r: Reconciler) -> Reconciler:
        tasks.append(asyncio.create_task(r.run()))
        return r

    yield start
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_reconciler_starts_with_everything(started: Start) -> None:
    r = Recorder({"a", "b"})
    started(r)
    await wait_passes(r, 1)
    assert r.passes_seen == [{"a", "b"}]
    r.mark("c")
    await wait_passes(r, 2)
    assert r.passes_seen[1] == {"c"}


async def test_reconciler_with_nothing_marked_sees_no_keys(started: Start) -> None:
    r = Recorder()
    started(r)
    await asyncio.sleep(0.05)
    assert r.passes_seen == []


async def test_reconciler_debounce_gathers_marks(started: Start) -> None:
    r = Recorder({"x"}, debounce=0.05)
    started(r)
    await wait_passes(r, 1)
    for key in ("a", "b", "c"):
        r.mark(key)
        await asyncio.sleep(0.01)
    r.mark_many(["d", "e"])
    await wait_passes(r, 2)
    await asyncio.sleep(0.1)
    assert r.passes_seen[1:] == [{"a", "b", "c", "d", "e"}]


async def test_reconciler_max_delay_bounds_the_debounce(started: Start) -> None:
    r = Recorder(debounce=0.05)
    r.max_delay = 0.15
    started(r)
    loop = asyncio.get_running_loop()
    begin = loop.time()
    while not r.passes_seen and loop.time() - begin < 3:
        r.mark(f"k{loop.time()}")  # a steady stream of changes
        await asyncio.sleep(0.01)
    assert r.passes_seen, "a pass ran despite the stream of changes"
    assert loop.time() - begin < 1.0


async def test_reconciler_timer_marks_at_its_time(started: Start) -> None:
    r = Recorder()
    started(r)
    begin = time.time()
    r.mark_at(begin + 0.15, "later")
    r.mark_at(begin + 0.05, "sooner")
    await wait_passes(r, 1)
    assert r.passes_seen == [{"sooner"}]
    assert time.time() - begin >= 0.05
    await wait_passes(r, 2)
    assert r.passes_seen[1] == {"later"}
    assert time.time() - begin >= 0.15


async def test_reconciler_timer_in_the_past_fires_at_once(started: Start) -> None:
    r = Recorder()
    started(r)
    r.mark_at(time.time() - 10, "overdue")
    await wait_passes(r, 1, timeout=0.5)
    assert r.passes_seen == [{"overdue"}]


async def test_reconciler_uses_its_clock_for_timers(started: Start) -> None:
    fake = [1000.0]
    r = Recorder(clock=lambda: fake[0])
    started(r)
    r.mark_at(1005.0, "k")
    await asyncio.sleep(0.05)
    assert r.passes_seen == []
    fake[0] = 1006.0
    r.mark("other")  # any wake-up re-checks the timers against the clock
    await wait_passes(r, 1)
    await asyncio.sleep(0.02)
    assert set().union(*r.passes_seen) == {"k", "other"}


async def test_reconciler_retries_a_failed_pass(started: Start) -> None:
    r = Recorder({"a"})
    r.fail_next = 2
    started(r)
    await wait_passes(r, 3)
    assert r.passes_seen == [{"a"}, {"a"}, {"a"}]
    assert r.passes == 1


async def test_reconciler_mark_everything_relists(started: Start) -> None:
    r = Recorder({"a"})
    started(r)
    await wait_passes(r, 1)
    r.keys = {"a", "b"}
    r.mark_everything()
    await wait_passes(r, 2)
    assert r.passes_seen[1] == {"a", "b"}


# ---- the Orchestrator's passes are bounded ---------------------------------------------


async def test_a_pass_creates_at_most_its_share_and_leaves_the_rest_marked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from manager.orchestrator import orchestrator as orch_mod

    monkeypatch.setattr(orch_mod, "MAX_CREATES_PER_PASS", 50)
    services = [f.service(30, service_id=f"s{i}", name=f"web{i}") for i in range(3)]
    cache, store = fake_store(*services)
    orch = orch_mod.Orchestrator(cache, store, lambda: NOW)
    orch._dirty.clear()
    await orch.reconcile({s.id for s in services})
    assert len(cache.tasks) == 50  # one service whole, 20 slots of the next
    assert orch._dirty  # the rest is marked for the next pass
    for _ in range(3):
        keys, orch._dirty = orch._dirty, set()
        await orch.reconcile(keys)
    assert len(cache.tasks) == 90
    for s in services:
        slots = sorted(t.slot for t in cache.tasks_by_service[s.id].values())
        assert slots == list(range(1, 31))  # every slot once


@pytest.mark.parametrize("turns", [0, 1, 2])
async def test_reconciler_stops_when_cancelled_right_after_a_mark(turns: int) -> None:
    # Leadership lost just as a change wakes the loop: the cancellation must not be lost.
    # (asyncio.wait_for in Python 3.11 returns instead of raising when the event it
    # waits for is set before the cancellation is delivered; the reconciler then ran on.)
    r = Recorder({"a"})
    runner = asyncio.create_task(r.run())
    await wait_passes(r, 1)
    r.mark_at(time.time() + 100, "later")  # the loop waits with a timeout
    await asyncio.sleep(0.01)
    r.mark("b")
    for _ in range(turns):
        await asyncio.sleep(0)
    runner.cancel()
    done, _ = await asyncio.wait([runner], timeout=1.0)
    assert done, "the reconciler kept running after it was cancelled"
