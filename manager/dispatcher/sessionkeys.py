"""Session keys: every manager records, on its own etcd lease, which nodes hold a session
with it. The leader's node health reads them (from the cache) to know which nodes are
connected to any manager; when a manager dies its lease expires and its keys vanish.

Writes are batched; when the lease is replaced (it expired while etcd was away), all
current sessions are written again on the new one.
"""

from __future__ import annotations

import asyncio

from common.api import objects_pb2
from common.log import get_logger
from manager.leadership.lease import ManagerLease
from manager.store import Store, StoreError

_log = get_logger("dispatcher.sessionkeys")


class SessionKeys:
    """The session keys of this manager's sessions."""

    def __init__(self, store: Store, lease: ManagerLease, manager_id: str) -> None:
        self.store = store
        self.lease = lease
        self.manager_id = manager_id
        self.current: dict[str, objects_pb2.NodeSession] = {}
        self._to_put: dict[str, objects_pb2.NodeSession] = {}
        self._to_delete: list[objects_pb2.NodeSession] = []
        self._wake = asyncio.Event()

    def opened(self, node_id: str, session_id: str, addr: str) -> None:
        record = objects_pb2.NodeSession(
            id=node_id, manager_id=self.manager_id, session_id=session_id, addr=addr
        )
        self.current[node_id] = record
        self._to_put[node_id] = record
        self._wake.set()

    def closed(self, node_id: str, session_id: str) -> None:
        record = self.current.get(node_id)
        if record is None or record.session_id != session_id:
            return
        del self.current[node_id]
        self._to_put.pop(node_id, None)
        self._to_delete.append(record)
        self._wake.set()

    async def run(self) -> None:
        generation = 0
        while True:
            if not self.lease.id:
                await self.lease.granted.wait()
            if self.lease.generation != generation:
                # A new lease: whatever the old one carried is gone; write everything again.
                generation = self.lease.generation
                self._to_put = dict(self.current)
            if not self._to_put and not self._to_delete:
                self._wake.clear()
                waiter = asyncio.ensure_future(self._wake.wait())
                lost = asyncio.ensure_future(self.lease.lost.wait())
                await asyncio.wait({waiter, lost}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                lost.cancel()
                continue
            puts, self._to_put = list(self._to_put.values()), {}
            deletes, self._to_delete = self._to_delete, []
            try:
                if puts:
                    await self.store.put_leased(puts, self.lease.id)
                for record in deletes:
                    await self.store.delete_if_unchanged(record)
            except StoreError as exc:
                _log.warning("could not write session keys; retrying", error=str(exc))
                for record in puts:
                    if self.current.get(record.id) is record:
                        self._to_put.setdefault(record.id, record)
                self._to_delete.extend(deletes)
                await asyncio.sleep(0.5)
