"""Task status reports on the Heartbeats stream, spoken by hand as an agent speaks them.

Agents send their reports as requests with updates on the stream they heartbeat on:
the manager writes them as it writes UpdateTaskStatus calls, answers only the
heartbeats, and ends the stream with INVALID_ARGUMENT for a report it could not store,
taking none of it. A real manager with its embedded etcd; the node is a worker that
joined with the token, its one task given by a global service.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from common import states
from common.api import control_pb2, dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2, specs_pb2
from tests.harness import Manager, WorkerIdentity, wait_until

TIMEOUT = 20.0


@pytest.fixture
def manager() -> Iterator[Manager]:
    m = Manager().start()
    try:
        yield m
    finally:
        m.cleanup()


class HandSession:
    """A node's session opened by hand: the Session stream (read in the background)
    and one Heartbeats stream whose requests the test writes one by one."""

    def __init__(self, manager: Manager, worker: WorkerIdentity) -> None:
        self.channel = worker.channel(manager.addr)
        stub = dispatcher_pb2_grpc.DispatcherStub(self.channel)
        request = dispatcher_pb2.SessionRequest(node_id=worker.node_id)
        request.description.hostname = "hand-made"
        self.session = stub.Session(request, timeout=120)
        self.id = next(self.session).session_id
        self.assigned: dict[str, objects_pb2.Task] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._follow, daemon=True).start()
        self._requests: queue.Queue[dispatcher_pb2.HeartbeatRequest | None] = queue.Queue()
        self.answers = stub.Heartbeats(iter(self._requests.get, None), timeout=120)

    def _follow(self) -> None:
        try:
            for message in self.session:
                with self._lock:
                    for change in message.assignments.changes:
                        self.assigned[change.task.id] = change.task
        except grpc.RpcError:
            pass  # the test ended the session

    def tasks(self) -> list[objects_pb2.Task]:
        with self._lock:
            return list(self.assigned.values())

    def send(self, *updates: tuple[str, objects_pb2.TaskStatus]) -> None:
        request = dispatcher_pb2.HeartbeatRequest(session_id=self.id)
        for task_id, status in updates:
            request.updates.add(task_id=task_id, status=status)
        self._requests.put(request)

    def heartbeat(self) -> Any:
        self._requests.put(dispatcher_pb2.HeartbeatRequest(session_id=self.id))
        return next(self.answers)

    def close(self) -> None:
        self._requests.put(None)
        self.session.cancel()
        self.channel.close()


def _status(state: int, message: str = "") -> objects_pb2.TaskStatus:
    status = objects_pb2.TaskStatus(state=state, message=message)  # type: ignore[arg-type]
    status.timestamp.GetCurrentTime()
    return status


def _task(manager: Manager, task_id: str) -> objects_pb2.Task:
    reply = manager.api().GetTask(control_pb2.GetTaskRequest(task_id=task_id))
    task: objects_pb2.Task = reply.task
    return task


@pytest.fixture
def session(manager: Manager) -> Iterator[HandSession]:
    spec = specs_pb2.ServiceSpec()
    spec.annotations.name = "everywhere"
    spec.task.container.image = "swarmlet/sleeper:latest"
    getattr(spec, "global").SetInParent()  # a keyword in Python
    manager.api().CreateService(control_pb2.CreateServiceRequest(spec=spec))
    hand = HandSession(manager, manager.join_worker())
    try:
        wait_until(hand.tasks, TIMEOUT, what="the node's task assigned")
        yield hand
    finally:
        hand.close()


def test_reports_on_the_heartbeat_stream_are_written_and_not_answered(
    manager: Manager, session: HandSession
) -> None:
    (task,) = session.tasks()
    session.send((task.id, _status(states.RUNNING, "started")))
    # A report for a task that is not there (removed meanwhile) is passed over.
    session.send(("no-such-task", _status(states.RUNNING)))
    # Each heartbeat gets its own answer: the reports before them got none.
    for _ in range(3):
        assert session.heartbeat().period.ToTimedelta().total_seconds() > 0
    wait_until(
        lambda: _task(manager, task.id).status.state == states.RUNNING,
        TIMEOUT,
        what="the reported state stored",
    )
    assert _task(manager, task.id).status.message == "started"


def test_a_report_that_cannot_be_stored_ends_the_stream_and_nothing_is_taken(
    manager: Manager, session: HandSession
) -> None:
    (task,) = session.tasks()
    before = _task(manager, task.id).status
    # One good update beside an impossible one: the report is refused as a whole.
    session.send((task.id, _status(states.RUNNING)), (task.id, _status(99)))
    with pytest.raises(grpc.RpcError) as refused:
        session.heartbeat()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown task state 99" in (refused.value.details() or "")
    # Given the time a taken report needs to be written (running goes at once), it
    # would show by now: the task is as it was.
    time.sleep(2)
    assert _task(manager, task.id).status.state == before.state
