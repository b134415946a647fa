"""The manager, built stage by stage: etcd and the store (`open_store`), this manager's
place in the cluster (`join_cluster`), its lease (`hold_lease`), the parts that do the
work (`build_core`), the gRPC servers (`serve`), and the loops that run for as long as
the manager does (`service_loops`) or only while it leads (`leader_loops`).

Each stage takes what the stages before it built, as keyword-only frozen dataclasses
(`StoreParts`, `IdentityParts`, `LeaseParts`, `CoreParts`, `ServingParts`), builds
every object complete (nothing is set on an object after it is made), and registers on
the caller's `AsyncExitStack` how to undo what it started: shutdown runs in the reverse
order of start-up, also when start-up fails halfway. `server.running_manager` calls
the stages in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from etcd3aio import Etcd3Client

from common import pki
from common.api import dispatcher_pb2, objects_pb2
from common.ids import new_id
from common.log import get_logger
from common.looplag import watch_loop_lag
from common.supervise import cancel_all, supervise
from common.timeutil import duration, duration_seconds
from manager import metrics
from manager.allocator.allocator import Allocator
from manager.ca import authz
from manager.ca.bootstrap import init_root_ca
from manager.ca.credentials import ManagerTLS
from manager.ca.service import NodeCAService
from manager.controlapi import ControlAPI
from manager.controlapi.counts import ServiceCounts
from manager.daemon import listeners
from manager.daemon.config import ManagerConfig, ManagerError
from manager.dispatcher import Dispatcher
from manager.dispatcher.nodehealth import NodeHealth
from manager.dispatcher.sessionkeys import SessionKeys
from manager.grpc_errors import Context
from manager.leadership.election import Leadership
from manager.leadership.lease import ManagerLease
from manager.leadership.membership import JoinRefusedError, announce_forever, ensure_manager_node
from manager.orchestrator.constraintenforcer import ConstraintEnforcer
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

# A loop of the manager: a name (for the logs) and the coroutine function that runs it.
Loop = tuple[str, Callable[[], Awaitable[None]]]


class Background:
    """Supervised loops that are stopped together (`stop`, on the exit stack)."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, loops: list[Loop]) -> None:
        self._tasks.extend(supervise(name, run) for name, run in loops)

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks.clear()


# ---- etcd, the store and its cache ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class StoreParts:
    """etcd (the endpoints used, and whether this manager runs it) and the store over it."""

    etcd: EtcdConfig
    embedded: bool
    client: Etcd3Client
    keys: KeySpace
    store: Store
    cache: Cache


async def open_store(stack: contextlib.AsyncExitStack, config: ManagerConfig) -> StoreParts:
    """Connect to etcd (starting the embedded one without --etcd) and fill the cache."""
    etcd = config.etcd
    if etcd is None:
        embedded = EmbeddedEtcd(config.state_dir / "etcd", config.state_dir / "etcd.log")
        stack.push_async_callback(embedded.stop)
        etcd = EtcdConfig([await embedded.start()])
    client = await stack.enter_async_context(connect(etcd))
    keys = KeySpace(config.etcd_prefix)
    # The cache lists through a store of its own; the store that writes reads the
    # objects it updates from the cache, so most updates need no read before the write.
    cache = Cache(client, Store(client, keys, endpoints=etcd.display))
    store = Store(
        client,
        keys,
        endpoints=etcd.display,
        base_reader=cache.get,
        txn_observer=metrics.ETCD_TXN.observe,
    )
    loops = Background()
    stack.push_async_callback(loops.stop)
    loops.start([("loop lag", watch_loop_lag), ("cache", cache.run)])
    await cache.synced.wait()
    return StoreParts(
        etcd=etcd,
        embedded=config.etcd is None,
        client=client,
        keys=keys,
        store=store,
        cache=cache,
    )


# ---- this manager in the cluster ------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class IdentityParts:
    """This manager's node id and certificates."""

    manager_id: str
    tls: ManagerTLS
    admin_dir: Path
    # The identity the agent on this host runs this manager's node with (one node per host).
    local_node_dir: Path


async def join_cluster(config: ManagerConfig, stores: StoreParts) -> IdentityParts:
    """Create the cluster if there is none, and make this manager one of its nodes
    (with the manager join token if the cluster existed already)."""
    created = await _ensure_cluster(stores.store, stores.cache, config)
    dispatcher_addr = config.advertise_addr or config.listen_addr
    tls = ManagerTLS(config.state_dir, stores.cache, [dispatcher_addr.rpartition(":")[0]])
    try:
        await ensure_manager_node(
            stores.store, stores.cache, tls.node_id, config.join_token, created
        )
    except JoinRefusedError as exc:
        raise ManagerError(str(exc)) from None
    return IdentityParts(
        manager_id=tls.node_id,
        tls=tls,
        admin_dir=tls.write_admin_bundle(),
        local_node_dir=await asyncio.to_thread(tls.write_local_node),
    )


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


# ---- the lease ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class LeaseParts:
    """The manager's etcd lease and what hangs on it; the writes only a leader may make."""

    side: SideThread
    lease: ManagerLease
    leader_store: Store
    health: EtcdHealth
    session_keys: SessionKeys


def hold_lease(
    stack: contextlib.AsyncExitStack,
    config: ManagerConfig,
    stores: StoreParts,
    identity: IdentityParts,
) -> LeaseParts:
    """The lease (kept alive from the side thread) and the etcd health probe. On the way
    out the lease is revoked, so that its keys (presence, sessions, leadership) go at once."""
    side = SideThread(stores.etcd)
    stack.push_async_callback(asyncio.to_thread, side.close)
    lease = ManagerLease(stores.client, config.leader_ttl, side)
    stack.push_async_callback(lease.revoke)
    keys = stores.keys
    return LeaseParts(
        side=side,
        lease=lease,
        # Writes only the leader may make carry a compare on the leader key.
        leader_store=stores.store.guarded(keys.leader_key, identity.manager_id.encode()),
        health=EtcdHealth(stores.client, stores.etcd.display, keys.leader_key, side),
        session_keys=SessionKeys(stores.store, lease, identity.manager_id),
    )


# ---- the parts that do the work -------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CoreParts:
    """The dispatcher, the reconcilers, leader election, and what the APIs share."""

    heartbeat_period: float
    dispatcher: Dispatcher
    scheduler: Scheduler
    orchestrator: Orchestrator
    leadership: Leadership
    events: EventLog
    ca: NodeCAService
    peers: Callable[[], list[dispatcher_pb2.ManagerPeer]]


def build_core(
    config: ManagerConfig, stores: StoreParts, identity: IdentityParts, leases: LeaseParts
) -> CoreParts:
    cache = stores.cache
    period = _heartbeat_period(cache, config)
    peers = partial(_peers, cache)
    dispatcher = Dispatcher(
        cache,
        stores.store,
        heartbeat_period=period,
        peers=peers,
        clock=time.monotonic,
        session_keys=leases.session_keys,
        restart_grace=config.agent_restart_grace,
    )
    scheduler = Scheduler(cache, leases.leader_store, clock=time.time)
    orchestrator = Orchestrator(cache, leases.leader_store, time.time, scheduler)
    loops = leader_loops(stores, leases, period, scheduler, orchestrator)
    metrics.StateCounts(cache)
    return CoreParts(
        heartbeat_period=period,
        dispatcher=dispatcher,
        scheduler=scheduler,
        orchestrator=orchestrator,
        leadership=Leadership(
            stores.client, stores.keys, identity.manager_id, leases.lease, partial(_lead, loops)
        ),
        events=EventLog(cache),
        ca=NodeCAService(cache, stores.store),
        peers=peers,
    )


def leader_loops(
    stores: StoreParts,
    leases: LeaseParts,
    heartbeat_period: float,
    scheduler: Scheduler,
    orchestrator: Orchestrator,
) -> list[Loop]:
    """What only the leader runs, writing through the leader's store: a new leader-only
    reconciler is one line here."""
    cache, store = stores.cache, leases.leader_store
    return [
        ("orchestrator", orchestrator.run),
        ("scheduler", scheduler.run),
        ("taskreaper", TaskReaper(cache, store).run),
        ("constraintenforcer", ConstraintEnforcer(cache, store, time.time).run),
        ("allocator", Allocator(cache, store).run),
        ("nodehealth", NodeHealth(cache, store, heartbeat_period, time.monotonic).run),
        ("compactor", Compactor(stores.client, cache).run),
    ]


async def _lead(loops: list[Loop]) -> None:
    """Run the leader's loops for as long as this manager leads: until one of them has a
    write refused for not being the leader's (Leadership cancels it when the key goes)."""
    deposed = asyncio.Event()

    def guarded(run: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def runner() -> None:
            try:
                await run()
            except NotLeaderError:
                deposed.set()

        return runner

    running = [supervise(name, guarded(run)) for name, run in loops]
    try:
        await deposed.wait()
        _log.warning("a leader write was refused: leadership lost")
    finally:
        await cancel_all(running)


def _peers(cache: Cache) -> list[dispatcher_pb2.ManagerPeer]:
    """The managers present (their dispatcher addresses), for agents to fail over to."""
    present = cache.objects[Kind.MANAGER].values()
    return [
        dispatcher_pb2.ManagerPeer(node_id=p.id, addr=p.dispatcher_addr)
        for p in sorted(present, key=lambda p: p.id)
    ]


def _heartbeat_period(cache: Cache, config: ManagerConfig) -> float:
    """The cluster's heartbeat period (every manager uses the same one)."""
    cluster = cache.cluster()
    if cluster is not None and cluster.spec.dispatcher.HasField("heartbeat_period"):
        seconds = duration_seconds(cluster.spec.dispatcher.heartbeat_period)
        if seconds > 0:
            return seconds
    return config.heartbeat_period


# ---- the gRPC servers -----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ServingParts:
    """Where the manager serves: the dispatcher's port and advertised address, the CA's."""

    dispatcher_port: int
    advertised: str
    ca_addr: str
    logs: LogBroker


async def serve(
    stack: contextlib.AsyncExitStack,
    config: ManagerConfig,
    stores: StoreParts,
    identity: IdentityParts,
    leases: LeaseParts,
    core: CoreParts,
) -> ServingParts:
    """Dispatcher and CA on TCP, then the control API: the unix socket last, so that a
    `swarmctl` (or a test) that sees the manager up can join nodes at once."""
    servers = listeners.Servers()
    stack.push_async_callback(servers.stop, 1.0)
    tls = identity.tls
    dispatcher_server, port = listeners.bind_dispatcher(
        config.listen_addr, tls.server_credentials(require_client_auth=True)
    )
    advertised = config.advertise_addr or f"{config.listen_host}:{port}"
    # Log lines come to this manager's dispatcher port from the agents.
    logs = LogBroker(stores.cache, stores.store, leases.lease, publisher_addr=advertised)
    await listeners.start_dispatcher(dispatcher_server, core.dispatcher, core.ca, logs)
    servers.add(dispatcher_server)
    ca_addr = pki.ca_address(f"{config.listen_host}:{port}")
    servers.add(
        await listeners.serve_ca(
            core.ca, ca_addr, tls.server_credentials(require_client_auth=False)
        )
    )
    control = partial(_control_api, stores, leases, core, logs, ServiceCounts(stores.cache))
    servers.add(await listeners.serve_control(control(None), config.control_socket))
    if config.control_addr:
        cluster_id = stores.cache.cluster().id  # type: ignore[union-attr]

        def admins_only(context: Context) -> None:
            authz.require(context, cluster_id, (pki.ROLE_ADMIN, pki.ROLE_MANAGER))

        servers.add(
            await listeners.serve_control_tcp(
                control(admins_only),
                config.control_addr,
                tls.server_credentials(require_client_auth=True),
            )
        )
    return ServingParts(dispatcher_port=port, advertised=advertised, ca_addr=ca_addr, logs=logs)


def _control_api(
    stores: StoreParts,
    leases: LeaseParts,
    core: CoreParts,
    logs: LogBroker,
    counts: ServiceCounts,
    authorize: Callable[[Context], None] | None,
) -> ControlAPI:
    """The control API for one listener (`authorize`: who may call it over TCP); the
    listeners share everything else."""
    scheduler, leadership = core.scheduler, core.leadership
    return ControlAPI(
        stores.cache,
        stores.store,
        core.dispatcher.close_node,
        lambda tasks, replacing: scheduler.preview(tasks, without_service=replacing),
        authorize,
        manager_addrs=lambda: [p.addr for p in core.peers()],
        health=leases.health,
        leader_id=lambda: leadership.leader_id,
        logs=logs,
        events=core.events,
        counts=counts,
    )


# ---- the loops ------------------------------------------------------------------------


def service_loops(
    stores: StoreParts,
    identity: IdentityParts,
    leases: LeaseParts,
    core: CoreParts,
    serving: ServingParts,
) -> list[Loop]:
    """What every manager runs for as long as it runs (the leader's loops run inside
    "leadership")."""
    lease, dispatcher = leases.lease, core.dispatcher
    return [
        ("lease", lease.run),
        (
            "presence",
            partial(announce_forever, stores.store, lease, identity.manager_id, serving.advertised),
        ),
        ("leadership", core.leadership.run),
        ("etcd.health", leases.health.run),
        ("ca.renew", identity.tls.renew_forever),
        ("dispatcher.sessionkeys", leases.session_keys.run),
        ("dispatcher.heartbeats", dispatcher.expire_sessions),
        ("dispatcher.status", dispatcher.status_writer.run),
        ("dispatcher.registrations", dispatcher.registrations.run),
        ("dispatcher.networks", dispatcher.network_views.run),
    ]


async def hand_over(core: CoreParts) -> None:
    """The first thing on the way out: resign, and end the agents' sessions, so that
    another manager takes over at once."""
    await core.leadership.resign()
    core.dispatcher.close_all()
