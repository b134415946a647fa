"""The manager's etcd lease under a busy event loop, on a real etcd (the manager's own
EmbeddedEtcd in a temporary directory). No Docker needed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from etcd3aio import Etcd3Client

from manager import lease as lease_mod
from manager.etcd_embedded import EmbeddedEtcd
from manager.lease import ManagerLease
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
    await asyncio.wait_for(held.lost.wait(), 5)
    # Once the loop runs again, a new lease is granted.
    await asyncio.wait_for(held.granted.wait(), 10)
    assert held.id not in (0, lease_id)
