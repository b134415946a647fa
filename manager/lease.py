"""The manager's etcd lease: what it holds for as long as it is alive.

One lease per manager carries its presence key, the session keys of the nodes it
serves, and (when it leads) the leader key. The lease is kept alive every TTL/3; if
that fails long enough for the lease to expire, everything it carried is gone from
etcd, `lost` fires and a new lease is granted.

The keep-alives are sent from the store's side thread, with its own event loop and
etcd connection (`SideThread`): a manager whose event loop is busy for longer than the
TTL (thousands of tasks being placed and reported at once) must not lose its lease,
and with it its leadership and every session it holds, for being busy. A manager
whose loop makes no progress at all for MAX_STALL seconds (hung, not busy) stops
keeping its lease alive, so another manager takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable

import grpc
from etcd3aio import Etcd3Client, EtcdError
from etcd3aio._protobuf import LeaseKeepAliveRequest
from etcd3aio.lease import LeaseService

from common.log import get_logger
from manager.store.etcd import describe
from manager.store.side import SideThread

_log = get_logger("lease")
# A manager whose event loop has not run for this long is taken for hung: its lease is
# let go. Busy loops run at least every few hundred milliseconds.
MAX_STALL = 15.0
# How often the event loop tells the keep-alive thread that it runs.
_BEAT = 0.25


class ManagerLease:
    """Grants and keeps alive one lease; `id` is 0 while there is none.

    With `side` the keep-alives run on that thread; without, on the event loop.
    """

    def __init__(self, client: Etcd3Client, ttl: int, side: SideThread | None = None):
        assert client.lease is not None
        self._lease = client.lease
        self._side = side
        # What was asked for; `ttl` is what etcd granted (it raises a TTL below its
        # minimum, 1.5 election timeouts: 2 s with etcd's defaults).
        self.requested_ttl = max(1, int(ttl))
        self.ttl = self.requested_ttl
        self.id = 0
        self.granted = asyncio.Event()
        self.lost = asyncio.Event()
        self._generation = 0
        self._last_beat = time.monotonic()

    @property
    def generation(self) -> int:
        """Bumped on every new lease: whatever was put on the old one is gone."""
        return self._generation

    def _loop_alive(self) -> bool:
        return time.monotonic() - self._last_beat < MAX_STALL

    async def _beat(self) -> None:
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(_BEAT)

    async def run(self) -> None:
        beat = asyncio.create_task(self._beat(), name="lease-beat")
        try:
            await self._run()
        finally:
            beat.cancel()

    async def _run(self) -> None:
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
            if self._side is not None:
                await self._side.run(
                    functools.partial(_keep_alive_on, self.id, self.ttl, self._loop_alive)
                )
            else:
                await keep_alive(self._lease, self.id, self.ttl, self._loop_alive)
            _log.warning("lease lost", lease=hex(self.id))
            self.id = 0
            self.granted.clear()
            self.lost.set()

    async def revoke(self) -> None:
        if self.id:
            with contextlib.suppress(EtcdError, TimeoutError, grpc.aio.AioRpcError):
                await self._lease.revoke(self.id, timeout=2)
            self.id = 0


async def _keep_alive_on(
    lease_id: int, ttl: int, alive: Callable[[], bool], client: Etcd3Client
) -> None:
    assert client.lease is not None
    await keep_alive(client.lease, lease_id, ttl, alive)


async def keep_alive(
    lease: LeaseService, lease_id: int, ttl: int, alive: Callable[[], bool]
) -> None:
    """Refresh the lease every TTL/3 until it expires or etcd stops answering, or
    `alive()` says the manager hangs (then the lease is left to expire)."""
    interval = ttl / 3
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ttl
    hung = False
    while loop.time() < deadline:
        ticks: asyncio.Queue[None] = asyncio.Queue()

        async def requests(
            ticks: asyncio.Queue[None] = ticks,
        ) -> AsyncIterator[LeaseKeepAliveRequest]:
            while True:
                await ticks.get()
                yield LeaseKeepAliveRequest(ID=lease_id)

        call = lease._stub.LeaseKeepAlive(requests())
        try:
            while True:
                if not alive():
                    if not hung:
                        hung = True
                        _log.error(
                            "the manager's event loop has not run for a long time; letting "
                            "its lease expire so that another manager takes over",
                            stalled_for=MAX_STALL,
                        )
                    await asyncio.sleep(min(interval, max(0.05, deadline - loop.time())))
                    if loop.time() >= deadline:
                        return
                    continue
                ticks.put_nowait(None)
                response = await asyncio.wait_for(call.read(), interval * 2)
                if response is grpc.aio.EOF:
                    raise ConnectionError("keep-alive stream closed")
                if response.TTL <= 0:
                    return  # expired: everything on it is gone
                deadline = loop.time() + response.TTL
                await asyncio.sleep(interval)
        except (grpc.aio.AioRpcError, TimeoutError, ConnectionError) as exc:
            _log.warning(
                "lease keep-alive failed; retrying",
                error=type(exc).__name__,
                detail=describe(exc),
                lease_left=round(deadline - loop.time(), 2),
            )
            await asyncio.sleep(min(interval, max(0.05, deadline - loop.time())))
        finally:
            call.cancel()
