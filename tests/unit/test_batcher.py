"""BatchWriter: many callers' operations committed together, each told its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from common.api import objects_pb2
from manager.store import Kind, NotFoundError, StoreUnavailableError, Update
from manager.store.batcher import BatchWriter
from tests.fakes import FakeCache, RecordingCommitter


def hostname(name: str) -> Update:
    def mutate(node: objects_pb2.Node) -> objects_pb2.Node:
        node.description.hostname = name
        return node

    return Update(Kind.NODE, name, mutate)


Writer = tuple[BatchWriter, RecordingCommitter]


@pytest.fixture
async def writer() -> AsyncIterator[Writer]:
    # Each commit takes a little while, so that callers pile up behind it.
    cache = FakeCache(*(objects_pb2.Node(id=f"n{i}") for i in range(100)))
    store = RecordingCommitter(cache, delay=0.01)
    batcher = BatchWriter(store)
    runner = asyncio.create_task(batcher.run())
    yield batcher, store
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_callers_are_coalesced_and_get_their_own_object(writer: Writer) -> None:
    batcher, store = writer
    first = await batcher.submit(hostname("n0"))  # a lone one goes at once
    assert first is not None
    assert first.description.hostname == "n0"
    results = await asyncio.gather(*(batcher.submit(hostname(f"n{i}")) for i in range(1, 100)))
    nodes = [r for r in results if r is not None]
    assert [r.id for r in nodes] == [f"n{i}" for i in range(1, 100)]
    assert all(r.description.hostname == r.id for r in nodes)
    assert store.sizes[0] == 1
    assert len(store.sizes) <= 3  # 99 callers, a couple of transactions


async def test_each_caller_gets_its_own_error(writer: Writer) -> None:
    batcher, _ = writer
    outcomes = await asyncio.gather(
        batcher.submit(hostname("n1")), batcher.submit(hostname("gone")), return_exceptions=True
    )
    ok, missing = outcomes
    assert isinstance(ok, objects_pb2.Node)
    assert isinstance(missing, NotFoundError)


async def test_a_failed_commit_fails_its_callers_only(writer: Writer) -> None:
    batcher, store = writer
    store.fail_next = 1
    with pytest.raises(StoreUnavailableError):
        await batcher.submit(hostname("n1"))
    second = await batcher.submit(hostname("n2"))
    assert second is not None
    assert second.id == "n2"
