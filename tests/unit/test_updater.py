"""The rollout planner (updater.py) through the planners of replicated and global
services: delay, failure ratio and actions, the rollback settings, and global rollouts.

A test builds the tasks a service has, plans once (or loops plan, commit, report the way
the cluster would) and checks what the plan replaces and how the update status moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Unpack

import pytest

from common import states
from common.api import objects_pb2
from manager.orchestrator.global_mode import plan_global
from manager.orchestrator.orchestrator import _shut_down, _update_status
from manager.orchestrator.plan import Plan
from manager.orchestrator.replicated import plan_service
from manager.orchestrator.updater import UpdateDecision
from tests.unit import factories as f
from tests.unit.factories import NOW

US = objects_pb2.UpdateStatus


def rolling(svc: objects_pb2.Service, state: int = US.UPDATE_STATE_UPDATING) -> objects_pb2.Service:
    """`svc` with a rollout under way, as the control API leaves it."""
    svc.update_status.state = state  # type: ignore[assignment]
    return svc


def updated(svc: objects_pb2.Service, **cfg: Unpack[f.RolloutArgs]) -> objects_pb2.Service:
    """`svc` after `service update --image v2` with update config `cfg`: rolling."""
    return rolling(f.changed(f.rollout(svc, **cfg), image="nginx:v2"))


def plan(svc: objects_pb2.Service, tasks: list[objects_pb2.Task], now: float = NOW) -> Plan:
    return plan_service(svc, tasks, f.all_ok, now)


def old_and_new(svc: objects_pb2.Service) -> tuple[objects_pb2.Service, objects_pb2.Service]:
    """The spec a rollback returns to (its own update config) and the one it leaves."""
    new = f.changed(svc, image="nginx:v2")
    back = f.changed(new, image=svc.spec.task.container.image)
    return back, new


def failed(svc: objects_pb2.Service, slot: int, **kw: Unpack[f.TaskArgs]) -> objects_pb2.Task:
    """A task of `svc` that just failed (the restart policy has not decided yet)."""
    args: f.TaskArgs = {"state": states.FAILED, "created_at": NOW - 5}
    args.update(kw)
    return f.task(svc, slot, **args)


def replaced(p: Plan) -> list[int]:
    return sorted(t.slot for t in p.creates)


# ---- delay ------------------------------------------------------------------------------


def test_delay_holds_the_next_slot_until_the_last_new_task_ran_that_long() -> None:
    svc = f.service(3)
    new = updated(svc, parallelism=1, delay=10)
    tasks = [
        f.task(new, 1, created_at=NOW - 5, updated_at=NOW - 2),  # running for 2 s
        f.task(svc, 2),
        f.task(svc, 3),
    ]
    held = plan(new, tasks)
    assert not held.creates
    assert not held.shutdowns
    assert held.wake_at == NOW + 8
    assert replaced(plan(new, tasks, NOW + 7.9)) == []
    p = plan(new, tasks, NOW + 8)
    assert replaced(p) == [2]
    assert [s.task_id for s in p.shutdowns] == [tasks[1].id]


def test_without_delay_the_next_slot_follows_at_once() -> None:
    svc = f.service(3)
    new = updated(svc, parallelism=1)
    tasks = [f.task(new, 1, updated_at=NOW), f.task(svc, 2), f.task(svc, 3)]
    assert replaced(plan(new, tasks)) == [2]


def test_delay_does_not_hold_a_service_that_is_not_rolling() -> None:
    """A task of the current spec that started by a restart is no rollout's step."""
    svc = f.rollout(f.service(2), delay=60)
    tasks = [f.task(svc, 1, updated_at=NOW), f.task(svc, 2, updated_at=NOW)]
    assert not plan(svc, tasks)


# ---- failures: max failure ratio and failure actions -------------------------------------


@pytest.mark.parametrize(
    ("ratio", "failures", "paused"),
    [(0.0, 1, True), (0.5, 1, False), (0.5, 2, False), (0.5, 3, True), (1.0, 4, False)],
)
def test_failures_pause_the_update_once_above_the_ratio(
    ratio: float, failures: int, paused: bool
) -> None:
    svc = f.service(4)
    new = updated(svc, parallelism=0, max_failure_ratio=ratio, monitor=30)
    tasks = [failed(new, s) if s <= failures else f.task(new, s) for s in range(1, 5)]
    decision = plan(new, tasks).service_update
    if paused:
        assert decision == UpdateDecision(
            US.UPDATE_STATE_PAUSED,
            f"update paused due to failure or early termination of task {tasks[0].id}",
        )
    else:
        assert decision is None


def test_failures_of_the_old_spec_do_not_count() -> None:
    svc = f.service(2)
    new = updated(svc, parallelism=1)
    tasks = [failed(svc, 1), f.task(svc, 2)]
    p = plan(new, tasks)
    assert p.service_update is None
    assert replaced(p) == [1]  # the failed slot is refilled with the new spec at once


def test_a_paused_update_replaces_nothing_more() -> None:
    svc = f.service(3)
    new = rolling(updated(svc, parallelism=1), US.UPDATE_STATE_PAUSED)
    tasks = [f.task(new, 1), f.task(svc, 2), f.task(svc, 3)]
    assert not plan(new, tasks)


def test_failure_action_continue_goes_on_with_the_next_slots() -> None:
    svc = f.service(4)
    new = updated(svc, parallelism=2, failure_action="continue")
    tasks = [failed(new, 1), f.task(new, 2), f.task(svc, 3), f.task(svc, 4)]
    p = plan(new, tasks)
    assert p.service_update is None
    # Slot 1 is being restarted (in progress), so one more slot fits the parallelism.
    assert replaced(p) == [3]
    assert [s.task_id for s in p.shutdowns if s.task_id != tasks[0].id] == [tasks[2].id]


def test_failure_action_pause_stops_before_the_next_slots() -> None:
    svc = f.service(4)
    new = updated(svc, parallelism=2)
    tasks = [failed(new, 1), f.task(new, 2), f.task(svc, 3), f.task(svc, 4)]
    p = plan(new, tasks)
    assert p.service_update is not None
    assert p.service_update.state == US.UPDATE_STATE_PAUSED
    assert replaced(p) == []


def test_failure_action_rollback_starts_a_rollback() -> None:
    svc = f.service(2)
    new = updated(svc, failure_action="rollback")
    sick = failed(new, 1)
    p = plan(new, [sick, f.task(svc, 2)])
    assert p.service_update == UpdateDecision(
        US.UPDATE_STATE_ROLLBACK_STARTED,
        f"update rolled back due to failure or early termination of task {sick.id}",
        rollback=True,
    )


def test_failure_action_rollback_without_a_previous_spec_pauses() -> None:
    svc = f.service(2)
    new = updated(svc, failure_action="rollback")
    new.ClearField("previous_spec")
    p = plan(new, [failed(new, 1), f.task(svc, 2)])
    assert p.service_update is not None
    assert p.service_update.state == US.UPDATE_STATE_PAUSED


def test_an_unhealthy_new_task_counts_as_a_failure() -> None:
    """The agent reports a task whose health check failed as FAILED ("unhealthy"):
    while it is monitored, the update counts it like any other failure."""
    svc = f.service(2)
    new = updated(svc, monitor=30)
    sick = failed(new, 1)
    sick.status.err = "task: unhealthy container"
    p = plan(new, [sick, f.task(svc, 2)])
    assert p.service_update is not None
    assert p.service_update.state == US.UPDATE_STATE_PAUSED
    assert p.service_update.message.endswith(sick.id)


# ---- rollback settings ------------------------------------------------------------------


def test_a_rollback_uses_the_rollback_parallelism_and_order() -> None:
    svc = f.rollout(f.service(4), parallelism=1)
    f.rollout(svc, "rollback", parallelism=3, order="start-first")
    back, new = old_and_new(svc)
    tasks = [f.task(new, s) for s in range(1, 5)]

    p = plan(rolling(back, US.UPDATE_STATE_ROLLBACK_STARTED), tasks)
    assert replaced(p) == [1, 2, 3]
    assert not p.shutdowns  # start-first: the old tasks run until the new ones do
    assert [t.replaces for t in p.creates] == [t.id for t in tasks[:3]]

    # The same change as an update goes by the update config: 1 at a time, stop-first.
    p = plan(rolling(back, US.UPDATE_STATE_UPDATING), tasks)
    assert replaced(p) == [1]
    assert [s.task_id for s in p.shutdowns] == [tasks[0].id]
    assert not p.creates[0].replaces


def test_a_rollback_uses_the_rollback_delay() -> None:
    svc = f.rollout(f.service(2), parallelism=1, delay=0)
    f.rollout(svc, "rollback", parallelism=1, delay=5)
    back, new = old_and_new(svc)
    tasks = [f.task(back, 1, updated_at=NOW - 1), f.task(new, 2)]
    p = plan(rolling(back, US.UPDATE_STATE_ROLLBACK_STARTED), tasks)
    assert not p.creates
    assert p.wake_at == NOW + 4
    assert not plan(rolling(back, US.UPDATE_STATE_UPDATING), tasks).wake_at


@pytest.mark.parametrize(
    ("action", "decision"),
    [
        ("pause", US.UPDATE_STATE_ROLLBACK_PAUSED),
        ("continue", None),
        # A rollback does not roll back itself: it pauses.
        ("rollback", US.UPDATE_STATE_ROLLBACK_PAUSED),
    ],
)
def test_a_failing_rollback_follows_the_rollback_failure_action(
    action: str, decision: int | None
) -> None:
    svc = f.rollout(f.service(2), failure_action="continue")
    f.rollout(svc, "rollback", failure_action=action)
    back, new = old_and_new(svc)
    sick = failed(back, 1)
    p = plan(rolling(back, US.UPDATE_STATE_ROLLBACK_STARTED), [sick, f.task(new, 2)])
    if decision is None:
        assert p.service_update is None
    else:
        assert p.service_update == UpdateDecision(
            decision, f"rollback paused due to failure or early termination of task {sick.id}"
        )


def test_a_paused_rollback_replaces_nothing_more() -> None:
    svc = f.service(2)
    back, new = old_and_new(svc)
    tasks = [f.task(back, 1), f.task(new, 2)]
    assert not plan(rolling(back, US.UPDATE_STATE_ROLLBACK_PAUSED), tasks)


def test_a_rollback_completes_as_a_rollback() -> None:
    svc = f.service(2)
    back, _ = old_and_new(svc)
    tasks = [f.task(back, 1), f.task(back, 2)]
    p = plan(rolling(back, US.UPDATE_STATE_ROLLBACK_STARTED), tasks)
    assert p.service_update == UpdateDecision(
        US.UPDATE_STATE_ROLLBACK_COMPLETED, "rollback completed"
    )


# ---- global services --------------------------------------------------------------------

FOUR = f.nodes(*(f.node(f"n{i}") for i in range(1, 5)))


def on_nodes(
    svc: objects_pb2.Service, nodes: list[str], **kw: Unpack[f.TaskArgs]
) -> list[objects_pb2.Task]:
    tasks = []
    for n in nodes:
        args = kw.copy()
        args["node"] = n
        tasks.append(f.task(svc, 0, **args))
    return tasks


def test_a_global_spec_change_replaces_parallelism_nodes_at_a_time() -> None:
    svc = f.global_service()
    new = updated(svc, parallelism=2)
    tasks = on_nodes(svc, ["n1", "n2", "n3", "n4"])
    p = plan_global(new, tasks, FOUR, NOW)
    assert [t.node_id for t in p.creates] == ["n1", "n2"]
    assert all(t.slot == 0 and t.spec_version == new.spec_version for t in p.creates)
    assert all(t.annotations.name == f"web.{t.node_id}" for t in p.creates)
    assert [s.task_id for s in p.shutdowns] == [tasks[0].id, tasks[1].id]
    assert all(s.desired == states.SHUTDOWN for s in p.shutdowns)
    assert p.service_update is None


def test_a_global_service_that_is_not_rolling_keeps_its_tasks() -> None:
    svc = f.global_service()
    assert not plan_global(svc, on_nodes(svc, ["n1", "n2", "n3", "n4"]), FOUR, NOW)


def test_a_global_start_first_replacement_runs_beside_the_old_task() -> None:
    svc = f.global_service()
    new = updated(svc, parallelism=1, order="start-first")
    tasks = on_nodes(svc, ["n1", "n2"])
    table = f.nodes(f.node("n1"), f.node("n2"))
    (first,) = plan_global(new, tasks, table, NOW).creates
    assert first.replaces == tasks[0].id
    assert first.node_id == "n1"
    first.meta.created_at.CopyFrom(f.timestamp(NOW))
    first.status.state = states.STARTING
    # Both stay on n1 while the new one starts; nothing else moves.
    assert not plan_global(new, [*tasks, first], table, NOW + 1)
    first.status.state = states.RUNNING
    p = plan_global(new, [*tasks, first], table, NOW + 2)
    assert [s.task_id for s in p.shutdowns] == [tasks[0].id]
    assert [(t.node_id, t.replaces) for t in p.creates] == [("n2", tasks[1].id)]


def converge_global(
    svc: objects_pb2.Service,
    nodes: dict[str, objects_pb2.Node],
    tasks: dict[str, objects_pb2.Task],
    report: Callable[[objects_pb2.Task], int] = lambda t: states.RUNNING,
) -> tuple[objects_pb2.Service, list[int]]:
    """Plan, commit and let every new task reach `report(task)` until nothing changes;
    the service at the end and the update states it went through."""
    seen: list[int] = []
    now = NOW
    for _ in range(30):
        now += 1
        p = plan_global(svc, list(tasks.values()), nodes, now)
        if not p:
            break
        for s in p.shutdowns:
            done = _shut_down(s)(f.copy(tasks[s.task_id]))
            if done is not None:
                done.status.state = states.SHUTDOWN
                tasks[s.task_id] = done
        for t in p.creates:
            t.meta.created_at.CopyFrom(f.timestamp(now))
            t.meta.updated_at.CopyFrom(f.timestamp(now))
            t.status.state = report(t)  # type: ignore[assignment]
            tasks[t.id] = t
        if p.service_update is not None:
            after = _update_status(p.service_update, svc.spec_version)(svc)
            assert after is not None
            svc = after
            seen.append(svc.update_status.state)
    return svc, seen


def test_a_global_update_runs_to_completion() -> None:
    svc = f.global_service()
    new = updated(svc, parallelism=1)
    tasks = {t.id: t for t in on_nodes(svc, ["n1", "n2", "n3", "n4"])}
    done, seen = converge_global(new, FOUR, tasks)
    assert seen == [US.UPDATE_STATE_COMPLETED]
    assert done.update_status.message == "update completed"
    live = [t for t in tasks.values() if t.desired_state == states.RUNNING]
    assert sorted(t.node_id for t in live) == ["n1", "n2", "n3", "n4"]
    assert all(t.spec.container.image == "nginx:v2" for t in live)


def test_a_failing_global_update_rolls_back_by_itself() -> None:
    svc = f.rollout(f.global_service(condition="none"), "rollback", parallelism=0)
    new = updated(svc, parallelism=1, failure_action="rollback")
    tasks = {t.id: t for t in on_nodes(svc, ["n1", "n2", "n3", "n4"])}
    done, seen = converge_global(
        new,
        FOUR,
        tasks,
        lambda t: states.FAILED if t.spec.container.image == "nginx:v2" else states.RUNNING,
    )
    assert seen == [US.UPDATE_STATE_ROLLBACK_STARTED, US.UPDATE_STATE_ROLLBACK_COMPLETED]
    assert done.spec.task.container.image == "nginx:1.25"
    live = [t for t in tasks.values() if t.desired_state == states.RUNNING]
    assert sorted(t.node_id for t in live) == ["n1", "n2", "n3", "n4"]
    assert all(t.spec.container.image == "nginx:1.25" for t in live)
    # Only the first node got the failing spec: the rollback came before the second.
    v2 = [t for t in tasks.values() if t.spec.container.image == "nginx:v2"]
    assert [t.node_id for t in v2] == ["n1"]


def test_a_global_update_leaves_paused_and_ineligible_nodes_alone() -> None:
    """A paused node keeps its task as it is (as in SwarmKit); a down node, one that
    does not match the constraints or a drained one has no task and holds nothing up."""
    svc = f.global_service()
    svc.spec.task.placement.constraints.append("node.labels.web!=no")
    new = updated(svc, parallelism=1)
    table = f.nodes(
        f.node("n1"),
        f.node("n2", availability="pause"),
        f.node("n3", state="down"),
        f.node("n4", labels={"web": "no"}),
        f.node("n5", availability="drain"),
    )
    tasks = {t.id: t for t in on_nodes(svc, ["n1", "n2"])}
    _, seen = converge_global(new, table, tasks)
    assert seen == [US.UPDATE_STATE_COMPLETED]
    live = {t.node_id: t for t in tasks.values() if t.desired_state == states.RUNNING}
    assert sorted(live) == ["n1", "n2"]
    assert live["n1"].spec.container.image == "nginx:v2"
    assert live["n2"].spec.container.image == "nginx:1.25"


def test_a_global_job_is_not_rolled_out() -> None:
    """A global job's change is a new run (its iteration), not a rollout."""
    svc = f.service()
    svc.spec.global_job.SetInParent()
    svc.job_status.job_iteration = 1
    new = rolling(f.changed(svc, image="nginx:v2"))
    tasks = on_nodes(svc, ["n1"], state=states.RUNNING)
    for t in tasks:
        t.desired_state = states.COMPLETE
        t.job_iteration = 1
    p = plan_global(new, tasks, f.nodes(f.node("n1")), NOW)
    assert not p.creates
    assert not p.shutdowns
    assert p.service_update is None
