"""The network view every agent gets (protos/network.proto): built from the cache, kept
as one message that is rebuilt only when something it shows has changed, so a session
sends it as it is.

A task is in the view while it has addresses, is assigned to a node and has not ended;
it is `serving` (a backend of its service's virtual IPs and published ports) only while
it runs (healthy, where it has a health check: the agent reports RUNNING only then) and
is wanted running, so a task leaves every node's rotation as soon as the manager decides
to stop it, before its agent stops its container.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from common import states
from common.api import network_pb2, objects_pb2, types_pb2
from manager.store import Event, Kind
from manager.store.views import CacheTables


def in_view(task: objects_pb2.Task | None) -> bool:
    return (
        task is not None
        and bool(task.networks)
        and bool(task.node_id)
        and not states.is_terminal(task.status.state)
    )


def serving(task: objects_pb2.Task) -> bool:
    return task.status.state == states.RUNNING and task.desired_state == states.RUNNING


def build_view(cache: CacheTables) -> network_pb2.NetworkView:
    view = network_pb2.NetworkView()
    networks = cache.networks
    networks = cache.networks
    for net in sorted(networks.values(), key=lambda n: n.id):
        if net.allocation.subnet:
            view.networks.append(net)
    for service in cache.services.values():
        if service.endpoint.virtual_ips or service.endpoint.ports or _has_networks(service):
            view.services.add(
                id=service.id, name=service.spec.annotations.name, endpoint=service.endpoint
            )
    for task in cache.tasks.values():
        if in_view(task):
            view.tasks.add(
                id=task.id,
                service_id=task.service_id,
                node_id=task.node_id,
                serving=serving(task),
                networks=task.networks,
            )
    # Nodes' own ingress addresses only while some service publishes through the mesh,
    # and underlay addresses only of the nodes the view names: a cluster that uses no
    # network sends every agent an (almost) empty view, whatever its size.
    ingress = next((n.id for n in networks.values() if n.spec.ingress), "")
    meshed = ingress and any(
        p.publish_mode == types_pb2.PUBLISH_MODE_INGRESS
        for s in view.services
        for p in s.endpoint.ports
    )
    named = {t.node_id for t in view.tasks}
    for node in cache.nodes.values():
        for attachment in node.attachments:
            if meshed and attachment.network_id == ingress and attachment.addresses:
                view.node_ingress[node.id] = attachment.addresses[0]
                named.add(node.id)
        if node.id in named and node.status.addr:
            view.hosts[node.id] = node.status.addr
    return view


def _has_networks(service: objects_pb2.Service) -> bool:
    return bool(service.spec.task.networks)


def changes_view(ev: Event) -> bool:
    """Whether a cache change may change the view (most task status reports do not)."""
    if ev.kind in (Kind.NETWORK, Kind.SERVICE):
        return True
    if ev.kind is Kind.NODE:
        old, new = ev.old, ev.new
        return (
            old is None
            or new is None
            or old.status.addr != new.status.addr
            or list(old.attachments) != list(new.attachments)
        )
    if ev.kind is Kind.TASK:
        old, new = ev.old, ev.new
        if not in_view(old) and not in_view(new):
            return False
        if old is None or new is None:
            return True
        return (
            in_view(old) != in_view(new)
            or serving(old) != serving(new)
            or old.node_id != new.node_id
        )
    return False


class NetworkViews:
    """The current view, rebuilt (debounced) when a change may alter it; `version`
    moves only when its content did, and sessions send it when theirs is older."""

    DEBOUNCE = 0.05

    def __init__(self, cache: CacheTables, on_change: Callable[[], None]) -> None:
        self.cache = cache
        self.on_change = on_change
        self.view = network_pb2.NetworkView()
        self.version = 0
        self._bytes = b""
        self._dirty = asyncio.Event()
        self._dirty.set()

    def note(self, ev: Event) -> None:
        if changes_view(ev):
            self._dirty.set()

    async def run(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.DEBOUNCE)
            self._dirty.clear()
            view = build_view(self.cache)
            data = view.SerializeToString(deterministic=True)
            if data != self._bytes:
                self._bytes = data
                self.view = view
                self.version += 1
                self.on_change()
