"""The narrow faces of the store that the reconcilers are written against.

The reconcilers (orchestrator, scheduler, task reaper, node health) and the writers
beside them read a few tables of the cache, subscribe to its changes and commit batches
of operations; nothing more; the control API writes one object at a time. They are
typed against these protocols rather than the concrete `Cache` and `Store`, so that:
- what a reconciler depends on is written down in one place, and grows only on purpose;
- tests give them the named in-memory fakes of `tests/fakes.py`, checked by mypy like
  the real classes, instead of ad-hoc stand-ins passed with `type: ignore`.

The real `Cache` and `Store` satisfy these protocols structurally (no inheritance);
the check at the bottom makes mypy prove it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from common.api import objects_pb2
from manager.store.cache import Event
from manager.store.keys import KeySpace, Kind
from manager.store.store import BatchResult, Mutator, Op

Listener = Callable[[Event], None]


class CacheTables(Protocol):
    """The cache's tables, read-only: the current objects by id, and tasks by service
    and by node. Readers must not change what they get (copy first)."""

    @property
    def nodes(self) -> Mapping[str, objects_pb2.Node]: ...

    @property
    def services(self) -> Mapping[str, objects_pb2.Service]: ...

    @property
    def tasks(self) -> Mapping[str, objects_pb2.Task]: ...

    @property
    def networks(self) -> Mapping[str, objects_pb2.Network]: ...

    @property
    def tasks_by_service(self) -> Mapping[str, Mapping[str, objects_pb2.Task]]: ...

    @property
    def tasks_by_node(self) -> Mapping[str, Mapping[str, objects_pb2.Task]]: ...

    def service_task_bytes(self, service_id: str) -> list[bytes]:
        """The service's tasks as stored (serialized), for decoding off the loop."""
        ...

    def cluster(self) -> objects_pb2.Cluster | None:
        """The cluster object, once it exists."""
        ...

    def get(self, kind: Kind, obj_id: str) -> Any | None:
        """Any kind of object by id (sessions, managers... have no table above)."""
        ...


class ChangeFeed(Protocol):
    """The cache's change stream: listeners are called, in revision order, for every
    change; resync listeners after a re-list, when changes may have been missed."""

    def add_listener(self, listener: Listener) -> None: ...

    def add_resync_listener(self, listener: Callable[[], None]) -> None: ...


class CacheView(CacheTables, ChangeFeed, Protocol):
    """Everything a reconciler asks of the cache: its tables, its change stream, and
    waiting until it has seen a revision (a reconciler's own writes, before the next
    pass reads them)."""

    async def wait_for(self, revision: int) -> None: ...


class Committer(Protocol):
    """What reconcilers and writers ask of the store: commit a batch of operations
    (optimistic, batched into transactions), learning what was written and what failed."""

    async def commit(self, ops: Sequence[Op]) -> BatchResult: ...


class ObjectWriter(Protocol):
    """What the control API asks of the store: write one object at a time (each call a
    batch of one, its failure raised), and the key space, for the name keys a delete
    takes with it. It reads through the cache."""

    @property
    def keys(self) -> KeySpace: ...

    async def create(self, obj: Any, *, unique_name: str | None = None) -> Any: ...

    async def update(
        self, kind: Kind, obj_id: str, mutate: Mutator, *, expect_version: int | None = None
    ) -> Any | None:
        """The updated object, or None if `mutate` declined."""
        ...

    async def delete(self, kind: Kind, obj_id: str, *, also: Sequence[bytes] = ()) -> int:
        """Delete one object (and `also` keys); the revision of the deletion (0 if absent)."""
        ...


if TYPE_CHECKING:
    # mypy proves here that the real classes satisfy the protocols.
    from manager.store.cache import Cache
    from manager.store.store import Store

    def _real_classes_fit(cache: Cache, store: Store) -> tuple[CacheView, Committer, ObjectWriter]:
        return cache, store, store
