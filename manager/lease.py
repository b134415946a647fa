"""The manager's etcd lease: what it holds for as long as it is alive.

One lease per manager carries its presence key, the session keys of the nodes it
serves, and (when it leads) the leader key. The lease is kept alive every TTL/3; if
that fails long enough for the lease to expire, everything it carried is gone from
etcd, `lost` fires and a new lease is granted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc
from etcd3aio import Etcd3Client, EtcdError
from etcd3aio._protobuf import LeaseKeepAliveRequest

from common.log import get_logger

_log = get_logger("lease")


class ManagerLease:
    """Grants and keeps alive one lease; `id` is 0 while there is none."""

    def __init__(self, client: Etcd3Client, ttl: int) -> None:
        assert client.lease is not None
        self._lease = client.lease
        # What was asked for; `ttl` is what etcd granted (it raises a TTL below its
        # minimum, 1.5 election timeouts: 2 s with etcd's defaults).
        self.requested_ttl = max(1, int(ttl))
        self.ttl = self.requested_ttl
        self.id = 0
        self.granted = asyncio.Event()
        self.lost = asyncio.Event()
        self._generation = 0

    @property
    def generation(self) -> int:
        """Bumped on every new lease: whatever was put on the old one is gone."""
        return self._generation

    async def run(self) -> None:
        while True:
            try:
                response = await self._lease.grant(self.requested_ttl, timeout=self.requested_ttl)
            except (EtcdError, TimeoutError, grpc.aio.AioRpcError) as exc:
                _log.warning("cannot get an etcd lease yet", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            granted = int(response.TTL) or self.requested_ttl
            if granted != self.ttl:
                _log.warning(
                    "etcd granted another lease TTL than asked; keeping that one alive",
                    asked=self.requested_ttl,
                    granted=granted,
                    hint="etcd's minimum lease TTL is 1.5 election timeouts (--election-timeout)",
                )
            # Keep-alives go every TTL/3 of the TTL etcd counts. (Timed on a TTL of 1 s
            # that etcd had raised to 2 s, they went every 0.33 s, and a dead leader's
            # lease outlived it by 1.67-2 s instead of 1.33-2 s.)
            self.ttl = granted
            self.id = int(response.ID)
            self._generation += 1
            self.lost.clear()
            self.granted.set()
            _log.info("lease granted", lease=hex(self.id), ttl=self.ttl)
            await self._keep_alive()
            _log.warning("lease lost", lease=hex(self.id))
            self.id = 0
            self.granted.clear()
            self.lost.set()

    async def _keep_alive(self) -> None:
        """Refresh the lease every TTL/3 until it expires or etcd stops answering."""
        interval = self.ttl / 3
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ttl
        while loop.time() < deadline:
            ticks: asyncio.Queue[None] = asyncio.Queue()

            async def requests(
                ticks: asyncio.Queue[None] = ticks,
            ) -> AsyncIterator[LeaseKeepAliveRequest]:
                while True:
                    await ticks.get()
                    yield LeaseKeepAliveRequest(ID=self.id)

            call = self._lease._stub.LeaseKeepAlive(requests())
            try:
                while True:
                    ticks.put_nowait(None)
                    response = await asyncio.wait_for(call.read(), interval * 2)
                    if response is grpc.aio.EOF:
                        raise ConnectionError("keep-alive stream closed")
                    if response.TTL <= 0:
                        return  # expired: everything on it is gone
                    deadline = loop.time() + response.TTL
                    await asyncio.sleep(interval)
            except (grpc.aio.AioRpcError, TimeoutError, ConnectionError) as exc:
                _log.warning("lease keep-alive failed; retrying", error=type(exc).__name__)
                await asyncio.sleep(min(interval, max(0.05, deadline - loop.time())))
            finally:
                call.cancel()

    async def revoke(self) -> None:
        if self.id:
            with contextlib.suppress(EtcdError, TimeoutError, grpc.aio.AioRpcError):
                await self._lease.revoke(self.id, timeout=2)
            self.id = 0
