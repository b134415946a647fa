"""The store and the cache against a real etcd (the `etcd` binary, started by the
manager's own EmbeddedEtcd in a temporary directory). No Docker needed.

Each test works under a key prefix of its own, so the tests share one etcd.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from etcd3aio import Etcd3Client

from common import states
from common.api import objects_pb2
from common.ids import new_id
from manager.store import (
    AlreadyExistsError,
    Cache,
    ConflictError,
    Create,
    Delete,
    Event,
    Kind,
    NotFoundError,
    Store,
    TooLargeError,
    Update,
)
from manager.store.embedded import EmbeddedEtcd
from manager.store.etcd import EtcdConfig, connect
from manager.store.keys import KeySpace
from manager.store.store import MAX_TXN_BYTES, MAX_TXN_OPS
from tests.unit import factories as f

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
async def store(client: Etcd3Client, etcd_url: str) -> Store:
    """A store under a fresh prefix, without a cache (every base is read from etcd)."""
    return Store(client, KeySpace(f"/test-{uuid.uuid4().hex[:8]}/"), endpoints=etcd_url)


@pytest_asyncio.fixture(loop_scope="module")
async def cached(store: Store, client: Etcd3Client) -> AsyncIterator[Cache]:
    """A running cache over `store`, wired the way manager/daemon/server.py wires it."""
    cache = Cache(client, store)
    store.base_reader = cache.get
    runner = asyncio.create_task(cache.run())
    await asyncio.wait_for(cache.synced.wait(), 10)
    await watching(cache, client)
    yield cache
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


async def watching(cache: Cache, client: Etcd3Client) -> None:
    """Return once the cache's watch is established (`synced` is set after the list,
    before the watch starts): a write to a key that is no object, waited for."""
    assert client.kv is not None
    key = f"{cache._keys.prefix}sentinel".encode()
    put = await client.kv.put(key, b"")
    await cache.wait_for(put.header.revision)


def a_task(slot: int = 1, **kw: Any) -> objects_pb2.Task:
    return f.task(f.service(), slot, task_id=new_id(), **kw)


def a_service(name: str) -> objects_pb2.Service:
    return f.service(service_id=new_id(), name=name)


async def count_keys(store: Store, kind: Kind) -> int:
    kvs, _ = await store.list_raw(store.keys.folder(kind))
    return len(kvs)


def set_message(text: str, calls: list[int] | None = None) -> Callable[[Any], Any]:
    def mutate(task: objects_pb2.Task) -> objects_pb2.Task:
        if calls is not None:
            calls.append(task.meta.version)
        task.status.message = text
        return task

    return mutate


# ---- Store.commit ---------------------------------------------------------------------------


async def test_big_commit_is_split_into_transactions(store: Store) -> None:
    tasks = [a_task(i) for i in range(1, 301)]
    result = await store.commit([Create(t) for t in tasks])
    assert result.failed == []
    assert len(result.written) == 300
    assert await count_keys(store, Kind.TASK) == 300
    # One revision per transaction: ceil(300 / 128) of them.
    versions = sorted({t.meta.version for t in result.written})
    assert len(versions) == -(-300 // MAX_TXN_OPS) == 3
    assert result.revision == versions[-1]
    for t in tasks:
        assert t.meta.created_at.seconds > 0


async def test_commit_of_big_objects_is_split_by_size(store: Store) -> None:
    # 128 tasks of 20 KB each are 2.5 MB: more than etcd takes in one request (the
    # orchestrator's first pass for such a service failed for ever before the split).
    tasks = [a_task(i) for i in range(1, 151)]
    for t in tasks:
        t.spec.container.env.append("BIG=" + "z" * 20_000)
    result = await store.commit([Create(t) for t in tasks])
    assert result.failed == []
    assert await count_keys(store, Kind.TASK) == 150
    per_txn = MAX_TXN_BYTES // tasks[0].ByteSize()
    assert len({t.meta.version for t in result.written}) == -(-150 // per_txn)


async def test_an_object_too_big_for_etcd_is_too_large_not_a_full_disk(store: Store) -> None:
    big = a_task(1)
    big.spec.container.env.append("BIG=" + "z" * 1_700_000)
    with pytest.raises(TooLargeError) as err:
        await store.create(big)
    assert "too large" in str(err.value)
    assert "space quota" not in str(err.value)


async def test_big_commit_of_updates_and_deletes(store: Store) -> None:
    tasks = [a_task(i) for i in range(1, 201)]
    (await store.commit([Create(t) for t in tasks])).raise_first()
    updated = await store.commit([Update(Kind.TASK, t.id, set_message("x")) for t in tasks])
    assert updated.failed == []
    assert len(updated.written) == 200
    stored = await store.get(Kind.TASK, tasks[150].id)
    assert stored is not None
    assert stored.status.message == "x"
    deleted = await store.commit([Delete(Kind.TASK, t.id) for t in tasks])
    assert deleted.failed == []
    assert len(deleted.deleted) == 200
    assert await count_keys(store, Kind.TASK) == 0


async def test_create_with_unique_names_is_split_by_its_two_keys(store: Store) -> None:
    services = [a_service(f"s{i}") for i in range(200)]
    result = await store.commit([Create(s, unique_name=s.spec.annotations.name) for s in services])
    assert result.failed == []
    # Two keys per create (the object and its name): 64 creates per transaction.
    assert len({s.meta.version for s in result.written}) == 4
    kvs, _ = await store.list_raw(store.keys.prefix.encode() + b"names/services/")
    assert len(kvs) == 200


async def test_create_of_a_taken_name_fails_and_writes_nothing(store: Store) -> None:
    first = await store.create(a_service("web"), unique_name="web")
    second = a_service("web")
    with pytest.raises(AlreadyExistsError, match="a service named 'web' already exists"):
        await store.create(second, unique_name="web")
    assert await store.get(Kind.SERVICE, second.id) is None
    assert await count_keys(store, Kind.SERVICE) == 1
    kvs, _ = await store.list_raw(store.keys.service_name_key("web"))
    assert [kv.value for kv in kvs] == [first.id.encode()]


async def test_create_of_an_existing_id_fails(store: Store) -> None:
    t = a_task()
    await store.create(t)
    again = objects_pb2.Task()
    again.CopyFrom(t)
    again.status.message = "overwrite?"
    with pytest.raises(AlreadyExistsError, match=f"task {t.id} already exists"):
        await store.create(again)
    stored = await store.get(Kind.TASK, t.id)
    assert stored is not None
    assert stored.status.message == t.status.message


async def test_failed_create_does_not_stop_the_rest_of_its_transaction(store: Store) -> None:
    await store.create(a_service("taken"), unique_name="taken")
    clash, fine = a_service("taken"), a_service("free")
    task = a_task()
    result = await store.commit(
        [Create(clash, unique_name="taken"), Create(fine, unique_name="free"), Create(task)]
    )
    assert [op.obj.id for op, _ in result.failed if isinstance(op, Create)] == [clash.id]
    assert len(result.failed) == 1
    assert isinstance(result.failed[0][1], AlreadyExistsError)
    assert {o.id for o in result.written} == {fine.id, task.id}
    assert await store.get(Kind.SERVICE, clash.id) is None
    assert await store.get(Kind.SERVICE, fine.id) is not None


async def test_update_on_a_stale_base_is_applied_to_the_fresh_value(store: Store) -> None:
    t = await store.create(a_task())
    stale = objects_pb2.Task()
    stale.CopyFrom(t)

    def shut_down(task: objects_pb2.Task) -> objects_pb2.Task:
        task.desired_state = states.SHUTDOWN
        return task

    fresh = await store.update(Kind.TASK, t.id, shut_down)
    assert fresh is not None
    assert fresh.meta.version > stale.meta.version
    calls: list[int] = []
    result = await store.commit(
        [Update(Kind.TASK, t.id, set_message("reported", calls), base=stale)]
    )
    assert result.failed == []
    (written,) = result.written
    # Tried on the stale copy first, then again on what etcd held (the failure branch).
    assert calls == [stale.meta.version, fresh.meta.version]
    assert written.desired_state == states.SHUTDOWN, "the concurrent change is kept"
    assert written.status.message == "reported"
    stored = await store.get(Kind.TASK, t.id)
    assert stored == written


async def test_update_without_a_base_reads_it_in_the_failure_branch(store: Store) -> None:
    t = await store.create(a_task())
    calls: list[int] = []
    updated = await store.update(Kind.TASK, t.id, set_message("hi", calls))
    assert updated is not None
    assert calls == [t.meta.version]
    assert updated.status.message == "hi"


async def test_update_that_declines_writes_nothing(store: Store) -> None:
    t = await store.create(a_task())
    assert await store.update(Kind.TASK, t.id, lambda task: None) is None
    stored = await store.get(Kind.TASK, t.id)
    assert stored is not None
    assert stored.meta.version == t.meta.version


async def test_update_of_a_missing_object(store: Store) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        await store.update(Kind.TASK, "nope", set_message("x"))


async def test_expect_version_mismatch_is_a_conflict(store: Store) -> None:
    t = await store.create(a_task())
    changed = await store.update(Kind.TASK, t.id, set_message("first"))
    assert changed is not None
    # Pinned to the version read before the change: refused, whatever base is used.
    with pytest.raises(ConflictError, match="changed since it was read"):
        await store.update(Kind.TASK, t.id, set_message("second"), expect_version=t.meta.version)
    stale = await store.commit(
        [Update(Kind.TASK, t.id, set_message("third"), t.meta.version, base=t)]
    )
    assert len(stale.failed) == 1
    assert isinstance(stale.failed[0][1], ConflictError)
    stored = await store.get(Kind.TASK, t.id)
    assert stored is not None
    assert stored.status.message == "first"
    # Pinned to the current version: fine.
    ok = await store.update(
        Kind.TASK, t.id, set_message("fourth"), expect_version=changed.meta.version
    )
    assert ok is not None
    assert ok.status.message == "fourth"


async def test_delete_whose_check_fails_deletes_nothing(store: Store) -> None:
    t = await store.create(a_task())

    def removed(task: objects_pb2.Task) -> bool:
        return task.desired_state >= states.REMOVE

    result = await store.commit([Delete(Kind.TASK, t.id, check=removed)])
    assert result.deleted == []
    assert result.failed == []
    assert await store.get(Kind.TASK, t.id) is not None
    # A stale base for which the check holds: re-checked on the fresh value, still no.
    stale = objects_pb2.Task()
    stale.CopyFrom(t)
    stale.desired_state = states.REMOVE
    stale.meta.version = t.meta.version - 1
    result = await store.commit([Delete(Kind.TASK, t.id, check=removed, base=stale)])
    assert result.deleted == []
    assert await store.get(Kind.TASK, t.id) is not None


async def test_delete_with_check_passing_and_extra_keys(store: Store) -> None:
    s = await store.create(a_service("gone"), unique_name="gone")
    name_key = store.keys.service_name_key("gone")
    result = await store.commit(
        [Delete(Kind.SERVICE, s.id, check=lambda cur: cur.id == s.id, also=[name_key])]
    )
    assert result.deleted == [(Kind.SERVICE, s.id)]
    assert await store.get(Kind.SERVICE, s.id) is None
    kvs, _ = await store.list_raw(name_key)
    assert kvs == []
    # The name is free again.
    await store.create(a_service("gone"), unique_name="gone")


async def test_delete_of_a_missing_object_is_a_no_op(store: Store) -> None:
    assert await store.delete(Kind.TASK, "never-was") == 0


# ---- Cache ----------------------------------------------------------------------------


async def test_cache_sees_every_write_in_order(store: Store, cached: Cache) -> None:
    events: list[Event] = []
    cached.add_listener(events.append)
    svc = f.service(service_id=new_id())
    tasks = [f.task(svc, i, task_id=new_id()) for i in range(1, 6)]
    created = await store.commit([Create(t) for t in tasks])
    await cached.wait_for(created.revision)
    assert set(cached.tasks) == {t.id for t in tasks}
    assert set(cached.tasks_by_service[svc.id]) == {t.id for t in tasks}
    assert set(cached.tasks_by_node["n1"]) == {t.id for t in tasks}

    updated = await store.update(Kind.TASK, tasks[0].id, set_message("one"))
    assert updated is not None
    await cached.wait_for(updated.meta.version)
    assert cached.tasks[tasks[0].id].status.message == "one"
    assert cached.tasks[tasks[0].id].meta.version == updated.meta.version

    revision = await store.delete(Kind.TASK, tasks[1].id)
    await cached.wait_for(revision)
    assert tasks[1].id not in cached.tasks
    assert tasks[1].id not in cached.tasks_by_service[svc.id]

    service = await store.create(a_service("cached"), unique_name="cached")
    await cached.wait_for(service.meta.version)
    assert cached.service_by_name["cached"] == service.id

    kinds = [(e.kind, e.old is None, e.new is None, e.obj.id) for e in events]
    assert kinds == [
        *((Kind.TASK, True, False, t.id) for t in tasks),
        (Kind.TASK, False, False, tasks[0].id),
        (Kind.TASK, False, True, tasks[1].id),
        (Kind.SERVICE, True, False, service.id),
    ]
    revisions = [e.revision for e in events]
    assert revisions == sorted(revisions)
    assert len(set(revisions[:5])) == 1, "one transaction, one revision"
    assert events[5].old.status.message != "one"
    assert events[5].new.status.message == "one"
    assert cached.revision >= service.meta.version


async def test_store_reads_its_bases_from_the_cache(store: Store, cached: Cache) -> None:
    t = await store.create(a_task())
    await cached.wait_for(t.meta.version)
    calls: list[int] = []
    await store.update(Kind.TASK, t.id, set_message("a", calls))
    assert calls == [t.meta.version], "no read before the write"


async def test_wait_for_waits_until_the_revision_is_seen(store: Store, cached: Cache) -> None:
    await cached.wait_for(cached.revision)  # already seen: returns at once
    waiter = asyncio.create_task(cached.wait_for(cached.revision + 1))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    t = await store.create(a_task())
    await asyncio.wait_for(waiter, 5)
    assert t.id in cached.tasks


async def test_wait_for_gives_up_after_its_timeout(cached: Cache) -> None:
    loop = asyncio.get_running_loop()
    begin = loop.time()
    await cached.wait_for(cached.revision + 1000, timeout=0.2)
    assert 0.15 < loop.time() - begin < 2


async def test_wait_for_covers_writes_made_before_the_watch_started(
    store: Store, client: Etcd3Client
) -> None:
    """The watch's first (created) response carries etcd's current revision, ahead of
    the events still to come; the cache must not count itself that far yet."""
    cache = Cache(client, store)
    seen: list[str] = []
    cache.add_listener(lambda ev: seen.append(ev.obj.id))
    await cache._relist()
    # Writes between the list and the start of the watch (as under load).
    tasks = [a_task(i) for i in range(1, 4)]
    revisions = [(await store.commit([Create(t)])).revision for t in tasks]
    watcher = asyncio.create_task(cache._watch())
    try:
        await cache.wait_for(revisions[-1])
        assert seen == [t.id for t in tasks], "wait_for returned before the events were applied"
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def test_compaction_past_the_cache_makes_watch_report_it(
    store: Store, client: Etcd3Client
) -> None:
    cache = Cache(client, store)
    await cache._relist()
    listed_at = cache.revision
    for i in range(3):
        await store.create(a_task(i + 1))
    latest = (await store.create(a_task(9))).meta.version
    assert client.kv is not None
    await client.kv.compact(latest)
    assert listed_at < latest
    assert await asyncio.wait_for(cache._watch(), 10) is True


async def test_run_lists_again_after_a_compaction(store: Store, client: Etcd3Client) -> None:
    cache = Cache(client, store)
    relisted = asyncio.Event()
    resyncs: list[int] = []

    def resynced() -> None:
        resyncs.append(cache.revision)
        relisted.set()

    cache.add_resync_listener(resynced)
    written: list[str] = []
    real_relist = cache._relist
    lists = 0

    async def relist_then_fall_behind() -> None:
        # After the first list, etcd moves on and compacts before the watch starts.
        nonlocal lists
        await real_relist()
        lists += 1
        if lists == 1:
            for i in range(3):
                t = await store.create(a_task(i + 1))
                written.append(t.id)
            assert client.kv is not None
            await client.kv.compact(t.meta.version)

    cache._relist = relist_then_fall_behind  # type: ignore[method-assign]
    runner = asyncio.create_task(cache.run())
    try:
        await asyncio.wait_for(relisted.wait(), 10)
        assert lists == 2
        assert len(resyncs) == 1
        assert set(written) <= set(cache.tasks), "the re-list has what the watch missed"
        # ...and the cache keeps following etcd afterwards.
        await watching(cache, client)
        later = await store.create(a_task(7))
        await cache.wait_for(later.meta.version)
        assert later.id in cache.tasks
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_the_compactor_compacts_history_older_than_its_retention(
    store: Store, cached: Cache, client: Etcd3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from manager.store import compactor as compactor_mod

    monkeypatch.setattr(compactor_mod, "INTERVAL", 0.1)
    monkeypatch.setattr(compactor_mod, "RETENTION", 0.3)
    first = await store.create(a_task(1))
    old_revision = first.meta.version
    compactor = compactor_mod.Compactor(client, cached)
    runner = asyncio.create_task(compactor.run())
    try:
        for slot in range(2, 8):
            await store.create(a_task(slot))
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        assert compactor.compacted > old_revision
        assert client.kv is not None
        with pytest.raises(Exception, match="compacted"):
            await client.kv.get(b"/", revision=old_revision, timeout=5)
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
