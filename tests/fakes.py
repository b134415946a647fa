"""Named in-memory stand-ins for the store, for unit tests of the reconcilers and writers.

- `FakeCache` implements `CacheView`: the tables the real cache keeps, fed by `put` and
  `delete` the way the watch feeds the real one (each change a revision, delivered to
  the listeners in order). Tasks are kept serialized in the real `TaskTable`, indexed
  by the real `TaskIndex`, so every read decodes a fresh copy, as in production: a test
  that changes a task it read does not change the cache behind the reconciler's back.
- `RecordingCommitter` implements `Committer`: it applies each batch to a FakeCache with
  the real Store's rules (Create fails on an existing id, Update applies `mutate` to a
  copy of the current object and skips a None, Delete honours `check`, both honour
  `expect_version`), records every batch, and can be made slow or failing.
- `offline_cache` is the real `Cache` with no etcd behind it, fed with `Cache.load`.
- `ReadOnlyStore` implements `ObjectWriter` and `no_previews` is a `Previewer`, for a
  control API that a test only reads from: a write or a preview fails the test.
- `UnimplementedDispatcher` answers every Dispatcher call with UNIMPLEMENTED; a test's
  dispatcher overrides the calls it stands in for, on a real gRPC server.

Integration tests use the real Store and Cache on a real etcd; these are for the rules
that unit tests pin down without one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import grpc

from common.api import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from common.timeutil import stamp_now
from manager.domain.placer import GroupResult, Previewer
from manager.grpc_errors import Context
from manager.store import (
    AlreadyExistsError,
    BatchResult,
    Cache,
    ConflictError,
    Create,
    Event,
    Kind,
    NotFoundError,
    StoreUnavailableError,
    Update,
)
from manager.store.keys import KeySpace
from manager.store.store import Mutator, Op, Store
from manager.store.tasktable import TaskIndex, TaskTable
from manager.store.views import CacheView, Committer, Listener, ObjectWriter

# The kinds of object the tests keep in a cache.
Stored = (
    objects_pb2.Node
    | objects_pb2.Service
    | objects_pb2.Task
    | objects_pb2.Cluster
    | objects_pb2.NodeSession
    | objects_pb2.ManagerPresence
    | objects_pb2.Network
)


class FakeCache:
    """A `CacheView` over in-memory tables; `put` and `delete` change it as the watch
    would change the real cache, `resync` calls the resync listeners as a re-list does."""

    def __init__(self, *objs: Stored) -> None:
        self.objects: dict[Kind, MutableMapping[str, Any]] = {
            k: {} for k in Kind if k is not Kind.TASK
        }
        self._tasks = TaskTable()
        self.objects[Kind.TASK] = self._tasks
        self.tasks_by_service = TaskIndex(self._tasks)
        self.tasks_by_node = TaskIndex(self._tasks)
        self.revision = 0
        self._listeners: list[Listener] = []
        self._resync_listeners: list[Callable[[], None]] = []
        self.put(*objs)

    # ---- CacheView ----------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, objects_pb2.Node]:
        return cast(dict[str, objects_pb2.Node], self.objects[Kind.NODE])

    @property
    def services(self) -> dict[str, objects_pb2.Service]:
        return cast(dict[str, objects_pb2.Service], self.objects[Kind.SERVICE])

    @property
    def tasks(self) -> TaskTable:
        return self._tasks

    @property
    def networks(self) -> dict[str, objects_pb2.Network]:
        return cast(dict[str, objects_pb2.Network], self.objects[Kind.NETWORK])

    def cluster(self) -> objects_pb2.Cluster | None:
        clusters = self.objects[Kind.CLUSTER]
        return cast(objects_pb2.Cluster, next(iter(clusters.values()))) if clusters else None

    def service_task_bytes(self, service_id: str) -> list[bytes]:
        """The service's tasks as stored (serialized), for decoding off the loop."""
        group = self.tasks_by_service.get(service_id)
        table = self.tasks
        return [table.serialized(i) for i in group.ids] if group else []

    def get(self, kind: Kind, obj_id: str) -> Any | None:
        return self.objects[kind].get(obj_id)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_resync_listener(self, listener: Callable[[], None]) -> None:
        self._resync_listeners.append(listener)

    async def wait_for(self, revision: int) -> None:
        # Writes through RecordingCommitter are applied before commit returns.
        assert revision <= self.revision, f"revision {revision} not seen (at {self.revision})"

    # ---- feeding ------------------------------------------------------------------------

    def put(self, *objs: Stored) -> None:
        """Create or replace each object (as stored: a task keeps its `meta.version`),
        one revision each, telling the listeners."""
        for obj in objs:
            kind = Kind.of(obj)
            obj_id = obj.id
            table = self.objects[kind]
            old = table.get(obj_id)
            table[obj_id] = obj
            self._index(kind, old, obj, obj_id)
            self._emit(kind, old, table[obj_id], obj_id)

    def delete(self, kind: Kind, obj_id: str) -> None:
        """Remove an object (it must exist), telling the listeners."""
        old = self.objects[kind].pop(obj_id)
        self._index(kind, old, None, obj_id)
        self._emit(kind, old, None, obj_id)

    def resync(self) -> None:
        """What a re-list does after the watch fell behind: every resync listener runs."""
        for listener in self._resync_listeners:
            listener()

    def _index(self, kind: Kind, old: Any, new: Any, obj_id: str) -> None:
        if kind is not Kind.TASK:
            return
        for index, field in (
            (self.tasks_by_service, "service_id"),
            (self.tasks_by_node, "node_id"),
        ):
            before = getattr(old, field) if old is not None else ""
            after = getattr(new, field) if new is not None else ""
            if before != after:
                if before:
                    index.discard(before, obj_id)
                if after:
                    index.add(after, obj_id)

    def _emit(self, kind: Kind, old: Any, new: Any, obj_id: str) -> None:
        self.revision += 1
        event = Event(kind, old, new, self.revision, obj_id)
        for listener in self._listeners:
            listener(event)


class RecordingCommitter:
    """A `Committer` that applies batches to `cache` with the Store's rules and records
    them: `batches` holds every batch received (failed ones too), `written` the objects
    written and `deleted` the ids deleted, in order.

    `delay` makes each commit take that long; `fail_next` makes that many commits raise
    StoreUnavailableError before applying anything, as the Store does when etcd is down;
    while `hold` is an event not yet set, commits wait for it before they are received.
    `committed` is set at every commit."""

    def __init__(self, cache: FakeCache, *, delay: float = 0.0) -> None:
        self.cache = cache
        self.delay = delay
        self.fail_next = 0
        self.batches: list[list[Op]] = []
        self.written: list[Any] = []
        self.deleted: list[str] = []
        self.hold: asyncio.Event | None = None
        self.committed = asyncio.Event()

    @property
    def sizes(self) -> list[int]:
        """The number of operations in each batch received."""
        return [len(b) for b in self.batches]

    async def commit(self, ops: Sequence[Op]) -> BatchResult:
        if self.hold is not None:
            await self.hold.wait()
        self.batches.append(list(ops))
        self.committed.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailableError("etcd is unavailable (RecordingCommitter.fail_next)")
        result = BatchResult()
        for op in ops:
            try:
                self._apply(op, result)
            except (AlreadyExistsError, ConflictError, NotFoundError) as exc:
                result.failed.append((op, exc))
        result.revision = self.cache.revision
        return result

    def _apply(self, op: Op, result: BatchResult) -> None:
        cache = self.cache
        if isinstance(op, Create):
            obj = op.obj
            if cache.get(Kind.of(obj), obj.id) is not None:
                raise AlreadyExistsError(f"{obj.id} exists")
            stamp_now(obj.meta.created_at)
            obj.meta.updated_at.CopyFrom(obj.meta.created_at)
            obj.meta.version = cache.revision + 1
            cache.put(obj)
            result.written.append(obj)
            self.written.append(obj)
            return
        current = cache.get(op.kind, op.obj_id)
        if current is None:
            if isinstance(op, Update):
                raise NotFoundError(f"{op.kind.folder[:-1]} {op.obj_id} not found")
            return  # a Delete of what is gone already has nothing to do
        if op.expect_version is not None and current.meta.version != op.expect_version:
            raise ConflictError(f"{op.obj_id} changed since it was read")
        if isinstance(op, Update):
            copy = op.kind.message()
            copy.CopyFrom(current)
            new = op.mutate(copy)
            if new is None:
                return
            stamp_now(new.meta.updated_at)
            new.meta.version = cache.revision + 1
            cache.put(new)
            result.written.append(new)
            self.written.append(new)
            return
        if op.check is not None and not op.check(current):
            return
        cache.delete(op.kind, op.obj_id)
        result.deleted.append((op.kind, op.obj_id))
        self.deleted.append(op.obj_id)


def offline_cache(*objs: Stored, prefix: str = "/swarmlet/") -> Cache:
    """The real Cache with no etcd behind it, holding `objs` (fed with `Cache.load`).

    The cache reads only the key space of its store until it is run, and it is never run
    here, so the store is a namespace holding just that and the client is absent."""
    no_store = cast(Store, SimpleNamespace(keys=KeySpace(prefix)))
    cache = Cache(cast(Any, None), no_store)
    cache.load(objs)
    return cache


class ReadOnlyStore:
    """An `ObjectWriter` for a control API whose test only reads (lists, gets): the
    control API reads through the cache, so any write here is a test gone wrong."""

    def __init__(self, prefix: str = "/swarmlet/") -> None:
        self.keys = KeySpace(prefix)

    async def create(self, obj: Any, *, unique_name: str | None = None) -> Any:
        raise AssertionError(f"ReadOnlyStore: this test writes nothing, yet created {obj.id}")

    async def update(
        self, kind: Kind, obj_id: str, mutate: Mutator, *, expect_version: int | None = None
    ) -> Any | None:
        raise AssertionError(f"ReadOnlyStore: this test writes nothing, yet updated {obj_id}")

    async def delete(self, kind: Kind, obj_id: str, *, also: Sequence[bytes] = ()) -> int:
        raise AssertionError(f"ReadOnlyStore: this test writes nothing, yet deleted {obj_id}")


def no_previews(tasks: Sequence[objects_pb2.Task], replacing: str) -> GroupResult:
    """A `Previewer` for a control API whose test creates and updates no service."""
    raise AssertionError("no_previews: this test previews no placement")


def fake_store(*objs: Stored) -> tuple[FakeCache, RecordingCommitter]:
    """A FakeCache holding `objs` and a RecordingCommitter writing to it."""
    cache = FakeCache(*objs)
    return cache, RecordingCommitter(cache)


class UnimplementedDispatcher(dispatcher_pb2_grpc.DispatcherServicer):
    """A Dispatcher servicer whose every call ends with UNIMPLEMENTED: subclasses
    override the calls their test needs."""

    async def Session(
        self, request: dispatcher_pb2.SessionRequest, context: Context
    ) -> AsyncIterator[dispatcher_pb2.SessionMessage]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Session is not faked")
        yield dispatcher_pb2.SessionMessage()  # never reached: makes this a generator

    async def Heartbeat(
        self, request: dispatcher_pb2.HeartbeatRequest, context: Context
    ) -> dispatcher_pb2.HeartbeatResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Heartbeat is not faked")

    async def Heartbeats(
        self, request_iterator: AsyncIterator[dispatcher_pb2.HeartbeatRequest], context: Context
    ) -> AsyncIterator[dispatcher_pb2.HeartbeatResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Heartbeats is not faked")
        yield dispatcher_pb2.HeartbeatResponse()  # never reached: makes this a generator

    async def UpdateTaskStatus(
        self, request: dispatcher_pb2.UpdateTaskStatusRequest, context: Context
    ) -> dispatcher_pb2.UpdateTaskStatusResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "UpdateTaskStatus is not faked")

    async def Goodbye(
        self, request: dispatcher_pb2.GoodbyeRequest, context: Context
    ) -> dispatcher_pb2.GoodbyeResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Goodbye is not faked")


def _fakes_fit(
    cache: FakeCache, committer: RecordingCommitter, store: ReadOnlyStore
) -> tuple[CacheView, Committer, ObjectWriter, Previewer]:
    """Never called: mypy checks here that the fakes satisfy the protocols."""
    return cache, committer, store, no_previews


__all__ = [
    "FakeCache",
    "ReadOnlyStore",
    "RecordingCommitter",
    "Stored",
    "UnimplementedDispatcher",
    "fake_store",
    "no_previews",
    "offline_cache",
]
