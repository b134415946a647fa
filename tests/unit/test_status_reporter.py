"""The agent's status reports: what a report call costs in time shows in its metrics.

A real StatusReporter sends over real gRPC (loopback) to a stand-in dispatcher that
answers UpdateTaskStatus late, as a manager with a long line of calls does.
"""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import REGISTRY

from agent.reporter import StatusReporter
from common import states
from common.api import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from manager.grpc_errors import Context
from tests.fakes import UnimplementedDispatcher

HISTOGRAM = "swarmlet_agent_status_report_seconds"


class LateDispatcher(UnimplementedDispatcher):
    """Answers each UpdateTaskStatus call after `delay` seconds (a stand-in for a
    manager whose calls wait in line; only what the reporter calls). `second_call` is
    set when a second call arrives: the reporter sends it once the first is answered."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.reports: list[dispatcher_pb2.UpdateTaskStatusRequest] = []
        self.second_call = asyncio.Event()

    async def UpdateTaskStatus(
        self, request: dispatcher_pb2.UpdateTaskStatusRequest, context: Context
    ) -> dispatcher_pb2.UpdateTaskStatusResponse:
        self.reports.append(request)
        if len(self.reports) == 2:
            self.second_call.set()
        await asyncio.sleep(self.delay)
        return dispatcher_pb2.UpdateTaskStatusResponse()


def _sample(suffix: str, le: str | None = None) -> float:
    labels = {"le": le} if le is not None else None
    return REGISTRY.get_sample_value(f"{HISTOGRAM}_{suffix}", labels) or 0.0


async def test_a_late_answer_shows_in_the_report_latency_histogram() -> None:
    dispatcher = LateDispatcher(delay=0.3)
    server = grpc.aio.server()
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    count, total = _sample("count"), _sample("sum")
    quick, slower = _sample("bucket", "0.25"), _sample("bucket", "0.5")
    reporter = StatusReporter()
    running = objects_pb2.TaskStatus(state=states.RUNNING)
    reporter.add("t1", running)
    reporter.add("t2", running)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = dispatcher_pb2_grpc.DispatcherStub(channel)
        sender = asyncio.create_task(reporter.send_forever(stub, "s1", timeout=5))
        await asyncio.sleep(0.05)  # the first call is under way (with t1 and t2)...
        reporter.add("t3", running)  # ...so t3 goes in a second one, once it is answered
        try:
            await asyncio.wait_for(dispatcher.second_call.wait(), 10)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await server.stop(None)
    assert [u.task_id for u in dispatcher.reports[0].updates] == ["t1", "t2"]
    assert [u.task_id for u in dispatcher.reports[1].updates] == ["t3"]
    assert _sample("count") == count + 1
    assert 0.3 <= _sample("sum") - total < 5
    # Counted as the late answer it was: above 0.25 s, within 0.5 s.
    assert _sample("bucket", "0.25") == quick
    assert _sample("bucket", "0.5") == slower + 1
