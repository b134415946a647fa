"""Leader election through an etcd lease.

The leader is the manager whose lease holds the leader key (its value is the manager's
id). A manager campaigns by creating the key if it is absent; otherwise it watches the
key and campaigns again as soon as it is deleted (its holder stopped or its lease
expired). Only the leader runs the reconcilers; every leader write is guarded by a
compare on the leader key, so a deposed leader's late writes fail instead of racing
the new leader's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from etcd3aio import Etcd3Client, EtcdError
from etcd3aio.kv import KVService

from common.log import get_logger
from manager.leadership.lease import ManagerLease
from manager.metrics import LEADER
from manager.store.keys import KeySpace

_log = get_logger("leadership")
_DELETE = 1


class Leadership:
    """Campaigns while the manager runs; calls `lead()` for as long as it leads."""

    def __init__(
        self,
        client: Etcd3Client,
        keys: KeySpace,
        manager_id: str,
        lease: ManagerLease,
        lead: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        assert client.kv is not None
        assert client.watch is not None
        self._kv = client.kv
        self._watch = client.watch
        self.key = keys.leader_key
        self.manager_id = manager_id
        self.lease = lease
        self._lead = lead
        self.is_leader = False
        self.leader_id = ""
        self.terms = 0
        self._revision = 0

    async def run(self) -> None:
        while True:
            await self.lease.granted.wait()
            try:
                won = await self._campaign()
            except (EtcdError, TimeoutError, grpc.aio.AioRpcError) as exc:
                _log.warning("cannot campaign yet", error=str(exc))
                await asyncio.sleep(0.3)
                continue
            if won:
                await self._hold()
            else:
                await self._wait_for_vacancy()

    async def _campaign(self) -> bool:
        lease_id = self.lease.id
        if not lease_id:
            return False
        response = await self._kv.txn(
            [KVService.txn_compare_create_revision(self.key, 0)],
            [KVService.txn_op_put(self.key, self.manager_id, lease=lease_id)],
            [KVService.txn_op_get(self.key)],
            timeout=5,
        )
        self._revision = response.header.revision
        if response.succeeded:
            self.leader_id = self.manager_id
            return True
        kvs = response.responses[0].response_range.kvs
        self.leader_id = kvs[0].value.decode() if kvs else ""
        if self.leader_id == self.manager_id:
            # Our own key from before a restart of the loop, on a lease we no longer hold.
            await self._kv.delete(self.key, timeout=5)
            return False
        return False

    async def _hold(self) -> None:
        self.is_leader = True
        LEADER.set(1)
        self.terms += 1
        _log.info("became the leader", manager_id=self.manager_id, term=self.terms)
        leading = asyncio.create_task(self._lead(), name="leader")
        lost = asyncio.create_task(self.lease.lost.wait())
        try:
            await asyncio.wait({leading, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.is_leader = False
            LEADER.set(0)
            leading.cancel()
            lost.cancel()
            await asyncio.gather(leading, lost, return_exceptions=True)
            _log.warning("no longer the leader", manager_id=self.manager_id)

    async def _wait_for_vacancy(self) -> None:
        """Return when the leader key is deleted (or after a while, to check again)."""
        _log.info("following", leader=self.leader_id or None)
        try:
            async with asyncio.timeout(30):
                async for response in self._watch.watch(
                    self.key, start_revision=self._revision + 1
                ):
                    for ev in response.events:
                        if ev.type == _DELETE:
                            self.leader_id = ""
                            return
                        self.leader_id = ev.kv.value.decode()
                    if self.lease.lost.is_set():
                        return
        except TimeoutError:
            return

    async def resign(self) -> None:
        """Give up leadership at shutdown, so another manager takes over at once."""
        if not self.is_leader:
            return
        with contextlib.suppress(EtcdError, TimeoutError, grpc.aio.AioRpcError):
            await self._kv.txn(
                [KVService.txn_compare_value(self.key, self.manager_id)],
                [KVService.txn_op_delete(self.key)],
                timeout=2,
            )
