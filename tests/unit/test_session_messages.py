"""The dispatcher's session messages: the pacing of their turns (`SendPacer`, property
tests on a virtual clock) and what an incremental message carries (the tasks as the
cache has them when it is built)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from common import states
from common.api import dispatcher_pb2, objects_pb2
from manager.dispatcher.dispatcher import AgentSession, Dispatcher, SendPacer
from manager.store.tasktable import TaskTable

Change = dispatcher_pb2.AssignmentChange
RATE = 100.0
BURST = 5


def turns(gaps: list[float]) -> list[tuple[float, float]]:
    """(asked at, sent at) for calls `gaps` apart, on a virtual clock."""
    now = 0.0
    pacer = SendPacer(RATE, BURST, lambda: now)
    out = []
    for gap in gaps:
        now += gap
        out.append((now, now + pacer.delay()))
    return out


GAPS = st.lists(st.floats(0, 0.2, allow_nan=False), min_size=1, max_size=300)


@given(GAPS)
def test_turns_are_never_early_and_keep_the_order_asked(gaps: list[float]) -> None:
    sent = [s for _, s in turns(gaps)]
    assert all(s >= asked for asked, s in turns(gaps))
    assert sent == sorted(sent)


@given(GAPS, st.floats(0.001, 1.0))
def test_no_window_holds_more_than_the_burst_and_the_rate(gaps: list[float], span: float) -> None:
    sent = [s for _, s in turns(gaps)]
    for i, start in enumerate(sent):
        inside = sum(1 for s in sent[i:] if s < start + span - 1e-9)
        assert inside <= BURST + span * RATE + 1


@given(st.lists(st.floats(1 / RATE, 1.0, allow_nan=False), min_size=1, max_size=100))
def test_under_the_rate_nothing_waits(gaps: list[float]) -> None:
    assert all(s == asked for asked, s in turns(gaps))


def test_a_burst_goes_at_once_then_one_turn_per_interval() -> None:
    delays = [round(s - asked, 6) for asked, s in turns([1.0] + [0.0] * (BURST + 3))]
    assert delays == [0.0] * BURST + [0.0, 0.01, 0.02, 0.03]


# ---- what an incremental message carries ------------------------------------------


def dispatcher(tasks: TaskTable) -> Dispatcher:
    cache: Any = SimpleNamespace(tasks=tasks, nodes={}, add_listener=lambda _listener: None)
    store: Any = None
    return Dispatcher(cache, store, heartbeat_period=5.0, peers=list, clock=lambda: 0.0)


def session() -> AgentSession:
    s = AgentSession("s1", "n1", "10.0.0.1", 0.0, 5.0)
    s.streaming = True
    return s


def test_an_update_carries_the_task_as_cached_when_the_message_is_built() -> None:
    tasks = TaskTable()
    d = dispatcher(tasks)
    s = session()
    task = objects_pb2.Task(id="t1", node_id="n1", desired_state=states.TaskState.ValueType(5))
    task.meta.version = 3
    tasks["t1"] = task
    s.pending["t1"] = Change.ACTION_UPDATE
    newer = objects_pb2.Task()
    newer.CopyFrom(task)
    newer.desired_state = states.TaskState.ValueType(6)
    newer.meta.version = 4
    tasks["t1"] = newer  # changed while the session waited for its turn
    message = d._next_message(s)
    assert message is not None
    [change] = message.assignments.changes
    assert change.action == Change.ACTION_UPDATE
    assert change.task == newer
    assert not s.pending


def test_a_removal_carries_the_id_and_a_task_deleted_since_is_removed() -> None:
    tasks = TaskTable()
    d = dispatcher(tasks)
    s = session()
    s.pending["gone"] = Change.ACTION_UPDATE  # deleted from the cache before the turn
    s.pending["old"] = Change.ACTION_REMOVE
    message = d._next_message(s)
    assert message is not None
    assert [(c.action, c.task) for c in message.assignments.changes] == [
        (Change.ACTION_REMOVE, objects_pb2.Task(id="gone")),
        (Change.ACTION_REMOVE, objects_pb2.Task(id="old")),
    ]
