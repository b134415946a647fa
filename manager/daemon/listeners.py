"""The manager's gRPC servers: the dispatcher (with the CA and the log broker) on
--listen-addr, the CA alone for joining nodes on the next port, and the control API on
the unix socket and, with --control-addr, on TCP.

Every TCP server listens exclusively (`ports.EXCLUSIVE_PORT`); a port that cannot be
had stops the manager with a `ManagerError` saying why. `Servers` stops them all in one
go, the control API's first: its calls in flight may still need the loop meanwhile.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc

from common.api import ca_pb2_grpc, dispatcher_pb2_grpc, logs_pb2_grpc
from manager.ca.service import NodeCAService
from manager.controlapi import ControlAPI, threaded
from manager.daemon.config import ManagerError
from manager.daemon.ports import EXCLUSIVE_PORT, bind_error
from manager.dispatcher import Dispatcher
from manager.grpc_errors import server_interceptors
from manager.streams.logbroker import LogBroker

# Unix socket paths are limited to 108 bytes by the kernel.
_SUN_PATH_MAX = 107

_DISPATCHER_OPTIONS = [
    EXCLUSIVE_PORT,
    # Agents ping to notice a dead manager quickly; let them.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
    ("grpc.http2.max_ping_strikes", 0),
    # The manager's own pings only tidy up dead connections (heartbeats tell
    # whether a node lives): rare enough to cost nothing at 5,000 nodes.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # No bandwidth probes: gRPC follows the DATA it receives with a ping to
    # size its flow-control window, so a heartbeat costs a ping and its
    # answer besides. The agents' channels do without them too (their
    # `_CHANNEL_OPTIONS`): what goes between them is small, and the default
    # window passes it in one round trip. 5,000 idle nodes: manager 36-38%
    # -> 26-28% of a core, farm 38-39% -> 22-29% (docs/performance.md).
    ("grpc.http2.bdp_probe", 0),
    # Deliberately not `grpc.tsi.max_frame_size` (smaller TLS records, ~55 MiB
    # less at 5,000 nodes): at 1 KiB some connections' TLS streams came out
    # corrupted (TSI_DATA_CORRUPTED in test_dispatcher_fuzz, 3 runs in 65;
    # none in 40 without it; docs/performance.md).
]


class Servers:
    """The servers started so far, to stop together (also when start-up fails halfway)."""

    def __init__(self) -> None:
        self._aio: list[grpc.aio.Server] = []
        self._threaded: list[grpc.Server] = []

    def add(self, server: grpc.aio.Server | grpc.Server) -> None:
        if isinstance(server, grpc.aio.Server):
            self._aio.append(server)
        else:
            self._threaded.append(server)

    async def stop(self, grace: float) -> None:
        """Stop the control API's threaded servers, then the others, each with `grace`."""
        events = [s.stop(grace) for s in self._threaded]
        self._threaded.clear()
        await asyncio.gather(*(asyncio.to_thread(e.wait, 5.0) for e in events))
        await asyncio.gather(*(s.stop(grace=grace) for s in self._aio))
        self._aio.clear()


def bind_dispatcher(
    listen_addr: str, credentials: grpc.ServerCredentials
) -> tuple[grpc.aio.Server, int]:
    """The dispatcher's server, bound to `listen_addr` but not started (the port it got
    decides the address the log broker publishes); and that port."""
    server = grpc.aio.server(interceptors=server_interceptors(), options=_DISPATCHER_OPTIONS)
    try:
        port = server.add_secure_port(listen_addr, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ManagerError(
            f"cannot listen on {listen_addr}: {bind_error(listen_addr)}: pick another --listen-addr"
        )
    return server, port


async def start_dispatcher(
    server: grpc.aio.Server, dispatcher: Dispatcher, ca: NodeCAService, logs: LogBroker
) -> None:
    """Start the server from `bind_dispatcher`: sessions, certificate renewals, log lines."""
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)
    ca_pb2_grpc.add_NodeCAServicer_to_server(ca, server)
    logs_pb2_grpc.add_LogBrokerServicer_to_server(logs, server)
    await server.start()


async def serve_ca(
    ca: NodeCAService, addr: str, credentials: grpc.ServerCredentials
) -> grpc.aio.Server:
    """The CA for joining nodes: TLS without client certificates (they have none yet)."""
    server = grpc.aio.server(interceptors=server_interceptors(), options=[EXCLUSIVE_PORT])
    ca_pb2_grpc.add_NodeCAServicer_to_server(ca, server)
    try:
        port = server.add_secure_port(addr, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ManagerError(
            f"cannot listen on {addr} for joining nodes (the port after --listen-addr's): "
            f"{bind_error(addr)}: pick another --listen-addr"
        )
    await server.start()
    return server


async def serve_control(api: ControlAPI, socket_path: Path) -> grpc.Server:
    """The control API on the unix socket, served from threads (controlapi/threaded.py)."""
    if len(str(socket_path)) > _SUN_PATH_MAX:
        raise ManagerError(
            f"control socket path {socket_path} is longer than the {_SUN_PATH_MAX} bytes a unix "
            "socket allows: use a shorter --state-dir"
        )
    socket_path.unlink(missing_ok=True)  # noqa: ASYNC240 - start-up, nothing else runs yet
    server, _ = threaded.serve(api, asyncio.get_running_loop(), f"unix:{socket_path}")
    os.chmod(socket_path, 0o600)
    return server


async def serve_control_tcp(
    api: ControlAPI, addr: str, credentials: grpc.ServerCredentials
) -> grpc.Server:
    """The control API on --control-addr, mutual TLS (`api` checks the certificates)."""
    try:
        server, port = threaded.serve(
            api, asyncio.get_running_loop(), addr, credentials, options=[EXCLUSIVE_PORT]
        )
    except RuntimeError:
        pass
    else:
        if port != 0:
            return server
        server.stop(0)
    raise ManagerError(
        f"cannot listen on --control-addr {addr}: {bind_error(addr)}: pick another --control-addr"
    )
