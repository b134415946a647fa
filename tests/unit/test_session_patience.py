"""An agent gives a manager that is slow to answer more time with each failed attempt.

A real agent session loop (hollow executor) against a real gRPC server over TLS on a
loopback port: a stand-in dispatcher that takes longer than the agent's first opening
timeout to answer every Session call, as an overloaded manager does. Without growing
patience the agent would give up and reconnect for ever; with it, a later attempt
waits long enough and the session opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from agent import session as session_mod
from agent.credentials import NodeCredentials
from agent.executor.hollow import HollowExecutor
from agent.reporter import StatusReporter
from agent.session import SessionLoop, connect_timeout, open_timeout, patience
from agent.worker import Worker
from common import pki
from common.api import dispatcher_pb2, dispatcher_pb2_grpc
from common.timeutil import duration
from manager.grpc_errors import Context
from tests.fakes import UnimplementedDispatcher

CLUSTER = "c1"


class SlowDispatcher(UnimplementedDispatcher):
    """A dispatcher that answers each Session call only after `delay` seconds (a
    stand-in for an overloaded manager; only what the session loop calls)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.openings = 0
        self.heartbeats = 0

    async def Session(
        self, request: dispatcher_pb2.SessionRequest, context: Context
    ) -> AsyncIterator[dispatcher_pb2.SessionMessage]:
        self.openings += 1
        await asyncio.sleep(self.delay)
        yield dispatcher_pb2.SessionMessage(
            session_id=f"s{self.openings}", heartbeat_period=duration(1.0)
        )
        await asyncio.Event().wait()

    async def Heartbeats(
        self,
        request_iterator: AsyncIterator[dispatcher_pb2.HeartbeatRequest],
        context: Context,
    ) -> AsyncIterator[dispatcher_pb2.HeartbeatResponse]:
        async for _ in request_iterator:
            self.heartbeats += 1
            yield dispatcher_pb2.HeartbeatResponse(period=duration(1.0))


def _credentials() -> tuple[grpc.ServerCredentials, NodeCredentials]:
    ca = pki.RootCA.create()
    server_key, server_cert = ca.issue(
        node_id="manager1", role="swarm-manager", cluster_id=CLUSTER,
        server_names=[pki.SERVER_NAME],
    )  # fmt: skip
    node_key, node_cert = ca.issue(node_id="node1", role="swarm-worker", cluster_id=CLUSTER)
    server = grpc.ssl_server_credentials(
        [(server_key, server_cert)], root_certificates=ca.cert_pem, require_client_auth=True
    )
    return server, NodeCredentials(node_key, node_cert, ca.cert_pem)


def test_patience_doubles_up_to_its_cap() -> None:
    assert [patience(n) for n in range(6)] == [1, 2, 4, 4, 4, 4]
    assert open_timeout(0) == session_mod._OPEN_TIMEOUT
    assert open_timeout(1) == 2 * session_mod._OPEN_TIMEOUT
    assert open_timeout(10) == session_mod.MAX_PATIENCE * session_mod._OPEN_TIMEOUT


async def test_a_slow_manager_is_waited_for_longer_until_the_session_opens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opening = 0.4
    monkeypatch.setattr(session_mod, "_OPEN_TIMEOUT", opening)
    monkeypatch.setattr(session_mod, "MIN_BACKOFF", 0.01)
    server_creds, node_creds = _credentials()
    # An answer may take the connect timeout and the opening timeout together: slower
    # than the first attempt's patience, quicker than the second's.
    first = connect_timeout(session_mod.DEFAULT_PERIOD) + opening
    dispatcher = SlowDispatcher(delay=first + 0.5 * opening)
    server = grpc.aio.server()
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)
    port = server.add_secure_port("127.0.0.1:0", server_creds)
    await server.start()
    executor = HollowExecutor("hollow-patience")
    reporter = StatusReporter()
    loop = SessionLoop(
        [f"127.0.0.1:{port}"], node_creds, executor, Worker(executor, reporter, "node1"), reporter
    )
    runner = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(loop.connected.wait(), 20)
        assert loop.session_id.startswith("s")
        assert dispatcher.openings >= 2  # the first attempt gave up...
        assert loop.failures == 0  # ...and the one that opened reset the count
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await server.stop(None)
