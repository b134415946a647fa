"""Task status reports: the forward-only mutator and the batching writer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from common import states
from common.api import objects_pb2, types_pb2
from manager.dispatcher import status as status_mod
from manager.dispatcher.status import TaskStatusWriter, forward_only
from tests.fakes import FakeCache, RecordingCommitter
from tests.unit import factories as f
from tests.unit.factories import NOW

ALL_STATES = [
    states.NEW,
    states.PENDING,
    states.ASSIGNED,
    states.ACCEPTED,
    states.PREPARING,
    states.READY,
    states.STARTING,
    states.RUNNING,
    states.COMPLETE,
    states.SHUTDOWN,
    states.FAILED,
    states.REJECTED,
]


def report(
    state: states.TaskState.ValueType, message: str = "", at: float = NOW, err: str = ""
) -> objects_pb2.TaskStatus:
    st_ = objects_pb2.TaskStatus(state=state, message=message, err=err)
    st_.timestamp.CopyFrom(f.timestamp(at))
    return st_


# ---- forward_only -------------------------------------------------------------------------


def test_forward_report_is_applied_whole() -> None:
    t = f.task(f.service(), 1, state=states.STARTING)
    new = report(states.FAILED, "exit 3", err="task: non-zero exit (3)")
    new.container_status.exit_code = 3
    new.container_status.container_id = "c0ffee"
    out = forward_only(new)(f.copy(t))
    assert out is not None
    assert out.status == new


def test_backward_report_is_dropped() -> None:
    t = f.task(f.service(), 1, state=states.RUNNING)
    assert forward_only(report(states.STARTING))(f.copy(t)) is None
    failed = f.task(f.service(), 1, state=states.FAILED)
    assert forward_only(report(states.RUNNING))(failed) is None


def test_same_report_again_is_dropped_even_with_a_new_time() -> None:
    t = f.task(f.service(), 1, state=states.RUNNING)
    t.status.CopyFrom(report(states.RUNNING, "started", at=NOW))
    assert forward_only(report(states.RUNNING, "started", at=NOW + 30))(f.copy(t)) is None


def test_same_state_with_new_details_is_applied() -> None:
    t = f.task(f.service(), 1, state=states.RUNNING)
    t.status.CopyFrom(report(states.RUNNING, "started"))
    out = forward_only(report(states.RUNNING, "healthy"))(f.copy(t))
    assert out is not None
    assert out.status.message == "healthy"


@given(st.lists(st.sampled_from(ALL_STATES), min_size=1, max_size=20))
def test_state_never_moves_backwards(reports: list[states.TaskState.ValueType]) -> None:
    t = f.task(f.service(), 1, state=states.NEW)
    seen = [int(t.status.state)]
    for i, state in enumerate(reports):
        out = forward_only(report(state, f"r{i}"))(f.copy(t))
        if out is not None:
            t = out
        seen.append(int(t.status.state))
    assert seen == sorted(seen)
    assert seen[-1] == max([states.NEW, *reports])


# ---- TaskStatusWriter ----------------------------------------------------------------------


def store_of(tasks: Sequence[objects_pb2.Task]) -> RecordingCommitter:
    """A committer writing to a FakeCache holding `tasks`."""
    return RecordingCommitter(FakeCache(*tasks))


@pytest.fixture(autouse=True)
def fast_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status_mod, "FLUSH_INTERVAL", 0.01)
    monkeypatch.setattr(status_mod, "TRANSITIONAL_HOLD", 0.1)


@pytest.fixture
async def writer_and_store() -> AsyncIterator[tuple[TaskStatusWriter, RecordingCommitter]]:
    svc = f.service(3)
    store = store_of([f.task(svc, i, task_id=f"t{i}", state=states.ASSIGNED) for i in (1, 2, 3)])
    writer = TaskStatusWriter(store)
    runner = asyncio.create_task(writer.run())
    yield writer, store
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll `check` (the writer has no event to wait on) until it holds."""
    for _ in range(int(timeout / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    pytest.fail(f"condition not reached within {timeout}s")


def test_add_keeps_the_most_advanced_report() -> None:
    writer = TaskStatusWriter(store_of([]))
    writer.add("t1", report(states.RUNNING, "a"))
    writer.add("t1", report(states.STARTING, "late"))
    assert writer._pending.get("t1").message == "a"  # type: ignore[union-attr]
    writer.add("t1", report(states.RUNNING, "b"))
    assert writer._pending.get("t1").message == "b"  # type: ignore[union-attr]
    writer.add("t1", report(states.FAILED))
    assert writer._pending.get("t1").state == states.FAILED  # type: ignore[union-attr]


async def test_reports_are_written_in_one_batch(
    writer_and_store: tuple[TaskStatusWriter, RecordingCommitter],
) -> None:
    writer, store = writer_and_store
    writer.add("t1", report(states.STARTING))
    writer.add("t1", report(states.RUNNING))
    writer.add("t2", report(states.RUNNING))
    writer.add("t3", report(states.FAILED, "exit 1"))
    await until(lambda: writer.written == 3)
    assert store.sizes == [3]
    assert [store.cache.tasks[t].status.state for t in ("t1", "t2", "t3")] == [
        states.RUNNING,
        states.RUNNING,
        states.FAILED,
    ]


async def test_stale_reports_do_not_move_a_task_back(
    writer_and_store: tuple[TaskStatusWriter, RecordingCommitter],
) -> None:
    writer, store = writer_and_store
    writer.add("t1", report(states.FAILED))
    await until(lambda: writer.written == 1)
    writer.add("t1", report(states.RUNNING))  # a late, re-sent report
    writer.add("unknown", report(states.RUNNING))  # a task deleted meanwhile
    await until(lambda: len(store.batches) == 2)
    await asyncio.sleep(0.02)
    assert store.cache.tasks["t1"].status.state == states.FAILED
    assert writer.written == 1


async def test_failed_write_is_retried(
    writer_and_store: tuple[TaskStatusWriter, RecordingCommitter],
) -> None:
    writer, store = writer_and_store
    store.fail_next = 1
    writer.add("t1", report(states.RUNNING))
    await until(lambda: len(store.batches) == 1)
    writer.add("t1", report(states.COMPLETE))  # arrives while the write is retried
    writer.add("t2", report(states.RUNNING))
    await until(lambda: writer.written == 2)
    assert store.cache.tasks["t1"].status.state == states.COMPLETE
    assert store.cache.tasks["t2"].status.state == states.RUNNING
    assert store.sizes[0] == 1


async def test_a_task_that_runs_soon_is_written_once_running(
    writer_and_store: tuple[TaskStatusWriter, RecordingCommitter],
) -> None:
    writer, store = writer_and_store
    for state in (states.ACCEPTED, states.PREPARING, states.READY, states.STARTING):
        writer.add("t1", report(state))
        await asyncio.sleep(0.005)
    writer.add("t1", report(states.RUNNING))
    await until(lambda: writer.written == 1)
    await asyncio.sleep(status_mod.TRANSITIONAL_HOLD * 2)
    assert store.sizes == [1]
    assert store.cache.tasks["t1"].status.state == states.RUNNING


async def test_a_transitional_state_is_written_within_the_hold(
    writer_and_store: tuple[TaskStatusWriter, RecordingCommitter],
) -> None:
    writer, store = writer_and_store
    writer.add("t1", report(states.PREPARING))  # a slow pull: nothing follows for a while
    writer.add("t2", report(states.FAILED))  # not held
    await until(lambda: writer.written == 1)
    assert store.cache.tasks["t1"].status.state == states.ASSIGNED
    writer.add("t1", report(states.PREPARING, "still pulling"))  # keeps its first deadline
    await until(lambda: writer.written == 2, timeout=status_mod.TRANSITIONAL_HOLD * 3)
    assert store.cache.tasks["t1"].status.message == "still pulling"


# ---- what an agent may report (found by the dispatcher fuzz test) ----------------------


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (report(states.TaskState.ValueType(12345)), "unknown task state 12345"),
        (report(states.REMOVE), "not one an agent reports"),
        (report(states.ORPHANED), "not one an agent reports"),
    ],
)
def test_reports_that_cannot_be_stored(status: objects_pb2.TaskStatus, words: str) -> None:
    assert words in status_mod.status_problem(status)


def test_reports_with_bad_times_or_ports() -> None:
    s = report(states.RUNNING)
    s.timestamp.seconds = 2**62
    assert "invalid timestamp" in status_mod.status_problem(s)
    s = report(states.RUNNING)
    s.timestamp.nanos = -1
    assert "invalid timestamp" in status_mod.status_problem(s)
    s = report(states.RUNNING)
    s.port_status.ports.add(protocol=types_pb2.PortProtocol.ValueType(99))
    assert "unknown port protocol 99" in status_mod.status_problem(s)
    s = report(states.RUNNING)
    s.port_status.ports.add(publish_mode=types_pb2.PublishMode.ValueType(-1))
    assert "unknown publish mode -1" in status_mod.status_problem(s)


@pytest.mark.parametrize("state", ALL_STATES)
def test_every_state_an_agent_reports_is_fine(state: states.TaskState.ValueType) -> None:
    assert status_mod.status_problem(report(state)) == ""
    assert status_mod.status_problem(objects_pb2.TaskStatus(state=state)) == ""


def test_long_texts_are_cut() -> None:
    long = "e" * 2_000_000
    s = report(states.FAILED, message=long, err=long)
    cut = status_mod.trimmed(s)
    assert len(cut.err) == len(cut.message) == status_mod.MAX_STATUS_TEXT
    assert cut.err.endswith("…")
    assert s.err == long  # the report itself is left alone
    short = report(states.REJECTED, err="no such image")
    assert status_mod.trimmed(short) is short


async def test_a_large_backlog_is_written_in_capped_commits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A commit holds every object it writes until it returns: a backlog of thousands
    # goes out in several commits of MAX_BATCH at most, one right after the other.
    monkeypatch.setattr(status_mod, "MAX_BATCH", 4)
    svc = f.service(10)
    store = store_of([f.task(svc, i, task_id=f"t{i}", state=states.ASSIGNED) for i in range(10)])
    writer = TaskStatusWriter(store)
    for i in range(10):
        writer.add(f"t{i}", report(states.RUNNING))
    runner = asyncio.create_task(writer.run())
    try:
        await until(lambda: writer.written == 10)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert store.sizes == [4, 4, 2]
    assert all(t.status.state == states.RUNNING for t in store.cache.tasks.values())


async def test_backlog_counts_reports_until_they_are_written(
    writer_and_store: tuple[TaskStatusWriter, RecordingCommitter],
) -> None:
    writer, store = writer_and_store
    gate = store.hold = asyncio.Event()
    writer.add("t1", report(states.RUNNING))
    await until(lambda: len(store.batches) == 0 and writer._writing == 1)
    writer.add("t2", report(states.RUNNING))  # queued behind the write under way
    writer.add("t3", report(states.FAILED))
    assert writer.backlog() == 3
    assert _gauge("swarmlet_task_status_reports_pending") == 3
    gate.set()
    await until(lambda: writer.written == 3)
    assert writer.backlog() == 0
    assert _gauge("swarmlet_task_status_reports_pending") == 0


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)
