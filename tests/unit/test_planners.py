"""The orchestrator's pure planners beyond plan_service's basics (test_orchestrator.py):
global services and global jobs (global_mode.py), replicated jobs (jobs.py), and in
replicated.py the rebalancing moves and the balanced choice of scale-down victims."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Unpack

from common import states
from common.api import objects_pb2
from manager.domain.placement import matches_placement
from manager.orchestrator.global_mode import plan_global
from manager.orchestrator.jobs import plan_replicated_job
from manager.orchestrator.plan import Plan
from manager.orchestrator.replicated import plan_service
from tests.unit import factories as f
from tests.unit.factories import NOW


def shutdowns(plan: Plan) -> dict[str, int]:
    return {s.task_id: s.desired for s in plan.shutdowns}


# ---- global services ------------------------------------------------------------------------


def global_service(*constraints: str, job: bool = False) -> objects_pb2.Service:
    svc = f.service(service_id="g1", name="agentd", delay=0.0)
    svc.spec.ClearField("replicated")
    getattr(svc.spec, "global_job" if job else "global").SetInParent()
    svc.spec.task.placement.constraints.extend(constraints)
    if job:
        svc.job_status.job_iteration = 1
    return svc


def on_node(svc: objects_pb2.Service, node_id: str, **kw: Unpack[f.TaskArgs]) -> objects_pb2.Task:
    args = kw.copy()
    args["node"] = node_id
    t = f.task(svc, 0, **args)
    t.job_iteration = svc.job_status.job_iteration
    return t


def created_on(plan: Plan) -> list[str]:
    return sorted(t.node_id for t in plan.creates)


NODES = f.nodes(
    f.node("ready"),
    f.node("paused", availability="pause"),
    f.node("drained", availability="drain"),
    f.node("down", state="down"),
    f.node("labelled", labels={"run": "yes"}),
)


def test_global_service_gets_one_task_per_ready_active_node() -> None:
    plan = plan_global(global_service(), [], NODES, NOW)
    assert created_on(plan) == ["labelled", "ready"]
    for t in plan.creates:
        assert t.slot == 0
        assert t.desired_state == states.RUNNING
        assert t.status.state == states.PENDING
        assert t.annotations.name == f"agentd.{t.node_id}"
    assert not plan.shutdowns


def test_global_service_with_a_constraint_runs_only_on_matching_nodes() -> None:
    plan = plan_global(global_service("node.labels.run==yes"), [], NODES, NOW)
    assert created_on(plan) == ["labelled"]


def test_global_service_with_platforms_runs_only_on_those_nodes() -> None:
    svc = global_service()
    svc.spec.task.placement.platforms.add(os="linux", architecture="amd64")
    nodes = f.nodes(f.node("intel"), f.node("arm"))
    nodes["intel"].description.platform.os = "linux"
    nodes["intel"].description.platform.architecture = "x86_64"
    nodes["arm"].description.platform.os = "linux"
    nodes["arm"].description.platform.architecture = "aarch64"
    assert matches_placement(svc.spec.task.placement, nodes["intel"])
    assert not matches_placement(svc.spec.task.placement, nodes["arm"])
    assert created_on(plan_global(svc, [], nodes, NOW)) == ["intel"]


def test_a_node_with_its_task_needs_nothing() -> None:
    svc = global_service()
    tasks = [on_node(svc, "ready"), on_node(svc, "labelled", state=states.ASSIGNED)]
    assert not plan_global(svc, tasks, NODES, NOW)


def test_a_new_eligible_node_gets_a_task() -> None:
    svc = global_service()
    tasks = [on_node(svc, "ready"), on_node(svc, "labelled")]
    nodes = {**NODES, "new": f.node("new")}
    assert created_on(plan_global(svc, tasks, nodes, NOW)) == ["new"]


def test_drained_down_and_gone_nodes_lose_their_tasks_paused_ones_keep_them() -> None:
    svc = global_service()
    tasks = {n: on_node(svc, n) for n in ("ready", "paused", "drained", "down", "gone", "labelled")}
    plan = plan_global(svc, list(tasks.values()), NODES, NOW)
    # A down node's task is shut down, not removed: it stays in the history with why,
    # and lives again if its node comes back with it running (dispatcher adoption).
    assert shutdowns(plan) == {
        tasks["drained"].id: states.REMOVE,
        tasks["down"].id: states.SHUTDOWN,
        tasks["gone"].id: states.REMOVE,
    }
    assert {s.task_id: s.reason for s in plan.shutdowns}[tasks["down"].id] == "node down"
    assert not plan.creates  # none of them gets a new task


def test_a_node_no_longer_matching_loses_its_task() -> None:
    svc = global_service("node.labels.run==yes")
    mine = on_node(svc, "labelled")
    nodes: Mapping[str, objects_pb2.Node] = {**NODES, "labelled": f.node("labelled")}
    plan = plan_global(svc, [mine], nodes, NOW)
    # Shut down and kept in the history, saying why.
    assert shutdowns(plan) == {mine.id: states.SHUTDOWN}
    assert plan.shutdowns[0].reason == "constraint no longer met"
    assert not plan.creates


def test_two_tasks_on_one_node_keep_the_most_advanced() -> None:
    svc = global_service()
    older = on_node(svc, "ready", created_at=NOW - 50)
    newer = on_node(svc, "ready", state=states.ASSIGNED, created_at=NOW - 10)
    plan = plan_global(svc, [older, newer, on_node(svc, "labelled")], NODES, NOW)
    assert shutdowns(plan) == {newer.id: states.REMOVE}


def test_a_failed_global_task_is_restarted_on_its_node_after_the_delay() -> None:
    svc = global_service()
    svc.spec.task.restart.delay.FromSeconds(5)
    failed = on_node(svc, "ready", state=states.FAILED)
    plan = plan_global(svc, [failed, on_node(svc, "labelled")], NODES, NOW)
    assert [(s.task_id, s.desired, s.restart_at) for s in plan.shutdowns] == [
        (failed.id, states.SHUTDOWN, NOW + 5)
    ]
    assert not plan.creates
    assert plan.wake_at == NOW + 5
    # Once shut down with its restart time, the replacement comes at that time.
    failed.desired_state = states.SHUTDOWN
    failed.restart_at.CopyFrom(f.timestamp(NOW + 5))
    later = plan_global(svc, [failed, on_node(svc, "labelled")], NODES, NOW + 5)
    assert created_on(later) == ["ready"]
    assert later.creates[0].restart_attempt == 1


def test_global_job_runs_once_per_node_to_completion() -> None:
    svc = global_service(job=True)
    plan = plan_global(svc, [], NODES, NOW)
    assert created_on(plan) == ["labelled", "ready"]
    assert all(t.desired_state == states.COMPLETE for t in plan.creates)
    assert all(t.job_iteration == 1 for t in plan.creates)
    done = [
        on_node(svc, "ready", state=states.COMPLETE, desired=states.COMPLETE),
        on_node(svc, "labelled", state=states.COMPLETE, desired=states.COMPLETE),
    ]
    assert not plan_global(svc, done, NODES, NOW)  # done is done


def test_a_new_run_of_a_global_job_replaces_the_last_ones_tasks() -> None:
    svc = global_service(job=True)
    still_running = on_node(svc, "ready", desired=states.COMPLETE)
    completed = on_node(svc, "labelled", state=states.COMPLETE, desired=states.COMPLETE)
    svc.job_status.job_iteration = 2
    plan = plan_global(svc, [still_running, completed], NODES, NOW)
    assert shutdowns(plan) == {still_running.id: states.SHUTDOWN}
    assert created_on(plan) == ["labelled", "ready"]
    assert all(t.job_iteration == 2 for t in plan.creates)


# ---- replicated jobs ------------------------------------------------------------------------


def job(total: int, concurrent: int, iteration: int = 1) -> objects_pb2.Service:
    svc = f.service(service_id="j1", name="batch", delay=0.0, condition="on-failure")
    svc.spec.ClearField("replicated")
    svc.spec.replicated_job.total_completions = total
    svc.spec.replicated_job.max_concurrent = concurrent
    svc.job_status.job_iteration = iteration
    return svc


def job_task(
    svc: objects_pb2.Service, slot: int, state: f.State = states.RUNNING
) -> objects_pb2.Task:
    t = f.task(svc, slot, state=state, desired=states.COMPLETE)
    t.job_iteration = svc.job_status.job_iteration
    return t


def ok(_node_id: str) -> bool:
    return True


def test_replicated_job_starts_max_concurrent_slots() -> None:
    svc = job(5, 2)
    plan = plan_replicated_job(svc, [], ok, NOW)
    assert [t.slot for t in plan.creates] == [1, 2]
    assert all(t.desired_state == states.COMPLETE and t.job_iteration == 1 for t in plan.creates)


def test_max_concurrent_zero_runs_every_slot_at_once() -> None:
    assert len(plan_replicated_job(job(4, 0), [], ok, NOW).creates) == 4


def test_a_completed_slot_frees_room_for_the_next() -> None:
    svc = job(5, 2)
    running = [job_task(svc, 1, states.COMPLETE), job_task(svc, 2)]
    assert not plan_replicated_job(svc, [job_task(svc, 1), job_task(svc, 2)], ok, NOW)
    plan = plan_replicated_job(svc, running, ok, NOW)
    assert [t.slot for t in plan.creates] == [3]


def test_a_finished_job_needs_nothing() -> None:
    svc = job(3, 2)
    done = [job_task(svc, s, states.COMPLETE) for s in (1, 2, 3)]
    assert not plan_replicated_job(svc, done, ok, NOW)


def test_a_failed_job_task_is_restarted_in_its_slot() -> None:
    svc = job(2, 2)
    failed = job_task(svc, 1, states.FAILED)
    plan = plan_replicated_job(svc, [failed, job_task(svc, 2)], ok, NOW)
    assert shutdowns(plan) == {failed.id: states.SHUTDOWN}
    assert [t.slot for t in plan.creates] == [1]
    assert plan.creates[0].restart_attempt == 1


def test_fewer_completions_remove_the_slots_above() -> None:
    svc = job(2, 2)
    tasks = [job_task(svc, s) for s in (1, 2, 3)]
    plan = plan_replicated_job(svc, tasks, ok, NOW)
    assert shutdowns(plan) == {tasks[2].id: states.REMOVE}


def test_a_new_run_of_a_replicated_job_replaces_the_last_ones_tasks() -> None:
    old = job(2, 2, iteration=1)
    tasks = [job_task(old, 1, states.COMPLETE), job_task(old, 2)]
    svc = job(2, 2, iteration=2)
    plan = plan_replicated_job(svc, tasks, ok, NOW)
    assert shutdowns(plan) == {tasks[1].id: states.SHUTDOWN}
    assert [(t.slot, t.job_iteration) for t in plan.creates] == [(1, 2), (2, 2)]


# ---- rebalancing ------------------------------------------------------------------------------


def rebalancing(replicas: int) -> objects_pb2.Service:
    svc = f.service(replicas)
    svc.rebalance_requested = 1
    return svc


def test_rebalance_moves_one_task_off_the_busiest_node_start_first() -> None:
    svc = rebalancing(4)
    tasks = [f.task(svc, s, node="n1") for s in (1, 2, 3, 4)]
    plan = plan_service(svc, tasks, ok, NOW, rebalance_target={"n1": 2, "n2": 2})
    [move] = plan.creates
    assert move.replaces == tasks[3].id  # the highest slot of the busiest node
    assert move.slot == 4
    assert move.status.state == states.PENDING
    assert not plan.shutdowns  # start-first: the old one stays until the new one runs
    assert not plan.rebalance_done


def test_rebalance_takes_from_the_node_most_over_its_share() -> None:
    svc = rebalancing(6)
    tasks = [f.task(svc, s, node="n1" if s <= 2 else "n2") for s in range(1, 7)]
    plan = plan_service(svc, tasks, ok, NOW, rebalance_target={"n1": 2, "n2": 2, "n3": 2})
    [move] = plan.creates
    assert move.replaces in {t.id for t in tasks if t.node_id == "n2"}


def test_a_move_in_flight_waits_and_a_finished_one_shuts_the_old_task_down() -> None:
    svc = rebalancing(2)
    old = f.task(svc, 2, node="n1")
    new = f.task(svc, 2, node="n2", state=states.STARTING, created_at=NOW - 1)
    new.replaces, new.rebalance_round = old.id, 1
    tasks = [f.task(svc, 1, node="n1"), old, new]
    target = {"n1": 1, "n2": 1}
    assert not plan_service(svc, tasks, ok, NOW, rebalance_target=target)
    new.status.state = states.RUNNING
    plan = plan_service(svc, tasks, ok, NOW, rebalance_target=target)
    assert shutdowns(plan) == {old.id: states.SHUTDOWN}
    assert not plan.creates


def test_rebalance_is_done_when_the_tasks_are_where_the_scheduler_would_put_them() -> None:
    svc = rebalancing(2)
    tasks = [f.task(svc, 1, node="n1"), f.task(svc, 2, node="n2")]
    plan = plan_service(svc, tasks, ok, NOW, rebalance_target={"n1": 1, "n2": 1})
    assert plan.rebalance_done
    assert not plan.creates


def test_rebalance_stops_when_a_move_landed_on_a_node_over_its_share() -> None:
    svc = rebalancing(3)
    old = f.task(svc, 3, node="n1", desired=states.SHUTDOWN, state=states.SHUTDOWN)
    moved = f.task(svc, 3, node="n1", created_at=NOW - 1)
    moved.replaces, moved.rebalance_round = old.id, 1
    tasks = [f.task(svc, 1, node="n1"), f.task(svc, 2, node="n1"), old, moved]
    plan = plan_service(svc, tasks, ok, NOW, rebalance_target={"n1": 1, "n2": 2})
    assert plan.rebalance_done
    assert not plan.creates


def test_rebalance_stops_when_a_move_failed() -> None:
    svc = rebalancing(2)
    old = f.task(svc, 2, node="n1")
    failed = f.task(svc, 2, node="n2", state=states.FAILED, created_at=NOW - 1)
    failed.replaces, failed.rebalance_round = old.id, 1
    tasks = [f.task(svc, 1, node="n1"), old, failed]
    plan = plan_service(svc, tasks, ok, NOW, rebalance_target={"n1": 1, "n2": 1})
    assert plan.rebalance_done
    assert not [t for t in plan.creates if t.replaces]


def test_rebalance_without_a_target_or_not_requested() -> None:
    svc = rebalancing(2)
    tasks = [f.task(svc, s, node="n1") for s in (1, 2)]
    assert plan_service(svc, tasks, ok, NOW).rebalance_done  # nothing to compare with
    svc.rebalance_done = 1  # answered already
    assert not plan_service(svc, tasks, ok, NOW, rebalance_target={"n1": 1, "n2": 1})


def test_rebalance_waits_for_a_rolling_update() -> None:
    svc = rebalancing(2)
    tasks = [f.task(svc, s, node="n1") for s in (1, 2)]
    updated = f.changed(svc, image="app:v2")
    plan = plan_service(updated, tasks, ok, NOW, rebalance_target={"n1": 1, "n2": 1})
    assert not [t for t in plan.creates if t.replaces]
    assert not plan.rebalance_done


# ---- scale-down that keeps spread groups balanced ---------------------------------------------


def zoned(zones: Mapping[str, str | None]) -> dict[str, objects_pb2.Node]:
    return f.nodes(*(f.node(n, labels={"zone": z} if z else {}) for n, z in zones.items()))


def groups_after(
    plan: Plan, tasks: list[objects_pb2.Task], nodes: Mapping[str, objects_pb2.Node]
) -> Counter[str]:
    gone = shutdowns(plan)
    return Counter(
        nodes[t.node_id].spec.annotations.labels.get("zone", "") for t in tasks if t.id not in gone
    )


def test_scale_down_removes_tasks_from_the_largest_groups() -> None:
    nodes = zoned({"a1": "a", "a2": "a", "b1": "b"})
    svc = f.service(6, spread="node.labels.zone")
    layout = ["a1", "a1", "a2", "a2", "b1", "b1"]
    tasks = [f.task(svc, s, node=n) for s, n in enumerate(layout, 1)]
    plan = plan_service(f.changed(svc, replicas=3), tasks, ok, NOW, nodes)
    assert all(d == states.REMOVE for d in shutdowns(plan).values())
    assert len(plan.shutdowns) == 3
    # Zone a loses two (one from each of its nodes), then the zones are even and the
    # node with the most tasks of the service loses one: b1.
    assert groups_after(plan, tasks, nodes) == Counter({"a": 2, "b": 1})
    survivors = [t for t in tasks if t.id not in shutdowns(plan)]
    assert Counter(t.node_id for t in survivors) == Counter({"a1": 1, "a2": 1, "b1": 1})


def test_scale_down_counts_nodes_without_the_label_as_their_own_group() -> None:
    nodes = zoned({"a1": "a", "x1": None, "x2": None})
    svc = f.service(4, spread="node.labels.zone")
    tasks = [
        f.task(svc, 1, node="a1"),
        f.task(svc, 2, node="x1"),
        f.task(svc, 3, node="x2"),
        f.task(svc, 4, node="x2"),
    ]
    plan = plan_service(f.changed(svc, replicas=2), tasks, ok, NOW, nodes)
    assert groups_after(plan, tasks, nodes) == Counter({"a": 1, "": 1})


def test_scale_down_survivors_are_renumbered_into_1_to_n() -> None:
    nodes = zoned({"a1": "a", "b1": "b"})
    svc = f.service(4, spread="node.labels.zone")
    tasks = [
        f.task(svc, 1, node="a1"),
        f.task(svc, 2, node="a1"),
        f.task(svc, 3, node="a1"),
        f.task(svc, 4, node="b1"),
    ]
    plan = plan_service(f.changed(svc, replicas=2), tasks, ok, NOW, nodes)
    gone = shutdowns(plan)
    assert groups_after(plan, tasks, nodes) == Counter({"a": 1, "b": 1})
    survivors = {t.id: t.slot for t in tasks if t.id not in gone}
    slots = {**survivors, **{r.task_id: r.slot for r in plan.renumbers}}
    assert sorted(slots.values()) == [1, 2]
    assert all(r.name == f"web.{r.slot}" for r in plan.renumbers)
    assert not plan.creates


def test_nested_spread_scale_down_balances_both_levels() -> None:
    nodes = f.nodes(
        f.node("a-r1", labels={"zone": "a", "rack": "1"}),
        f.node("a-r2", labels={"zone": "a", "rack": "2"}),
        f.node("b-r1", labels={"zone": "b", "rack": "1"}),
    )
    svc = f.service(6, spread="node.labels.zone")
    svc.spec.task.placement.preferences.add().spread.spread_descriptor = "node.labels.rack"
    layout = ["a-r1", "a-r1", "a-r1", "a-r2", "b-r1", "b-r1"]
    tasks = [f.task(svc, s, node=n) for s, n in enumerate(layout, 1)]
    plan = plan_service(f.changed(svc, replicas=4), tasks, ok, NOW, nodes)
    gone = shutdowns(plan)
    left = Counter(t.node_id for t in tasks if t.id not in gone)
    assert left == Counter({"a-r1": 1, "a-r2": 1, "b-r1": 2})


def test_without_spread_preferences_the_highest_slots_go() -> None:
    nodes = zoned({"a1": "a", "b1": "b"})
    svc = f.service(4)
    tasks = [f.task(svc, s, node="a1" if s <= 3 else "b1") for s in (1, 2, 3, 4)]
    plan = plan_service(f.changed(svc, replicas=2), tasks, ok, NOW, nodes)
    assert shutdowns(plan) == {tasks[2].id: states.REMOVE, tasks[3].id: states.REMOVE}
    assert not plan.renumbers
