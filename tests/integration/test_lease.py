"""The manager's etcd lease under a busy event loop, on a real etcd (the manager's own
EmbeddedEtcd in a temporary directory). No Docker needed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from etcd3aio import Etcd3Client
from etcd3aio._protobuf import LeaseTimeToLiveResponse
from etcd3aio.lease import LeaseService

from manager.leadership import lease as lease_mod
from manager.leadership.lease import ManagerLease, keep_alive
from manager.store.embedded import ETCD_NICE, EmbeddedEtcd
from manager.store.etcd import EtcdConfig, connect
from manager.store.side import SideThread

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def etcd_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    base: Path = tmp_path_factory.mktemp("etcd")
    etcd = EmbeddedEtcd(base / "data", base / "etcd.log")
    url = await etcd.start()
    try:
        yield url
    finally:
        await etcd.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(etcd_url: str) -> AsyncIterator[Etcd3Client]:
    async with connect(EtcdConfig([etcd_url])) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def held(client: Etcd3Client, etcd_url: str) -> AsyncIterator[ManagerLease]:
    """A granted lease (2 s, etcd's minimum) kept alive from a SideThread."""
    side = SideThread(EtcdConfig([etcd_url]))
    lease = ManagerLease(client, 2, side)
    runner = asyncio.create_task(lease.run())
    await asyncio.wait_for(lease.granted.wait(), 10)
    try:
        yield lease
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
        await lease.revoke()
        await asyncio.to_thread(side.close)


async def remaining_ttl(client: Etcd3Client, lease_id: int) -> int:
    assert client.lease is not None
    return int((await client.lease.time_to_live(lease_id)).TTL)


async def replaced(lease: ManagerLease, old_id: int) -> None:
    """Wait until `lease` gave `old_id` up and holds a new lease. (Not by waiting for
    `lost`: it is set and cleared again as soon as the new lease is granted, which can
    happen before a waiter looks.)"""
    async with asyncio.timeout(15):
        while lease.id in (0, old_id) or not lease.granted.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_a_busy_event_loop_keeps_its_lease(held: ManagerLease, client: Etcd3Client) -> None:
    lease_id = held.id
    time.sleep(3 * held.ttl)  # noqa: ASYNC251 (on purpose) the event loop does nothing else for longer than the TTL
    assert await remaining_ttl(client, lease_id) > 0
    await asyncio.sleep(0.1)
    assert not held.lost.is_set()
    assert held.id == lease_id


async def test_a_hung_event_loop_lets_its_lease_go(
    held: ManagerLease, client: Etcd3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lease_mod, "MAX_STALL", 1.0)
    lease_id = held.id
    time.sleep(1.0 + 2 * held.ttl)  # noqa: ASYNC251 hung: past MAX_STALL, then the TTL runs out
    assert await remaining_ttl(client, lease_id) <= 0
    # Once the loop runs again, the lease is given up and a new one granted.
    await replaced(held, lease_id)


class _LateAnswers:
    """Fake: a stand-in for etcd3aio's LeaseService whose keep-alive requests reach the
    real etcd at once but whose answers are handed over `delay` seconds late. That is
    what a keep-alive thread starved of CPU by a busy manager sees; it cannot be made
    to happen on demand with the real thread."""

    def __init__(self, real: LeaseService, delay: float) -> None:
        self._real = real
        self._stub = self
        self.delay = delay

    def LeaseKeepAlive(self, requests: object) -> _LateCall:
        return _LateCall(self._real._stub.LeaseKeepAlive(requests), self.delay)

    async def time_to_live(
        self, lease_id: int, *, timeout: float | None = None, max_attempts: int | None = None
    ) -> LeaseTimeToLiveResponse:
        return await self._real.time_to_live(lease_id, timeout=timeout, max_attempts=max_attempts)


class _LateCall:
    def __init__(self, call: grpc.aio.StreamStreamCall, delay: float) -> None:  # type: ignore[type-arg]
        self._call = call
        self._delay = delay

    async def read(self) -> object:
        answer = await self._call.read()
        await asyncio.sleep(self._delay)
        return answer

    def cancel(self) -> bool:
        return bool(self._call.cancel())


async def test_late_keep_alive_answers_do_not_give_up_a_lease_etcd_still_holds(
    client: Etcd3Client,
) -> None:
    assert client.lease is not None
    lease_id = int((await client.lease.grant(2)).ID)
    late = _LateAnswers(client.lease, delay=2.5)  # later than the whole TTL
    keeping = asyncio.create_task(keep_alive(late, lease_id, 2, lambda: True))
    try:
        await asyncio.sleep(7)
        assert not keeping.done(), "the lease was given up although etcd still held it"
        assert await remaining_ttl(client, lease_id) > 0
    finally:
        keeping.cancel()
        await asyncio.gather(keeping, return_exceptions=True)
        await client.lease.revoke(lease_id)


async def test_a_lease_etcd_no_longer_holds_is_given_up(
    held: ManagerLease, client: Etcd3Client
) -> None:
    assert client.lease is not None
    lease_id = held.id
    await client.lease.revoke(lease_id)  # as etcd does when the lease expires
    await replaced(held, lease_id)


async def test_the_embedded_etcd_runs_ahead_of_the_manager(tmp_path: Path) -> None:
    """Scheduled before the manager's busy threads (where allowed: as root), so that it
    applies keep-alives at once. A late one cost the leader its lease at 5,000 nodes."""
    if os.geteuid() != 0:
        pytest.skip("only root may raise a process's priority")
    etcd = EmbeddedEtcd(tmp_path / "data", tmp_path / "etcd.log")
    await etcd.start()
    try:
        pid = int((tmp_path / "etcd.pid").read_text())
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, pid) == max(-20, ours + ETCD_NICE)
    finally:
        await etcd.stop()
