"""Wires the manager together and runs it until asked to stop.

Start-up order: state dir (locked, mode 0700) -> etcd (embedded child or --etcd) ->
store and cache (first list) -> cluster object -> this manager as a node (joining with
the manager token if the cluster exists) -> gRPC servers (control API on the unix
socket, dispatcher and CA on TCP) -> the lease, presence, leader election and the
dispatcher's loops. The reconcilers run only while this manager is the leader.
Shutdown resigns leadership and revokes the lease first, so another manager takes over
at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from common import pki
from common.api import (
    ca_pb2_grpc,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    logs_pb2_grpc,
    objects_pb2,
)
from common.ids import new_id
from common.log import get_logger
from common.looplag import watch_loop_lag
from common.metrics import serve_metrics
from common.supervise import cancel_all, supervise
from common.timeutil import duration, duration_seconds
from manager import metrics
from manager.ca import authz
from manager.ca.bootstrap import init_root_ca
from manager.ca.credentials import ManagerTLS
from manager.ca.service import NodeCAService
from manager.controlapi import ControlAPI, threaded
from manager.daemon import memalloc
from manager.daemon.ports import EXCLUSIVE_PORT, bind_error
from manager.dispatcher import Dispatcher
from manager.dispatcher.nodehealth import NodeHealth
from manager.dispatcher.sessionkeys import SessionKeys
from manager.grpc_errors import Context, server_interceptors
from manager.leadership.election import Leadership
from manager.leadership.lease import ManagerLease
from manager.leadership.membership import JoinRefusedError, announce_forever, ensure_manager_node
from manager.orchestrator.orchestrator import Orchestrator
from manager.orchestrator.taskreaper import DEFAULT_HISTORY_LIMIT, TaskReaper
from manager.scheduler import Scheduler
from manager.store import AlreadyExistsError, Cache, Kind, NotLeaderError, Store
from manager.store.compactor import Compactor
from manager.store.embedded import EmbeddedEtcd
from manager.store.etcd import EtcdConfig, connect
from manager.store.health import EtcdHealth
from manager.store.keys import KeySpace
from manager.store.side import SideThread
from manager.streams.events import EventLog
from manager.streams.logbroker import LogBroker

_log = get_logger("manager")
CONTROL_SOCKET = "control.sock"
# Unix socket paths are limited to 108 bytes by the kernel.
_SUN_PATH_MAX = 107


class ManagerError(Exception):
    """The manager cannot start; the message says why and what to do."""


@dataclass
class ManagerConfig:
    state_dir: Path
    listen_addr: str = "127.0.0.1:4242"
    advertise_addr: str = ""
    etcd: EtcdConfig | None = None
    etcd_prefix: str = "/swarmlet/"
    heartbeat_period: float = 1.0
    # host:port for the control API over TCP (mutual TLS, admin certificates); off if "".
    control_addr: str = ""
    # host:port to serve Prometheus metrics on; off if "".
    metrics_addr: str = ""
    # Lifetime of node certificates, set when this manager creates the cluster.
    cert_expiry: float = pki.DEFAULT_NODE_CERT_LIFETIME
    # The manager join token, for a manager joining an existing cluster.
    join_token: str = ""
    # TTL of the manager's etcd lease: how long a dead leader goes unnoticed.
    leader_ttl: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def control_socket(self) -> Path:
        return self.state_dir / CONTROL_SOCKET


@dataclass
class Manager:
    """A running manager's parts, for tests and tools that want to look inside."""

    config: ManagerConfig
    store: Store
    cache: Cache
    dispatcher: Dispatcher
    scheduler: Scheduler
    orchestrator: Orchestrator
    dispatcher_port: int
    leadership: Leadership


def _lock_state_dir(state_dir: Path) -> int:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(state_dir, 0o700)
    fd = os.open(state_dir / "manager.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ManagerError(
            f"another swarm-manager is running with state dir {state_dir}: stop it, or give "
            "this one its own --state-dir"
        ) from None
    return fd


async def _ensure_cluster(store: Store, cache: Cache, config: ManagerConfig) -> bool:
    """Create the cluster object (root CA, tokens) if there is none; True if this did."""
    if cache.cluster() is not None:
        return False
    cluster = objects_pb2.Cluster(id=new_id())
    cluster.spec.annotations.name = "default"
    cluster.spec.orchestration.task_history_retention_limit = DEFAULT_HISTORY_LIMIT
    cluster.spec.dispatcher.heartbeat_period.CopyFrom(duration(config.heartbeat_period))
    cluster.spec.ca_config.node_cert_expiry.CopyFrom(duration(config.cert_expiry))
    init_root_ca(cluster)
    try:
        created = await store.create(cluster, unique_name="default")
        await cache.wait_for(created.meta.version)
        _log.info("cluster initialised", cluster_id=cluster.id)
        return True
    except AlreadyExistsError:
        # Another manager made it first.
        for _ in range(50):
            if cache.cluster() is not None:
                break
            await asyncio.sleep(0.1)
        return False


async def _serve_control(api: ControlAPI, socket_path: Path) -> grpc.Server:
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


async def _serve_control_tcp(
    api: ControlAPI, addr: str, credentials: grpc.ServerCredentials
) -> grpc.Server:
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


async def _stop_threaded(servers: list[grpc.Server], grace: float | None) -> None:
    """Stop threaded servers; their calls in flight may still need the loop meanwhile."""
    events = [s.stop(grace) for s in servers]
    servers.clear()
    await asyncio.gather(*(asyncio.to_thread(e.wait, 5.0) for e in events))


async def _serve_ca(
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


async def _serve_dispatcher(
    dispatcher: Dispatcher,
    ca: NodeCAService,
    logs: LogBroker,
    listen_addr: str,
    credentials: grpc.ServerCredentials,
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        interceptors=server_interceptors(),
        options=[
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
        ],
    )
    dispatcher_pb2_grpc.add_DispatcherServicer_to_server(dispatcher, server)
    ca_pb2_grpc.add_NodeCAServicer_to_server(ca, server)
    logs_pb2_grpc.add_LogBrokerServicer_to_server(logs, server)
    try:
        port = server.add_secure_port(listen_addr, credentials)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ManagerError(
            f"cannot listen on {listen_addr}: {bind_error(listen_addr)}: pick another --listen-addr"
        )
    await server.start()
    return server, port


@contextlib.asynccontextmanager
async def running_manager(config: ManagerConfig) -> AsyncIterator[Manager]:
    """A manager serving until the context exits."""
    lock_fd = _lock_state_dir(config.state_dir)
    embedded: EmbeddedEtcd | None = None
    servers: list[grpc.aio.Server] = []
    control_servers: list[grpc.Server] = []
    tasks: list[asyncio.Task[None]] = []
    side: SideThread | None = None
    try:
        etcd_config = config.etcd
        if etcd_config is None:
            embedded = EmbeddedEtcd(config.state_dir / "etcd", config.state_dir / "etcd.log")
            etcd_config = EtcdConfig([await embedded.start()])
        async with connect(etcd_config) as client:
            keys = KeySpace(config.etcd_prefix)
            store = Store(client, keys, endpoints=etcd_config.display)
            store.txn_observer = metrics.ETCD_TXN.observe
            cache = Cache(client, store)
            store.base_reader = cache.get
            tasks.append(supervise("loop lag", watch_loop_lag))
            tasks.append(supervise("cache", cache.run))
            await cache.synced.wait()
            created_cluster = await _ensure_cluster(store, cache, config)
            dispatcher_addr = config.advertise_addr or config.listen_addr
            tls = ManagerTLS(config.state_dir, cache, [dispatcher_addr.rpartition(":")[0]])
            manager_id = tls.node_id
            try:
                await ensure_manager_node(
                    store, cache, manager_id, config.join_token, created_cluster
                )
            except JoinRefusedError as exc:
                raise ManagerError(str(exc)) from None
            admin_dir = tls.write_admin_bundle()
            side = SideThread(etcd_config)
            lease = ManagerLease(client, config.leader_ttl, side)
            # Writes only the leader may make carry a compare on the leader key.
            leader_store = store.guarded(keys.leader_key, manager_id.encode())
            health = EtcdHealth(client, etcd_config.display, keys.leader_key, side)
            session_keys = SessionKeys(store, lease, manager_id)
            period = _heartbeat_period(cache, config)
            clock = time.time

            def peers() -> list[dispatcher_pb2.ManagerPeer]:
                present = cache.objects[Kind.MANAGER].values()
                return [
                    dispatcher_pb2.ManagerPeer(node_id=p.id, addr=p.dispatcher_addr)
                    for p in sorted(present, key=lambda p: p.id)
                ]

            dispatcher = Dispatcher(
                cache,
                store,
                heartbeat_period=period,
                peers=peers,
                clock=time.monotonic,
                session_keys=session_keys,
            )
            scheduler = Scheduler(cache, leader_store, clock=clock)
            orchestrator = Orchestrator(cache, leader_store, clock, scheduler)
            reaper = TaskReaper(cache, leader_store)
            node_health = NodeHealth(cache, leader_store, period, time.monotonic)
            compactor = Compactor(client, cache)

            async def lead() -> None:
                """What only the leader runs, for as long as it leads."""
                deposed = asyncio.Event()

                def guarded(run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
                    async def runner() -> None:
                        try:
                            await run()
                        except NotLeaderError:
                            deposed.set()

                    return runner

                running = [
                    supervise(name, guarded(run))
                    for name, run in [
                        ("orchestrator", orchestrator.run),
                        ("scheduler", scheduler.run),
                        ("taskreaper", reaper.run),
                        ("nodehealth", node_health.run),
                        ("compactor", compactor.run),
                    ]
                ]
                try:
                    await deposed.wait()
                    _log.warning("a leader write was refused: leadership lost")
                finally:
                    await cancel_all(running)

            leadership = Leadership(client, keys, manager_id, lease, lead)
            events = EventLog(cache)
            metrics.StateCounts(cache)
            control = ControlAPI(
                cache,
                store,
                dispatcher.close_node,
                lambda tasks, replacing: scheduler.preview(tasks, without_service=replacing),
                manager_addrs=lambda: [p.addr for p in peers()],
                health=health,
                leader_id=lambda: leadership.leader_id,
                events=events,
            )

            ca_service = NodeCAService(cache, store)
            # Log lines come to this manager's dispatcher port from the agents.
            control.logs = LogBroker(cache, store, lease, publisher_addr="")
            dispatcher_server, port = await _serve_dispatcher(
                dispatcher,
                ca_service,
                control.logs,
                config.listen_addr,
                tls.server_credentials(require_client_auth=True),
            )
            servers.append(dispatcher_server)
            advertised = config.advertise_addr or f"{config.listen_addr.rpartition(':')[0]}:{port}"
            control.logs.publisher_addr = advertised
            ca_addr = pki.ca_address(f"{config.listen_addr.rpartition(':')[0]}:{port}")
            servers.append(
                await _serve_ca(
                    ca_service, ca_addr, tls.server_credentials(require_client_auth=False)
                )
            )
            # The control socket last: once it answers, the dispatcher and the CA
            # listen too (and the API's log broker is set), so an operator's
            # `swarmctl` (or a test) that sees the manager up can join nodes at once.
            control_servers.append(await _serve_control(control, config.control_socket))
            if config.control_addr:
                cluster_id = cache.cluster().id  # type: ignore[union-attr]

                def admins_only(context: Context) -> None:
                    authz.require(context, cluster_id, (pki.ROLE_ADMIN, pki.ROLE_MANAGER))

                tcp_control = ControlAPI(
                    cache,
                    store,
                    dispatcher.close_node,
                    control.previewer,
                    admins_only,
                    control.manager_addrs,
                    health,
                    control.leader_id,
                    control.logs,
                    events,
                    control.counts,
                )
                control_servers.append(
                    await _serve_control_tcp(
                        tcp_control,
                        config.control_addr,
                        tls.server_credentials(require_client_auth=True),
                    )
                )
            for name, run in [
                ("lease", lease.run),
                ("presence", lambda: announce_forever(store, lease, manager_id, advertised)),
                ("leadership", leadership.run),
                ("etcd.health", health.run),
                ("ca.renew", tls.renew_forever),
                ("dispatcher.sessionkeys", session_keys.run),
                ("dispatcher.heartbeats", dispatcher.expire_sessions),
                ("dispatcher.status", dispatcher.status_writer.run),
                ("dispatcher.registrations", dispatcher.registrations.run),
            ]:
                tasks.append(supervise(name, run))
            metrics_endpoint = serve_metrics(config.metrics_addr) if config.metrics_addr else None
            _log.info(
                "manager ready",
                metrics_host=metrics_endpoint.host if metrics_endpoint else None,
                metrics_port=metrics_endpoint.port if metrics_endpoint else None,
                manager_id=manager_id,
                control_socket=str(config.control_socket),
                dispatcher=advertised,
                ca=ca_addr,
                etcd=etcd_config.display,
                embedded_etcd=embedded is not None,
                control_tcp=config.control_addr or None,
                admin_certificates=str(admin_dir),
                allocator=memalloc.in_use(),
            )
            try:
                yield Manager(
                    config, store, cache, dispatcher, scheduler, orchestrator, port, leadership
                )
            finally:
                # Hand over at once: resign, and let the lease (sessions, presence) go.
                await leadership.resign()
                dispatcher.close_all()
                await _stop_threaded(control_servers, 1.0)
                await asyncio.gather(*(s.stop(grace=1.0) for s in servers))
                servers.clear()
                await cancel_all(tasks)
                tasks.clear()
                await lease.revoke()
    finally:
        if control_servers:
            await _stop_threaded(control_servers, 0)
        if servers:
            await asyncio.gather(*(s.stop(grace=0) for s in servers))
        await cancel_all(tasks)
        if side is not None:
            await asyncio.to_thread(side.close)
        if embedded is not None:
            await embedded.stop()
        config.control_socket.unlink(missing_ok=True)
        os.close(lock_fd)


def _heartbeat_period(cache: Cache, config: ManagerConfig) -> float:
    """The cluster's heartbeat period (every manager uses the same one)."""
    cluster = cache.cluster()
    if cluster is not None and cluster.spec.dispatcher.HasField("heartbeat_period"):
        seconds = duration_seconds(cluster.spec.dispatcher.heartbeat_period)
        if seconds > 0:
            return seconds
    return config.heartbeat_period


async def serve(config: ManagerConfig, stop: asyncio.Event) -> None:
    """Run a manager until `stop` is set."""
    async with running_manager(config):
        await stop.wait()
        _log.info("manager stopping")
    _log.info("manager stopped")
