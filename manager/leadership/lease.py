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

A keep-alive answer that comes late does not mean the lease is gone: etcd renews a
lease when it reads the request, and under load the answer can reach the keep-alive
thread after the TTL it reported has run out on this side. So before giving the lease
up, the manager asks etcd how long the lease has left (`_confirm`), and keeps it when
etcd still holds it. (Giving it up for nothing costs the leader its term: every
reconciler stops and starts over, the event loop stalled 8.6 s in a 5,000-node run.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol, cast

import grpc
from etcd3aio import Etcd3Client, EtcdError
from etcd3aio._protobuf import LeaseKeepAliveRequest, LeaseKeepAliveResponse

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


class _KeepAliveCall(Protocol):
    async def read(self) -> object: ...

    def cancel(self) -> bool: ...


class _KeepAliveStub(Protocol):
    def LeaseKeepAlive(
        self, request_iterator: AsyncIterator[LeaseKeepAliveRequest], /
    ) -> _KeepAliveCall: ...


class _TimeToLive(Protocol):
    @property
    def TTL(self) -> int: ...


class KeptLease(Protocol):
    """What `keep_alive` asks of etcd3aio's LeaseService (which satisfies it): its
    keep-alive stream, and a lease's time to live when the answers come late."""

    @property
    def _stub(self) -> _KeepAliveStub: ...

    async def time_to_live(
        self, lease_id: int, *, timeout: float | None = None, max_attempts: int | None = None
    ) -> _TimeToLive: ...


async def keep_alive(lease: KeptLease, lease_id: int, ttl: int, alive: Callable[[], bool]) -> None:
    """Refresh the lease every TTL/3 until it expires or etcd stops answering, or
    `alive()` says the manager hangs (then the lease is left to expire).

    Requests go out on their own schedule, not after the previous answer: an answer
    that is late must not hold the next refresh back. Each answer moves the lease's
    deadline to TTL after its request was sent, which is when etcd renewed it at the
    latest.
    """
    interval = ttl / 3
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ttl
    hung = False

    def renewed(at: float, left: float) -> None:
        nonlocal deadline
        deadline = max(deadline, at + left)

    while True:
        ticks: asyncio.Queue[None] = asyncio.Queue()
        sent: deque[float] = deque()
        call = lease._stub.LeaseKeepAlive(_requests(lease_id, ticks))
        answers = asyncio.ensure_future(_read_answers(call, sent, renewed))
        try:
            while True:
                now = loop.time()
                if not alive():
                    if not hung:
                        hung = True
                        _log.error(
                            "the manager's event loop has not run for a long time; letting "
                            "its lease expire so that another manager takes over",
                            stalled_for=MAX_STALL,
                        )
                    if now >= deadline:
                        return
                else:
                    hung = False
                    if now >= deadline:
                        left = await _confirm(lease, lease_id, ttl)
                        if left < 0:
                            return
                        _log.warning(
                            "lease keep-alives came late, but etcd still holds the lease; "
                            "keeping it",
                            lease=hex(lease_id),
                            etcd_lease_left=left,
                        )
                        # etcd cuts the seconds left down to a whole number (0 means
                        # under one). A keep-alive goes out at once either way; should
                        # the lease run out before it lands, the leader's writes, which
                        # compare the leader key, fail.
                        renewed(loop.time(), max(left, interval))
                    sent.append(loop.time())
                    ticks.put_nowait(None)
                await asyncio.wait({answers}, timeout=interval)
                if answers.done():
                    answers.result()
                    return  # etcd answered that it no longer has the lease
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            _log.warning(
                "lease keep-alive failed; retrying",
                error=type(exc).__name__,
                detail=describe(exc),
                lease_left=round(deadline - loop.time(), 2),
            )
            await asyncio.sleep(min(interval, max(0.05, deadline - loop.time())))
        finally:
            answers.cancel()
            call.cancel()
            await asyncio.gather(answers, return_exceptions=True)


async def _requests(
    lease_id: int, ticks: asyncio.Queue[None]
) -> AsyncIterator[LeaseKeepAliveRequest]:
    while True:
        await ticks.get()
        yield LeaseKeepAliveRequest(ID=lease_id)


async def _read_answers(
    call: _KeepAliveCall,
    sent: deque[float],
    renewed: Callable[[float, float], None],
) -> None:
    """Read keep-alive answers (one per request, in order) until etcd says the lease
    is gone (returns) or the stream breaks (raises)."""
    while True:
        answer = await call.read()
        if answer is grpc.aio.EOF:
            raise ConnectionError("keep-alive stream closed")
        left = int(cast(LeaseKeepAliveResponse, answer).TTL)
        if left <= 0:
            return
        renewed(sent.popleft() if sent else asyncio.get_running_loop().time(), left)


async def _confirm(lease: KeptLease, lease_id: int, ttl: int) -> int:
    """The whole seconds etcd says the lease has left: -1 when it no longer has it,
    or when it does not say within a TTL (then it may well be gone)."""
    try:
        response = await lease.time_to_live(lease_id, timeout=ttl, max_attempts=1)
    except (EtcdError, TimeoutError, grpc.aio.AioRpcError) as exc:
        _log.warning("cannot ask etcd whether the lease is still held", detail=describe(exc))
        return -1
    return int(response.TTL)
