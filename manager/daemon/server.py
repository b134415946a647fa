"""Runs the manager until asked to stop: the stages of `stages` in order, on one
`AsyncExitStack` that undoes them in the reverse order.

Start-up order: state dir (locked, mode 0700) -> etcd (embedded child or --etcd) ->
store and cache (first list) -> cluster object -> this manager as a node (joining with
the manager token if the cluster exists) -> its lease -> gRPC servers (dispatcher and
CA on TCP, then the control API: on TCP with --control-addr, on the unix socket last)
-> the lease, presence, leader election and the dispatcher's loops. The reconcilers run
only while this manager is the leader.
Shutdown resigns leadership and ends the agents' sessions first, then stops the
servers, the loops, and revokes the lease, so another manager takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from common.log import get_logger
from common.metrics import MetricsEndpoint, serve_metrics
from manager.daemon import memalloc, stages
from manager.daemon.config import ManagerConfig, ManagerError
from manager.dispatcher import Dispatcher
from manager.leadership.election import Leadership
from manager.orchestrator.orchestrator import Orchestrator
from manager.scheduler import Scheduler
from manager.store import Cache, Store

__all__ = ["Manager", "ManagerConfig", "ManagerError", "running_manager", "serve"]

_log = get_logger("manager")


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


@contextlib.asynccontextmanager
async def running_manager(config: ManagerConfig) -> AsyncIterator[Manager]:
    """A manager serving until the context exits."""
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(os.close, _lock_state_dir(config.state_dir))
        stack.callback(config.control_socket.unlink, missing_ok=True)
        stores = await stages.open_store(stack, config)
        identity = await stages.join_cluster(config, stores)
        leases = stages.hold_lease(stack, config, stores, identity)
        core = stages.build_core(config, stores, identity, leases)
        # Stopped after the servers: calls in flight may need these loops to finish.
        loops = stages.Background()
        stack.push_async_callback(loops.stop)
        serving = await stages.serve(stack, config, stores, identity, leases, core)
        loops.start(stages.service_loops(stores, identity, leases, core, serving))
        endpoint = serve_metrics(config.metrics_addr) if config.metrics_addr else None
        if endpoint is not None:
            stack.callback(endpoint.close)
        _log_ready(config, stores, identity, serving, endpoint)
        stack.push_async_callback(stages.hand_over, core)
        yield Manager(
            config,
            stores.store,
            stores.cache,
            core.dispatcher,
            core.scheduler,
            core.orchestrator,
            serving.dispatcher_port,
            core.leadership,
        )


def _lock_state_dir(state_dir: Path) -> int:
    """Make the state dir (0700) and hold its lock: one manager per state dir."""
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


def _log_ready(
    config: ManagerConfig,
    stores: stages.StoreParts,
    identity: stages.IdentityParts,
    serving: stages.ServingParts,
    metrics: MetricsEndpoint | None,
) -> None:
    _log.info(
        "manager ready",
        metrics_host=metrics.host if metrics else None,
        metrics_port=metrics.port if metrics else None,
        manager_id=identity.manager_id,
        control_socket=str(config.control_socket),
        dispatcher=serving.advertised,
        ca=serving.ca_addr,
        etcd=stores.etcd.display,
        embedded_etcd=stores.embedded,
        control_tcp=config.control_addr or None,
        admin_certificates=str(identity.admin_dir),
        local_agent_state_dir=str(identity.local_node_dir),
        allocator=memalloc.in_use(),
    )


async def serve(config: ManagerConfig, stop: asyncio.Event) -> None:
    """Run a manager until `stop` is set."""
    async with running_manager(config):
        await stop.wait()
        _log.info("manager stopping")
    _log.info("manager stopped")
