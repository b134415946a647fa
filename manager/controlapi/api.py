"""The Control gRPC servicer: each method checks its request, reads the cache, writes
through the store, and answers with a proper status code on every failure."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from common.api import control_pb2, control_pb2_grpc, logs_pb2, objects_pb2
from manager.controlapi import cluster, networks, nodes, services, tasks
from manager.controlapi.chunks import Serialized, check_size, chunked
from manager.controlapi.counts import ServiceCounts
from manager.domain.placer import Previewer
from manager.grpc_errors import (
    Context,
    FailedPreconditionError,
    InvalidArgumentError,
    abort_on_store_errors,
    rpc,
)
from manager.store import Cache, StoreUnavailableError
from manager.store.health import EtcdHealth
from manager.store.views import ObjectWriter
from manager.streams.events import EventLog
from manager.streams.logbroker import LogBroker

_WRITES = ("Create", "Update", "Remove", "Rebalance", "Prune")


class ControlAPI(control_pb2_grpc.ControlServicer):
    """Serves swarmctl. `on_node_removed` lets the dispatcher drop a removed node's session."""

    def __init__(
        self,
        cache: Cache,
        store: ObjectWriter,
        on_node_removed: Callable[[str], None],
        previewer: Previewer,
        authorize: Callable[[Context], None] | None = None,
        manager_addrs: Callable[[], list[str]] = list,
        health: EtcdHealth | None = None,
        leader_id: Callable[[], str] = str,
        logs: LogBroker | None = None,
        events: EventLog | None = None,
        counts: ServiceCounts | None = None,
    ) -> None:
        self.cache = cache
        # Kept from the change stream; the unix and TCP listeners share one.
        self.counts = counts if counts is not None else ServiceCounts(cache)
        self.store = store
        self.on_node_removed = on_node_removed
        self.previewer = previewer
        # Set for the TCP listener: only admin or manager certificates of this cluster.
        self._authorize = authorize
        self.manager_addrs = manager_addrs
        self.health = health
        self.leader_id = leader_id
        self.logs = logs
        self.events = events

    def authorize(self, context: Context, method: str) -> None:
        """Called before every method (by @rpc): the caller's certificate, then etcd."""
        if self._authorize is not None:
            self._authorize(context)
        if self.health is not None:
            if self.health.problem:
                raise StoreUnavailableError(self.health.problem)
            if self.health.alarm and method.startswith(_WRITES):
                raise StoreUnavailableError(self.health.alarm)

    def _node(self, node: objects_pb2.Node) -> objects_pb2.Node:
        return nodes.with_manager_status(node, self.cache, self.leader_id())

    # ---- nodes ----

    @rpc
    async def GetNode(
        self, request: control_pb2.GetNodeRequest, context: Context
    ) -> control_pb2.GetNodeResponse:
        return control_pb2.GetNodeResponse(
            node=self._node(nodes.find_node(self.cache, request.node_id))
        )

    def _list_nodes(self, request: control_pb2.ListNodesRequest) -> control_pb2.ListNodesResponse:
        response = nodes.list_nodes(self.cache, request)
        decorated = [self._node(n) for n in response.nodes]
        del response.nodes[:]
        response.nodes.extend(decorated)
        return response

    @rpc
    async def ListNodes(
        self, request: control_pb2.ListNodesRequest, context: Context
    ) -> control_pb2.ListNodesResponse:
        response = self._list_nodes(request)
        check_size(response.ByteSize(), len(response.nodes), "nodes", "ListNodesStream")
        return response

    async def ListNodesStream(  # type: ignore[override]
        self, request: control_pb2.ListNodesRequest, context: Context
    ) -> AsyncIterator[Serialized]:
        """ListNodes in parts (chunks.py). Like every List*Stream it never waits, so
        the control server runs it in its calling thread (threaded.py)."""
        async with abort_on_store_errors(context):
            self.authorize(context, "ListNodesStream")
            with self.cache.lock:
                response = self._list_nodes(request)
        pieces = (
            control_pb2.ListNodesResponse(nodes=[n]).SerializeToString() for n in response.nodes
        )
        for part in chunked(pieces):
            yield part

    @rpc
    async def UpdateNode(
        self, request: control_pb2.UpdateNodeRequest, context: Context
    ) -> control_pb2.UpdateNodeResponse:
        return await nodes.update_node(self.cache, self.store, request)

    @rpc
    async def RemoveNode(
        self, request: control_pb2.RemoveNodeRequest, context: Context
    ) -> control_pb2.RemoveNodeResponse:
        return await nodes.remove_node(self.cache, self.store, request, self.on_node_removed)

    # ---- tasks ----

    @rpc
    async def GetTask(
        self, request: control_pb2.GetTaskRequest, context: Context
    ) -> control_pb2.GetTaskResponse:
        return tasks.get_task(self.cache, request)

    @rpc
    async def ListTasks(  # type: ignore[override]
        self, request: control_pb2.ListTasksRequest, context: Context
    ) -> tasks.Serialized:
        # Already serialized (tasks.list_tasks says why): controlapi/threaded.py, which
        # serves this API, encodes it as it would a ListTasksResponse.
        return tasks.list_tasks(self.cache, request)

    async def ListTasksStream(  # type: ignore[override]
        self, request: control_pb2.ListTasksRequest, context: Context
    ) -> AsyncIterator[Serialized]:
        """ListTasks in parts: `service ps` of 100,000 tasks (chunks.py)."""
        async with abort_on_store_errors(context):
            self.authorize(context, "ListTasksStream")
            parts = tasks.list_tasks_stream(self.cache, request)
        for part in parts:
            yield part

    # ---- services ----

    @rpc
    async def CreateService(
        self, request: control_pb2.CreateServiceRequest, context: Context
    ) -> control_pb2.CreateServiceResponse:
        return await services.create_service(self.cache, self.store, request, self.previewer)

    @rpc
    async def GetService(
        self, request: control_pb2.GetServiceRequest, context: Context
    ) -> control_pb2.GetServiceResponse:
        return control_pb2.GetServiceResponse(
            service=services.find_service(self.cache, request.service_id)
        )

    @rpc
    async def ListServices(
        self, request: control_pb2.ListServicesRequest, context: Context
    ) -> control_pb2.ListServicesResponse:
        response = services.list_services(self.cache, request, self.counts)
        check_size(response.ByteSize(), len(response.services), "services", "ListServicesStream")
        return response

    async def ListServicesStream(  # type: ignore[override]
        self, request: control_pb2.ListServicesRequest, context: Context
    ) -> AsyncIterator[Serialized]:
        """ListServices in parts, each service with its counts (chunks.py)."""
        async with abort_on_store_errors(context):
            self.authorize(context, "ListServicesStream")
            with self.cache.lock:
                response = services.list_services(self.cache, request, self.counts)
        pieces = (
            control_pb2.ListServicesResponse(
                services=[s], statuses={s.id: response.statuses[s.id]}
            ).SerializeToString()
            for s in response.services
        )
        for part in chunked(pieces):
            yield part

    @rpc
    async def UpdateService(
        self, request: control_pb2.UpdateServiceRequest, context: Context
    ) -> control_pb2.UpdateServiceResponse:
        return await services.update_service(self.cache, self.store, request, self.previewer)

    @rpc
    async def RemoveService(
        self, request: control_pb2.RemoveServiceRequest, context: Context
    ) -> control_pb2.RemoveServiceResponse:
        return await services.remove_service(self.cache, self.store, request)

    @rpc
    async def RebalanceService(
        self, request: control_pb2.RebalanceServiceRequest, context: Context
    ) -> control_pb2.RebalanceServiceResponse:
        return await services.rebalance_service(self.cache, self.store, request)

    # ---- streams: logs and events ----

    async def ServiceLogs(
        self, request: control_pb2.ServiceLogsRequest, context: Context
    ) -> AsyncIterator[control_pb2.ServiceLogsMessage]:
        async with abort_on_store_errors(context):
            self.authorize(context, "ServiceLogs")
            if self.logs is None:
                raise FailedPreconditionError("this manager does not serve logs")
            if not request.service_ids and not request.task_ids:
                raise InvalidArgumentError("name at least one service or task")
            selector = logs_pb2.LogSelector(
                service_ids=[services.find_service(self.cache, r).id for r in request.service_ids],
                task_ids=[tasks.find_task(self.cache, r).id for r in request.task_ids],
            )
        async for batch in self.logs.subscribe(selector, request.options):
            yield control_pb2.ServiceLogsMessage(messages=batch)

    async def WatchEvents(
        self, request: control_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[control_pb2.EventMessage]:
        async with abort_on_store_errors(context):
            self.authorize(context, "WatchEvents")
            unknown = set(request.types) - {"service", "task", "node"}
            if unknown:
                raise InvalidArgumentError(
                    f"unknown event type {sorted(unknown)[0]!r}: use service, task or node"
                )
            if self.events is None:
                raise FailedPreconditionError("this manager does not serve events")
        async for event in self.events.watch(request):
            yield event

    # ---- networks ----

    @rpc
    async def CreateNetwork(
        self, request: control_pb2.CreateNetworkRequest, context: Context
    ) -> control_pb2.CreateNetworkResponse:
        return await networks.create_network(self.cache, self.store, request)

    @rpc
    async def GetNetwork(
        self, request: control_pb2.GetNetworkRequest, context: Context
    ) -> control_pb2.GetNetworkResponse:
        return control_pb2.GetNetworkResponse(
            network=networks.find_network(self.cache, request.network_id)
        )

    @rpc
    async def ListNetworks(
        self, request: control_pb2.ListNetworksRequest, context: Context
    ) -> control_pb2.ListNetworksResponse:
        return networks.list_networks(self.cache, request)

    @rpc
    async def RemoveNetwork(
        self, request: control_pb2.RemoveNetworkRequest, context: Context
    ) -> control_pb2.RemoveNetworkResponse:
        return await networks.remove_network(self.cache, self.store, request)

    @rpc
    async def PruneNetworks(
        self, request: control_pb2.PruneNetworksRequest, context: Context
    ) -> control_pb2.PruneNetworksResponse:
        return await networks.prune_networks(self.cache, self.store, request)

    # ---- cluster ----

    @rpc
    async def GetCluster(
        self, request: control_pb2.GetClusterRequest, context: Context
    ) -> control_pb2.GetClusterResponse:
        return control_pb2.GetClusterResponse(
            cluster=cluster.redacted(cluster.get_cluster(self.cache)),
            manager_addrs=self.manager_addrs(),
        )

    @rpc
    async def UpdateCluster(
        self, request: control_pb2.UpdateClusterRequest, context: Context
    ) -> control_pb2.UpdateClusterResponse:
        return await cluster.update_cluster(self.cache, self.store, request)
