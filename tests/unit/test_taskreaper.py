"""tasks_to_delete: removed tasks go once stopped; each slot keeps its newest N tasks."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import states
from common.api import objects_pb2
from manager.orchestrator.replicated import plan_service
from manager.orchestrator.taskreaper import (
    DEFAULT_HISTORY_LIMIT,
    TaskReaper,
    slot_key,
    tasks_to_delete,
)
from manager.store import Kind
from swarmctl.task import task_error, task_rows
from tests.fakes import FakeCache, RecordingCommitter, fake_store
from tests.unit import factories as f
from tests.unit.factories import NOW
from tests.unit.test_orchestrator import apply

NODES = f.nodes(
    f.node("n1"),
    f.node("down", state="down"),
    f.node("drained", availability="drain"),
    f.node("paused", availability="pause"),
)


def ids(tasks: list[objects_pb2.Task]) -> set[str]:
    return {t.id for t in tasks}


def history(
    svc: objects_pb2.Service, slot: int, ended: int, *, running: bool = True, start: float = 0
) -> list[objects_pb2.Task]:
    """`ended` shut-down tasks of a slot, oldest first, then (optionally) a running one."""
    out = [
        f.task(
            svc,
            slot,
            state=states.FAILED,
            desired=states.SHUTDOWN,
            created_at=NOW - 1000 + start + i,
        )
        for i in range(ended)
    ]
    if running:
        out.append(f.task(svc, slot, created_at=NOW - 1000 + start + ended))
    return out


def test_default_history_limit() -> None:
    assert DEFAULT_HISTORY_LIMIT == 5


def test_nothing_to_delete() -> None:
    svc = f.service()
    assert tasks_to_delete([], NODES, 5) == []
    assert tasks_to_delete(history(svc, 1, 4), NODES, 5) == []


@pytest.mark.parametrize(
    ("state", "node", "deleted"),
    [
        (states.SHUTDOWN, "n1", True),  # stopped
        (states.FAILED, "n1", True),
        (states.COMPLETE, "n1", True),
        (states.PENDING, "", True),  # never assigned
        (states.RUNNING, "down", True),  # its node is down: the agent cleans up later
        (states.RUNNING, "gone", True),  # its node is gone
        (states.RUNNING, "drained", True),
        (states.RUNNING, "n1", False),  # still running on a live node: wait for the agent
        (states.ASSIGNED, "n1", False),
        (states.RUNNING, "paused", False),
    ],
)
def test_removed_task(state: f.State, node: str, deleted: bool) -> None:
    t = f.task(f.service(), 1, state=state, desired=states.REMOVE, node=node)
    assert ids(tasks_to_delete([t], NODES, 5)) == ({t.id} if deleted else set())


def test_slot_keeps_its_newest_tasks() -> None:
    svc = f.service()
    tasks = history(svc, 1, 7)  # 7 ended + 1 running: 8 in all, keep 5
    doomed = tasks_to_delete(tasks, NODES, 5)
    assert ids(doomed) == ids(tasks[:3])


def test_order_is_by_creation_time_not_by_list_order() -> None:
    svc = f.service()
    tasks = history(svc, 1, 4)
    shuffled = [tasks[2], tasks[4], tasks[0], tasks[3], tasks[1]]
    assert ids(tasks_to_delete(shuffled, NODES, 3)) == ids(tasks[:2])


def test_slots_are_counted_apart() -> None:
    svc = f.service(2)
    one = history(svc, 1, 3)
    two = history(svc, 2, 3, start=100)
    assert tasks_to_delete(one + two, NODES, 4) == []
    assert ids(tasks_to_delete(one + two, NODES, 2)) == ids(one[:2] + two[:2])


def test_node_bound_tasks_are_grouped_by_node() -> None:
    svc = f.service()
    on_a = [
        f.task(svc, 0, node="n1", state=states.SHUTDOWN, desired=states.SHUTDOWN, created_at=i)
        for i in range(3)
    ]
    on_b = [
        f.task(svc, 0, node="paused", state=states.SHUTDOWN, desired=states.SHUTDOWN, created_at=i)
        for i in range(10, 12)
    ]
    assert ids(tasks_to_delete(on_a + on_b, NODES, 2)) == {on_a[0].id}


def test_tasks_the_service_counts_on_are_never_history() -> None:
    svc = f.service()
    # Old but still wanted and not ended: kept, however old.
    old_running = f.task(svc, 1, created_at=NOW - 5000)
    old_pending = f.task(svc, 1, state=states.PENDING, created_at=NOW - 4500)
    ended = history(svc, 1, 5, running=False)
    doomed = tasks_to_delete([old_running, old_pending, *ended], NODES, 1)
    # The newest task (an ended one) is kept; the other ended ones go.
    assert ids(doomed) == ids(ended[:4])


def test_ended_task_beyond_the_limit_goes_even_if_still_wanted() -> None:
    """An ended task is history whatever its desired state (a job's completed task has
    desired state COMPLETE; a failed one the orchestrator has not seen yet, RUNNING)."""
    svc = f.service()
    old_failed = f.task(svc, 1, state=states.FAILED, created_at=NOW - 4000)
    newer = history(svc, 1, 2)
    assert ids(tasks_to_delete([old_failed, *newer], NODES, 3)) == {old_failed.id}


def test_shut_down_task_still_running_on_a_live_node_is_kept() -> None:
    svc = f.service()
    stopping = f.task(svc, 1, desired=states.SHUTDOWN, created_at=NOW - 5000)  # agent busy
    lost = f.task(svc, 1, desired=states.SHUTDOWN, node="down", created_at=NOW - 4000)
    tasks = [stopping, lost, *history(svc, 1, 0)]
    assert ids(tasks_to_delete(tasks, NODES, 1)) == {lost.id}


@pytest.mark.parametrize("limit", [0, 1, -3])
def test_limit_below_one_keeps_one(limit: int) -> None:
    svc = f.service()
    tasks = history(svc, 1, 4, running=False)
    assert ids(tasks_to_delete(tasks, NODES, limit)) == ids(tasks[:3])


def test_removed_task_still_running_is_part_of_its_slot() -> None:
    svc = f.service()
    removed = f.task(svc, 1, state=states.RUNNING, desired=states.REMOVE, created_at=NOW)
    ended = history(svc, 1, 2, running=False)
    # Kept until its agent stops it, and counted among the slot's newest tasks meanwhile.
    assert ids(tasks_to_delete([*ended, removed], NODES, 2)) == {ended[0].id}
    removed.status.state = states.SHUTDOWN
    assert ids(tasks_to_delete([*ended, removed], NODES, 2)) == {removed.id}


def test_each_task_listed_once() -> None:
    svc = f.service()
    tasks = [
        f.task(svc, 1, state=states.FAILED, desired=states.REMOVE, created_at=i) for i in range(8)
    ]
    doomed = tasks_to_delete(tasks, NODES, 2)
    assert len(doomed) == len(ids(doomed)) == 8


def test_ended_tasks_of_slots_above_the_replica_count_go() -> None:
    svc = f.service(3)
    slot3 = history(svc, 3, 2, running=False)
    slot2 = history(svc, 2, 2, start=100)
    still_running = f.task(svc, 4, desired=states.SHUTDOWN, created_at=NOW)
    tasks = [*slot2, *slot3, still_running]
    assert tasks_to_delete(tasks, NODES, 5) == []
    # As TaskReaper passes it for a replicated service scaled down to 2.
    assert ids(tasks_to_delete(tasks, NODES, 5, max_slot=2)) == ids(slot3)
    still_running.status.state = states.SHUTDOWN
    assert still_running.id in ids(tasks_to_delete(tasks, NODES, 5, max_slot=2))


# ---- the TaskReaper reconciler: slot by slot --------------------------------------------


def reaper_on(
    *objs: objects_pb2.Service | objects_pb2.Task,
) -> tuple[TaskReaper, FakeCache, RecordingCommitter]:
    """A TaskReaper on a FakeCache holding NODES and `objs`."""
    cache, store = fake_store(*NODES.values(), *objs)
    return TaskReaper(cache, store), cache, store


async def test_reaper_trims_only_the_slots_that_changed() -> None:
    reaper, cache, store = reaper_on()
    svc = f.service(3)
    cache.put(svc)
    full = history(svc, 1, 6)  # six ended tasks and a running one: two too many
    for t in full + history(svc, 2, 1) + history(svc, 3, 6, start=100):
        cache.put(t)
    await reaper.reconcile(set(reaper.all_keys()))
    assert len(store.deleted) == 4  # two of slot 1, two of slot 3
    assert ids(full[:2]) <= set(store.deleted)
    # A new failure in slot 2 makes only slot 2 dirty, and slot 2 has room.
    reaper._dirty.clear()
    failed = f.copy(cache.tasks[history_ids(cache, svc, 2)[-1]])
    failed.status.state = states.FAILED
    cache.put(failed)
    assert reaper._dirty == {slot_key(failed)}


def test_a_new_task_alone_in_its_slot_leaves_the_reaper_idle() -> None:
    reaper, cache, _ = reaper_on()
    svc = f.service(3)
    cache.put(svc)
    reaper._dirty.clear()
    fresh = f.task(svc, 1, state=states.PENDING)
    cache.put(fresh)
    assert reaper._dirty == set()  # nothing in slot 1 to reap
    # Created already ended, or unwanted, or beside another task: its slot is looked at.
    for made in (
        f.task(svc, 2, state=states.FAILED, desired=states.SHUTDOWN),
        f.task(svc, 3, state=states.PENDING, desired=states.REMOVE),
        f.task(svc, 1, state=states.PENDING),
    ):
        cache.put(made)
        assert reaper._dirty == {slot_key(made)}
        reaper._dirty.clear()


def history_ids(cache: FakeCache, svc: objects_pb2.Service, slot: int) -> list[str]:
    tasks = [t for t in cache.tasks.values() if t.service_id == svc.id and t.slot == slot]
    return [t.id for t in sorted(tasks, key=lambda t: t.meta.created_at.ToNanoseconds())]


async def test_reaper_deletes_ended_tasks_above_a_lower_replica_count() -> None:
    reaper, cache, store = reaper_on()
    svc = f.service(3)
    cache.put(svc)
    ended = f.task(svc, 3, state=states.FAILED, desired=states.SHUTDOWN)
    cache.put(ended)
    cache.put(f.task(svc, 3))
    await reaper.reconcile(set(reaper.all_keys()))
    assert store.deleted == []
    reaper._dirty.clear()
    cache.put(f.changed(svc, replicas=2))  # the orchestrator shuts slot 3's live task down
    assert reaper._dirty == {slot_key(ended)}
    await reaper.reconcile(set(reaper._dirty))
    assert store.deleted == [ended.id]


# Tasks as (service, slot or 0 for a global task, node); the steps put or drop them.
_TASK_AT = st.tuples(
    st.sampled_from(["svcA", "svcB"]), st.integers(0, 3), st.sampled_from(["n1", "n2"])
)
_STEPS = st.lists(
    st.tuples(st.sampled_from(["put", "drop"]), st.integers(0, 5), _TASK_AT), max_size=60
)


@given(_STEPS)
def test_the_reapers_index_holds_every_cached_task_in_its_slot(
    steps: list[tuple[str, int, tuple[str, int, str]]],
) -> None:
    reaper, cache, _ = reaper_on()
    for action, n, (service_id, slot, node) in steps:
        task_id = f"t{n}"
        if action == "drop":
            if task_id in cache.tasks:
                cache.delete(Kind.TASK, task_id)
            continue
        # A new task, or one moved to another slot (a renumbered replica).
        cache.put(objects_pb2.Task(id=task_id, service_id=service_id, slot=slot, node_id=node))
    expected: dict[str, set[str]] = {}
    for t in cache.tasks.values():
        expected.setdefault(slot_key(t), set()).add(t.id)
    indexed = {
        key: set(reaper.ids_in(key))
        for service_id in reaper.slots
        for key in (f"{service_id}/{slot}" for slot in reaper.slots[service_id])
    }
    assert indexed == expected
    assert all(reaper.slots.values())  # no empty service left behind
    assert sorted(reaper.all_keys()) == sorted(expected)


# ---- why a task was replaced stays in its slot's history -------------------------------


def test_task_of_a_down_node_is_shut_down_saying_why_replaced_and_kept() -> None:
    svc = f.service(1, delay=30, max_attempts=1)
    nodes = f.nodes(f.node("n1"), f.node("down", state="down"))
    lost = f.task(svc, 1, node="down")
    tasks = {lost.id: lost}
    plan = plan_service(svc, [lost], f.node_ok(nodes), NOW, nodes)
    assert [(s.task_id, s.desired, s.reason) for s in plan.shutdowns] == [
        (lost.id, states.SHUTDOWN, "node down")
    ]
    # Replaced at once, not counted as a restart (max_attempts 1 is not used up).
    assert [(t.slot, t.restart_attempt) for t in plan.creates] == [(1, 0)]
    apply(tasks, plan, NOW)
    assert tasks[lost.id].shutdown_reason == "node down"
    assert tasks[lost.id].desired_state == states.SHUTDOWN
    # History, not removed: the reaper keeps it (it used to delete it at once).
    assert not tasks_to_delete(list(tasks.values()), nodes, DEFAULT_HISTORY_LIMIT)
    # And the slot is not refilled again while the replacement waits.
    assert not plan_service(svc, list(tasks.values()), f.node_ok(nodes), NOW + 1, nodes).creates


def rejected_again_and_again(
    svc: objects_pb2.Service, first: objects_pb2.Task, count: int
) -> list[objects_pb2.Task]:
    return [first] + [
        f.task(
            svc,
            1,
            state=states.REJECTED,
            desired=states.SHUTDOWN,
            created_at=NOW - 500 + i,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize("why", ["node down", "unhealthy"])
def test_rejected_retries_do_not_push_out_why_the_slot_was_replaced(why: str) -> None:
    svc = f.service(1)
    if why == "node down":
        first = f.task(svc, 1, node="down", desired=states.SHUTDOWN, created_at=NOW - 900)
        first.shutdown_reason = "node down"
    else:
        first = f.task(svc, 1, state=states.FAILED, desired=states.SHUTDOWN, created_at=NOW - 900)
        first.status.err = "task: unhealthy container"
    tasks = rejected_again_and_again(svc, first, 8)
    deleted = ids(tasks_to_delete(tasks, NODES, 5))
    assert first.id not in deleted
    # The oldest rejections beyond the limit go: 9 tasks, 5 kept, plus the one that ran.
    assert deleted == ids(tasks[1:4])


def test_a_slot_whose_kept_tasks_ran_keeps_no_more() -> None:
    svc = f.service(1)
    tasks = history(svc, 1, 7)  # failed tasks (they ran), then a running one
    assert ids(tasks_to_delete(tasks, NODES, 5)) == ids(tasks[:3])


def test_service_ps_shows_why_the_manager_shut_a_task_down() -> None:
    svc = f.service(1)
    lost = f.task(svc, 1, node="down", desired=states.SHUTDOWN)
    lost.shutdown_reason = "node down"
    assert task_error(lost) == '"node down"'
    failed = f.task(svc, 1, state=states.FAILED, desired=states.SHUTDOWN)
    failed.status.err = "task: unhealthy container"
    failed.shutdown_reason = "node down"
    assert task_error(failed) == '"task: unhealthy container"'
    rows = task_rows([lost], {"down": "host-down"}, now=NOW)
    assert rows[0][6] == '"node down"'
