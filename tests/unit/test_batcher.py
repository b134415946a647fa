"""BatchWriter: many callers' operations committed together, each told its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from common.api import objects_pb2
from manager.store import BatchResult, Kind, NotFoundError, StoreUnavailableError, Update
from manager.store.batcher import BatchWriter
from manager.store.store import Op


class SlowStore:
    """Applies Updates to nodes in a dict; each commit takes a little while."""

    def __init__(self, node_ids: Sequence[str]) -> None:
        self.nodes = {n: objects_pb2.Node(id=n) for n in node_ids}
        self.commits: list[int] = []
        self.fail = False

    async def commit(self, ops: Sequence[Op]) -> BatchResult:
        self.commits.append(len(ops))
        await asyncio.sleep(0.01)
        if self.fail:
            raise StoreUnavailableError("etcd is unavailable")
        result = BatchResult()
        for op in ops:
            assert isinstance(op, Update)
            current = self.nodes.get(op.obj_id)
            if current is None:
                result.failed.append((op, NotFoundError(f"node {op.obj_id} not found")))
                continue
            copy = objects_pb2.Node()
            copy.CopyFrom(current)
            new = op.mutate(copy)
            if new is not None:
                self.nodes[op.obj_id] = new
                result.written.append(new)
        return result


def hostname(name: str) -> Update:
    def mutate(node: objects_pb2.Node) -> objects_pb2.Node:
        node.description.hostname = name
        return node

    return Update(Kind.NODE, name, mutate)


@pytest.fixture
async def writer() -> AsyncIterator[tuple[BatchWriter, SlowStore]]:
    store = SlowStore([f"n{i}" for i in range(100)])
    batcher = BatchWriter(store)  # type: ignore[arg-type]
    runner = asyncio.create_task(batcher.run())
    yield batcher, store
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def test_callers_are_coalesced_and_get_their_own_object(
    writer: tuple[BatchWriter, SlowStore],
) -> None:
    batcher, store = writer
    first = await batcher.submit(hostname("n0"))  # a lone one goes at once
    assert first.description.hostname == "n0"
    results = await asyncio.gather(*(batcher.submit(hostname(f"n{i}")) for i in range(1, 100)))
    assert [r.id for r in results] == [f"n{i}" for i in range(1, 100)]
    assert all(r.description.hostname == r.id for r in results)
    assert store.commits[0] == 1
    assert len(store.commits) <= 3  # 99 callers, a couple of transactions


async def test_each_caller_gets_its_own_error(writer: tuple[BatchWriter, SlowStore]) -> None:
    batcher, _ = writer
    ok, missing = await asyncio.gather(
        batcher.submit(hostname("n1")), batcher.submit(hostname("gone")), return_exceptions=True
    )
    assert isinstance(ok, objects_pb2.Node)
    assert isinstance(missing, NotFoundError)


async def test_a_failed_commit_fails_its_callers_only(
    writer: tuple[BatchWriter, SlowStore],
) -> None:
    batcher, store = writer
    store.fail = True
    with pytest.raises(StoreUnavailableError):
        await batcher.submit(hostname("n1"))
    store.fail = False
    assert (await batcher.submit(hostname("n2"))).id == "n2"
