"""The rollout planner (updater.py) through the planners of replicated and global
services.

A test builds the tasks a service has, plans once (or loops plan, commit, report the way
the cluster would) and checks what the plan replaces and how the update status moves.
"""

from __future__ import annotations

from collections.abc import Callable

from common import states
from common.api import objects_pb2
from manager.orchestrator.global_mode import plan_global
from manager.orchestrator.orchestrator import _shut_down, _update_status
from manager.orchestrator.plan import Plan
from manager.orchestrator.replicated import plan_service
from tests.unit import factories as f
from tests.unit.factories import NOW

US = objects_pb2.UpdateStatus


def rolling(svc: objects_pb2.Service, state: int = US.UPDATE_STATE_UPDATING) -> objects_pb2.Service:
    """`svc` with a rollout under way, as the control API leaves it."""
    svc.update_status.state = state  # type: ignore[assignment]
    return svc


def updated(svc: objects_pb2.Service, **cfg: object) -> objects_pb2.Service:
    """`svc` after `service update --image v2` with update config `cfg`: rolling."""
    return rolling(f.changed(f.rollout(svc, **cfg), image="nginx:v2"))  # type: ignore[arg-type]


def plan(svc: objects_pb2.Service, tasks: list[objects_pb2.Task], now: float = NOW) -> Plan:
    return plan_service(svc, tasks, f.all_ok, now)


def old_and_new(svc: objects_pb2.Service) -> tuple[objects_pb2.Service, objects_pb2.Service]:
    """The spec a rollback returns to (its own update config) and the one it leaves."""
    new = f.changed(svc, image="nginx:v2")
    back = f.changed(new, image=svc.spec.task.container.image)
    return back, new


def failed(svc: objects_pb2.Service, slot: int, **kw: object) -> objects_pb2.Task:
    """A task of `svc` that just failed (the restart policy has not decided yet)."""
    return f.task(svc, slot, state=states.FAILED, created_at=NOW - 5, **kw)  # type: ignore[arg-type]


def replaced(p: Plan) -> list[int]:
    return sorted(t.slot for t in p.creates)


# ---- global services --------------------------------------------------------------------

FOUR = f.nodes(*(f.node(f"n{i}") for i in range(1, 5)))


def on_nodes(svc: objects_pb2.Service, nodes: list[str], **kw: object) -> list[objects_pb2.Task]:
    return [f.task(svc, 0, node=n, **kw) for n in nodes]  # type: ignore[arg-type]


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
