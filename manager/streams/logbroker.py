"""The manager's side of service logs.

A client's ServiceLogs call becomes a subscription: recorded in etcd on this manager's
lease (so every manager sees it and tells its agents, and it vanishes if this manager
dies), and a local queue. Agents publish the lines of matching tasks straight to this
manager (LogBroker.PublishLogs over mutual TLS); the lines go to the client as they
come. Without --follow the call ends when every node that ran a matching task has said
it sent everything (or, for nodes that cannot answer, after a quiet spell).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from common import pki, states
from common.api import logs_pb2, logs_pb2_grpc
from common.ids import new_id
from common.log import get_logger
from manager.ca import authz
from manager.grpc_errors import Context, abort_on_store_errors
from manager.leadership.lease import ManagerLease
from manager.store import Cache, Store

_log = get_logger("logbroker")
# Without --follow, stop waiting for silent nodes after this long without a line.
QUIET_END = 5.0


@dataclass
class _Local:
    queue: asyncio.Queue[list[logs_pb2.LogMessage] | str] = field(
        default_factory=lambda: asyncio.Queue(10_000)
    )


def selected_tasks(cache: Cache, selector: logs_pb2.LogSelector) -> list[object]:
    tasks: dict[str, object] = {}
    for sid in selector.service_ids:
        tasks.update(cache.tasks_by_service.get(sid, {}))
    for tid in selector.task_ids:
        task = cache.tasks.get(tid)
        if task is not None:
            tasks[tid] = task
    return list(tasks.values())


class LogBroker(logs_pb2_grpc.LogBrokerServicer):
    """Subscriptions of this manager's clients, fed by the agents."""

    def __init__(
        self, cache: Cache, store: Store, lease: ManagerLease, publisher_addr: str
    ) -> None:
        self.cache = cache
        self.store = store
        self.lease = lease
        self.publisher_addr = publisher_addr
        self._local: dict[str, _Local] = {}

    async def subscribe(
        self, selector: logs_pb2.LogSelector, options: logs_pb2.LogOptions
    ) -> AsyncIterator[list[logs_pb2.LogMessage]]:
        sub = logs_pb2.LogSubscription(
            id=new_id(), selector=selector, options=options, publisher_addr=self.publisher_addr
        )
        expected = {
            t.node_id  # type: ignore[attr-defined]
            for t in selected_tasks(self.cache, selector)
            if t.node_id and t.status.state >= states.ACCEPTED  # type: ignore[attr-defined]
        }
        if not options.follow and not expected:
            return
        local = _Local()
        self._local[sub.id] = local
        await self.lease.granted.wait()
        await self.store.put_leased([sub], self.lease.id)
        closed: set[str] = set()
        try:
            while True:
                timeout = None if options.follow else QUIET_END
                try:
                    item = await asyncio.wait_for(local.queue.get(), timeout)
                except TimeoutError:
                    return  # the nodes still owed are not answering
                if isinstance(item, str):
                    closed.add(item)
                    if not options.follow and expected <= closed:
                        return
                    continue
                yield item
        finally:
            self._local.pop(sub.id, None)
            try:
                await self.store.delete_if_unchanged(sub)
            except Exception as exc:  # the lease will take it away anyway
                _log.warning("could not delete a log subscription", error=str(exc))

    async def PublishLogs(
        self,
        request_iterator: AsyncIterator[logs_pb2.PublishLogsMessage],
        context: Context,
    ) -> logs_pb2.PublishLogsResponse:
        async with abort_on_store_errors(context):
            cluster = self.cache.cluster()
            assert cluster is not None
            node_id = authz.require(
                context, cluster.id, (pki.ROLE_WORKER, pki.ROLE_MANAGER)
            ).node_id
        async for message in request_iterator:
            local = self._local.get(message.subscription_id)
            if local is None:
                continue  # the client went away
            if message.messages:
                batch = list(message.messages)
                for m in batch:
                    m.context.node_id = node_id
                if local.queue.full():
                    local.queue.get_nowait()  # a client that cannot keep up loses lines
                local.queue.put_nowait(batch)
            if message.close:
                local.queue.put_nowait(node_id)
        return logs_pb2.PublishLogsResponse()
