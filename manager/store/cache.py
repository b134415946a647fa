"""The in-memory copy of every stored object, fed by list + watch.

Reconcilers and the control API read the cache, never etcd. The cache lists the prefix
(paginated, at one revision), then watches from the revision after; when etcd has
compacted that revision away it lists again. Listeners are plain functions called, in
revision order, for every change; they must be quick (mark something dirty, wake a
loop) because they run inside the watch loop. Nodes, services and the rest are kept
decoded and handed out shared: treat them as read-only and copy before changing.
Tasks, by far the most numerous, are kept serialized (`tasktable.py`): each read
decodes a fresh copy, so hold on to what you read rather than reading it again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

import grpc
from etcd3aio import Etcd3Client, EtcdError

from common.api import objects_pb2
from common.log import get_logger
from manager.store.keys import KeySpace, Kind, decode
from manager.store.store import Store
from manager.store.tasktable import TaskIndex, TaskTable
from manager.store.watch import WatchCanceledError, open_watch

_log = get_logger("cache")

# mvccpb.Event.EventType
_PUT, _DELETE = 0, 1
# Events applied between two chances for the rest of the event loop to run.
_YIELD_EVERY = 256


@dataclass(frozen=True, slots=True)
class Event:
    """One change: `old` is None for a create, `new` is None for a delete. `id` is the
    object's id; for a create it is the very string the cache's table is keyed by, so
    a listener that keeps ids shares it rather than holding a copy of its own
    (`obj.id` makes a new string at every call)."""

    kind: Kind
    old: Any
    new: Any
    revision: int
    id: str

    @property
    def obj(self) -> Any:
        return self.new if self.new is not None else self.old


Listener = Callable[[Event], None]


class Cache:
    """Every node, service, task and cluster object, kept current by an etcd watch."""

    def __init__(self, client: Etcd3Client, store: Store) -> None:
        self._client = client
        self._store = store
        self._keys: KeySpace = store.keys
        self.objects: dict[Kind, MutableMapping[str, Any]] = _empty_tables()
        self.tasks_by_service = TaskIndex(self.tasks)
        self.tasks_by_node = TaskIndex(self.tasks)
        self.service_by_name: dict[str, str] = {}
        self.revision = 0
        self._listeners: list[Listener] = []
        self._resync_listeners: list[Callable[[], None]] = []
        self._revision_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.synced = asyncio.Event()
        # Held while a change is applied (and its listeners run): the control API reads
        # the cache from threads of its own (controlapi/threaded.py) and holds it too.
        self.lock = threading.RLock()

    # ---- reading ------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, objects_pb2.Node]:
        return self.objects[Kind.NODE]  # type: ignore[return-value]

    @property
    def services(self) -> dict[str, objects_pb2.Service]:
        return self.objects[Kind.SERVICE]  # type: ignore[return-value]

    @property
    def tasks(self) -> TaskTable:
        table = self.objects[Kind.TASK]
        assert isinstance(table, TaskTable)
        return table

    @property
    def networks(self) -> dict[str, objects_pb2.Network]:
        return self.objects[Kind.NETWORK]  # type: ignore[return-value]

    @property
    def clusters(self) -> dict[str, objects_pb2.Cluster]:
        return self.objects[Kind.CLUSTER]  # type: ignore[return-value]

    def service_task_bytes(self, service_id: str) -> list[bytes]:
        """The service's tasks as stored (serialized), for decoding off the loop."""
        group = self.tasks_by_service.get(service_id)
        table = self.tasks
        return [table.serialized(i) for i in group.ids] if group else []

    def get(self, kind: Kind, obj_id: str) -> Any | None:
        return self.objects[kind].get(obj_id)

    def cluster(self) -> objects_pb2.Cluster | None:
        return next(iter(self.clusters.values()), None)

    # ---- subscribing ----------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def add_resync_listener(self, listener: Callable[[], None]) -> None:
        """Called after a re-list, when events may have been missed: re-check everything."""
        self._resync_listeners.append(listener)

    async def wait_for(self, revision: int, timeout: float = 5.0) -> None:
        """Return once the cache has seen `revision` (read-your-writes for the control API)."""
        if self.revision >= revision:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._revision_waiters.append((revision, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            _log.warning("cache lagging behind a write", wanted=revision, have=self.revision)

    # ---- feeding --------------------------------------------------------------------

    async def run(self) -> None:
        """List, then watch; list again whenever the watch falls behind a compaction.

        A broken watch stream (etcd restarting, a member lost) is reopened from the last
        revision the cache has applied, so no event is skipped.
        """
        while True:
            await self._relist()
            backoff = 0.1
            while True:
                try:
                    compacted = await self._watch()
                except (grpc.aio.AioRpcError, EtcdError) as exc:
                    _log.warning(
                        "watch broken; resuming",
                        revision=self.revision,
                        error=type(exc).__name__,
                        retry_in=round(backoff, 2),
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if compacted:
                    break
                backoff = 0.1
            _log.warning("watch revision compacted; listing again", revision=self.revision)

    async def _relist(self) -> None:
        kvs, revision = await self._store.list_raw(self._keys.prefix.encode())
        fresh = _empty_tables()
        for kv in kvs:
            parsed = self._keys.parse(kv.key)
            if parsed is None:
                continue
            kind, obj_id = parsed
            _put(fresh[kind], kind, obj_id, kv.value, kv.mod_revision)
        first = not self.synced.is_set()
        with self.lock:
            self.objects = fresh
            self._rebuild_indexes()
        self._advance(revision)
        self.synced.set()
        _log.info("cache listed", revision=revision, **{k.folder: len(v) for k, v in fresh.items()})
        if not first:
            for listener in self._resync_listeners:
                self._safe_call(listener)

    async def _watch(self) -> bool:
        """Apply watch events until the stream ends; True if it ended by compaction."""
        assert self._client.watch is not None
        prefix = self._keys.prefix.encode()
        stream = open_watch(self._client, prefix, self.revision + 1)
        async for response in stream:
            if response.compact_revision > 0:
                return True
            if response.canceled:
                raise WatchCanceledError(response.cancel_reason or "watch canceled by etcd")
            events = response.events
            for i, ev in enumerate(events):
                self._apply(ev)
                if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                    # A response can carry thousands of events (etcd sends what piled
                    # up in one): let the rest of the manager run now and then.
                    await asyncio.sleep(0)
            # Only the events say how far the cache is: a response's header revision can
            # be ahead of events still to come (the watch's created response, catch-up).
            if events:
                self._advance(max(ev.kv.mod_revision for ev in events))
        return False

    def _apply(self, ev: Any) -> None:
        with self.lock:
            parsed = self._keys.parse(ev.kv.key)
            revision = ev.kv.mod_revision
            if parsed is None:
                return
            kind, obj_id = parsed
            table = self.objects[kind]
            old = table.get(obj_id)
            if ev.type == _DELETE:
                if old is None:
                    return
                del table[obj_id]
                new = None
            else:
                if old is not None and old.meta.version >= revision:
                    return  # already seen (a re-list raced the watch)
                _put(table, kind, obj_id, ev.kv.value, revision)
                new = table[obj_id]
            self._index(kind, old, new, obj_id)
            event = Event(kind, old, new, revision, obj_id)
            for listener in self._listeners:
                self._safe_call(listener, event)

    def _advance(self, revision: int) -> None:
        if revision <= self.revision:
            return
        self.revision = revision
        if self._revision_waiters:
            still = []
            for wanted, fut in self._revision_waiters:
                if wanted <= revision:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((wanted, fut))
            self._revision_waiters = still

    def _rebuild_indexes(self) -> None:
        self.tasks_by_service = TaskIndex(self.tasks)
        self.tasks_by_node = TaskIndex(self.tasks)
        self.service_by_name = {}
        for task_id, task in self.tasks.items():
            self._index(Kind.TASK, None, task, task_id)
        for service in self.services.values():
            self._index(Kind.SERVICE, None, service, service.id)

    def _index(self, kind: Kind, old: Any, new: Any, obj_id: str) -> None:
        if kind is Kind.TASK:
            # The indexes hold `obj_id`, the table's own key string, so that 150,000 ids
            # are stored once, not once per index; and a task whose service and node
            # did not change (most changes: status reports) is left where it is.
            old_service = old.service_id if old is not None else None
            new_service = new.service_id if new is not None else None
            if old_service != new_service:
                if old_service is not None:
                    self.tasks_by_service.discard(old_service, obj_id)
                if new_service is not None:
                    self.tasks_by_service.add(new_service, obj_id)
            old_node = old.node_id if old is not None else ""
            new_node = new.node_id if new is not None else ""
            if old_node != new_node:
                if old_node:
                    self.tasks_by_node.discard(old_node, obj_id)
                if new_node:
                    self.tasks_by_node.add(new_node, obj_id)
        elif kind is Kind.SERVICE:
            if old is not None:
                self.service_by_name.pop(old.spec.annotations.name, None)
            if new is not None:
                self.service_by_name[new.spec.annotations.name] = new.id

    def _safe_call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            _log.exception("cache listener failed", listener=getattr(fn, "__qualname__", repr(fn)))

    # For tests and tools: feed objects without etcd.
    def load(self, objs: Iterable[Any], revision: int = 1) -> None:
        with self.lock:
            for obj in objs:
                kind, obj_id = Kind.of(obj), obj.id
                old = self.objects[kind].get(obj_id)
                self.objects[kind][obj_id] = obj
                self._index(kind, old, obj, obj_id)
                for listener in self._listeners:
                    self._safe_call(listener, Event(kind, old, obj, revision, obj_id))
        self._advance(revision)


def _put(
    table: MutableMapping[str, Any], kind: Kind, obj_id: str, value: bytes, revision: int
) -> None:
    """Keep what etcd returned: tasks as they are (serialized), everything else decoded."""
    if isinstance(table, TaskTable):
        table.put(obj_id, value, revision)
    else:
        table[obj_id] = decode(kind, value, revision)


def _empty_tables() -> dict[Kind, MutableMapping[str, Any]]:
    tables: dict[Kind, MutableMapping[str, Any]] = {k: {} for k in Kind if k is not Kind.TASK}
    tables[Kind.TASK] = TaskTable()
    return tables
