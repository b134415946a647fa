"""PendingStatuses: the most advanced report per task, transitional ones held a while."""

from __future__ import annotations

import time

from common import states
from common.api import objects_pb2
from common.statusbatch import PendingStatuses


def report(state: states.TaskState.ValueType) -> objects_pb2.TaskStatus:
    return objects_pb2.TaskStatus(state=state)


def test_running_and_final_states_are_due_at_once() -> None:
    pending = PendingStatuses(hold=60)
    assert pending.add("t1", report(states.RUNNING))
    assert pending.add("t2", report(states.FAILED))
    batch, wait = pending.due()
    assert set(batch) == {"t1", "t2"}
    assert wait is None
    assert len(pending) == 0


def test_a_transitional_state_waits_and_a_later_one_replaces_it() -> None:
    pending = PendingStatuses(hold=60)
    assert pending.add("t1", report(states.PREPARING))  # the first held: a new deadline
    assert not pending.add("t2", report(states.STARTING))
    batch, wait = pending.due()
    assert batch == {}
    assert wait is not None
    assert 59 < wait <= 60
    assert pending.add("t1", report(states.RUNNING))
    batch, _ = pending.due()
    assert batch == {"t1": report(states.RUNNING)}
    assert not pending.add("t1", report(states.STARTING))  # late: never moves back


def test_a_held_state_is_due_once_its_hold_is_over() -> None:
    pending = PendingStatuses(hold=0.01)
    pending.add("t1", report(states.PREPARING))
    time.sleep(0.02)
    pending.add("t1", report(states.READY))  # keeps the first deadline
    batch, wait = pending.due()
    assert batch == {"t1": report(states.READY)}
    assert wait is None


def test_due_gives_at_most_its_limit_and_keeps_the_rest() -> None:
    pending = PendingStatuses(hold=60)
    for i in range(10):
        pending.add(f"t{i}", report(states.RUNNING))
    first, _ = pending.due(limit=4)
    second, _ = pending.due(limit=4)
    third, _ = pending.due(limit=4)
    assert [len(first), len(second), len(third)] == [4, 4, 2]
    assert len(set(first) | set(second) | set(third)) == 10
