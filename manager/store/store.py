"""Writes to etcd: every write is a transaction that compares the object's mod_revision,
and bulk work is split into transactions of at most MAX_TXN_OPS operations.

A caller describes what it wants as operations (`Create`, `Update`, `Delete`) and
`Store.commit` applies them. An `Update` carries a function from the current object to
the new one, so when a transaction loses a race the store re-reads the objects it
touched and applies the functions again: callers never see a conflict unless they
asked to pin a version. A commit keeps a few transactions in flight at once.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from etcd3aio import Etcd3Client, EtcdError, prefix_range_end
from etcd3aio._protobuf import Compare
from etcd3aio.kv import KVService

from common.timeutil import now_timestamp, stamp_now
from manager.store.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    NotLeaderError,
    StoreError,
)
from manager.store.etcd import translate
from manager.store.keys import KeySpace, Kind, decode

# etcd's default --max-txn-ops.
MAX_TXN_OPS = 128
# etcd refuses a request over --max-request-bytes (1.5 MiB by default; its gRPC server
# takes 2 MiB): transactions are also split by size, well below that.
MAX_TXN_BYTES = 1024 * 1024
_MAX_ATTEMPTS = 8
# Transactions of one commit sent at once. Under load each answer waits its turn on the
# busy event loop, so a commit takes about as many loop turns as it has rounds: with 4,
# an orchestrator pass of 4,096 new tasks took 0.8-2.6 s, 0.6-2.1 s of it committing.
# At 5,000 nodes: 3,191-3,321 placements/s with 4, 3,554-4,053 with 16, 4,021-5,522
# with 32. 32 holds 10-25 MiB more at the peak, which fits since the manager runs on
# jemalloc (with it, four alternated pairs: 3,882-4,632/s with 16, 4,250-5,295/s with 32).
MAX_IN_FLIGHT = 32

Mutator = Callable[[Any], Any | None]


@dataclass
class Create:
    """Create `obj`; fails with AlreadyExistsError if its key (or unique name) exists."""

    obj: Any
    unique_name: str | None = None


@dataclass
class Update:
    """Replace object `obj_id` of `kind` by `mutate(copy of current)`.

    `mutate` returns the new object, or None to leave it alone. With `expect_version`
    the update fails with ConflictError unless the stored version is that one.
    """

    kind: Kind
    obj_id: str
    mutate: Mutator
    expect_version: int | None = None
    base: Any = None  # the current object if the caller has it (from the cache)


@dataclass
class Delete:
    """Delete object `obj_id` of `kind` if `check(current)` holds (default: always).

    `also` are extra keys deleted in the same transaction (a service's name key).
    """

    kind: Kind
    obj_id: str
    check: Callable[[Any], bool] | None = None
    expect_version: int | None = None
    also: list[bytes] = field(default_factory=list)
    base: Any = None


Op = Create | Update | Delete


@dataclass
class BatchResult:
    """What a commit did: objects written (with their new versions), ids deleted, and
    the operations that failed with the error that stopped each."""

    revision: int = 0
    written: list[Any] = field(default_factory=list)
    deleted: list[tuple[Kind, str]] = field(default_factory=list)
    failed: list[tuple[Op, StoreError]] = field(default_factory=list)

    def raise_first(self) -> None:
        if self.failed:
            raise self.failed[0][1]


class Store:
    """The only writer of etcd. `base_reader` gives the current object from the cache
    so that most updates need no read before the write."""

    def __init__(
        self,
        client: Etcd3Client,
        keys: KeySpace,
        *,
        endpoints: str,
        base_reader: Callable[[Kind, str], Any] | None = None,
        timeout: float = 10.0,
        txn_observer: Callable[[float], None] | None = None,
    ) -> None:
        assert client.kv is not None
        self._kv: KVService = client.kv
        self.keys = keys
        self._endpoints = endpoints
        self.base_reader = base_reader
        self._timeout = timeout
        # (key, value) that must hold for every write: the leader key for leader writes.
        self.guard: tuple[bytes, bytes] | None = None
        # Told how long each transaction took (the manager's metrics).
        self.txn_observer = txn_observer

    def guarded(self, key: bytes, value: bytes) -> Store:
        """A store whose every transaction also requires `key` to hold `value`."""
        clone = copy.copy(self)
        clone.guard = (key, value)
        return clone

    # ---- single-object conveniences -------------------------------------------------

    async def create(self, obj: Any, *, unique_name: str | None = None) -> Any:
        result = await self.commit([Create(obj, unique_name)])
        result.raise_first()
        return result.written[0]

    async def update(
        self, kind: Kind, obj_id: str, mutate: Mutator, *, expect_version: int | None = None
    ) -> Any | None:
        """The updated object, or None if `mutate` declined."""
        result = await self.commit([Update(kind, obj_id, mutate, expect_version)])
        result.raise_first()
        return result.written[0] if result.written else None

    async def delete(self, kind: Kind, obj_id: str, *, also: Sequence[bytes] = ()) -> int:
        """Delete one object (and `also` keys); the revision of the deletion (0 if absent)."""
        result = await self.commit([Delete(kind, obj_id, also=list(also))])
        result.raise_first()
        return result.revision

    async def get(self, kind: Kind, obj_id: str) -> Any | None:
        """A linearizable read of one object (the cache is the usual way to read)."""
        resp = await self._call(self._kv.get(self.keys.key(kind, obj_id), timeout=self._timeout))
        if not resp.kvs:
            return None
        kv = resp.kvs[0]
        return decode(kind, kv.value, kv.mod_revision)

    async def list_raw(
        self, folder: bytes, revision: int = 0, page: int = 5000
    ) -> tuple[list[Any], int]:
        """All key-values under `folder` at one revision, paginated; (kvs, revision)."""
        end = prefix_range_end(folder)
        start = folder
        out: list[Any] = []
        while True:
            resp = await self._call(
                self._kv.get(
                    start, range_end=end, revision=revision, limit=page, timeout=self._timeout
                )
            )
            if revision == 0:
                revision = resp.header.revision
            out.extend(resp.kvs)
            if not resp.more or not resp.kvs:
                return out, revision
            start = resp.kvs[-1].key + b"\x00"

    # ---- ephemeral keys on a lease (sessions, presence) -----------------------------

    async def put_leased(self, objs: Sequence[Any], lease: int) -> int:
        """Write `objs` attached to `lease` (no version checks: these keys have one
        writer, the manager whose lease holds them). Returns the last revision."""
        revision = 0
        for start in range(0, len(objs), MAX_TXN_OPS):
            puts = [
                KVService.txn_op_put(self.keys.key_of(o), _serialize(o), lease=lease)
                for o in objs[start : start + MAX_TXN_OPS]
            ]
            resp = await self._call(self._kv.txn([], puts, timeout=self._timeout))
            revision = resp.header.revision
        return revision

    async def delete_if_unchanged(self, obj: Any) -> None:
        """Delete `obj`'s key if it still holds exactly what was written (not a newer
        value written since by someone else)."""
        key = self.keys.key_of(obj)
        await self._call(
            self._kv.txn(
                [KVService.txn_compare_value(key, _serialize(obj))],
                [KVService.txn_op_delete(key)],
                timeout=self._timeout,
            )
        )

    # ---- batched commits --------------------------------------------------------------

    async def commit(self, ops: Sequence[Op]) -> BatchResult:
        """Apply `ops` in transactions of at most MAX_TXN_OPS operations each.

        Each transaction is atomic; a commit of more operations than fit in one is not.
        Up to MAX_IN_FLIGHT transactions are sent at once (etcd applies concurrent
        proposals in one raft round), except that a transaction touching a key of one
        in flight waits for it, so the operations on a key apply in their order.
        """
        result = BatchResult()
        flights: list[tuple[asyncio.Future[None], set[bytes]]] = []
        chunk: list[_Prepared] = []
        size = nbytes = 0
        limit = MAX_TXN_OPS - (1 if self.guard else 0)
        try:
            for op in ops:
                prepared = self._prepare(op, base=None)
                if prepared is None:
                    continue
                if isinstance(prepared, StoreError):
                    result.failed.append((op, prepared))
                    continue
                if chunk and (
                    size + prepared.size > limit or nbytes + prepared.nbytes > MAX_TXN_BYTES
                ):
                    await self._launch(chunk, result, flights)
                    chunk, size, nbytes = [], 0, 0
                    # A turn for the rest of the manager between transactions: preparing
                    # a few thousand operations (the status writer's batches) held the
                    # loop 100-250 ms at a time.
                    await asyncio.sleep(0)
                chunk.append(prepared)
                size += prepared.size
                nbytes += prepared.nbytes
            if chunk:
                await self._launch(chunk, result, flights)
        finally:
            # Every transaction sent is waited for, also when one failed, so that what
            # was written is in the result; then the first error is raised.
            errors = await asyncio.gather(*(f for f, _ in flights), return_exceptions=True)
        for error in errors:
            if isinstance(error, BaseException):
                raise error
        return result

    async def _launch(
        self,
        chunk: list[_Prepared],
        result: BatchResult,
        flights: list[tuple[asyncio.Future[None], set[bytes]]],
    ) -> None:
        keys = {k for p in chunk for k in p.watched}
        if any(not keys.isdisjoint(touched) for _, touched in flights):
            keep = 0
        else:
            keep = MAX_IN_FLIGHT - 1
        while len(flights) > keep:
            future = flights[0][0]
            await asyncio.wait([future])
            error = future.exception()
            if error is not None:
                raise error  # commit() waits for the others before it passes it on
            flights.pop(0)
        flights.append((asyncio.ensure_future(self._commit_chunk(chunk, result)), keys))

    def _prepare(self, op: Op, base: Any, fresh: bool = False) -> _Prepared | StoreError | None:
        """Compares and requests for `op` against `base` (its current value, None if absent).

        Returns None when the op has nothing to do, a StoreError when it cannot succeed.
        """
        keys = self.keys
        if isinstance(op, Create):
            obj = op.obj
            if not fresh:
                now = now_timestamp()
                obj.meta.created_at.CopyFrom(now)
                obj.meta.updated_at.CopyFrom(now)
            key = keys.key_of(obj)
            value = _serialize(obj)
            compares = [KVService.txn_compare_create_revision(key, 0)]
            requests = [KVService.txn_op_put(key, value)]
            watched = [key]
            nbytes = 2 * len(key) + len(value)
            if op.unique_name is not None:
                name_key = keys.name_key(Kind.of(obj), op.unique_name)
                compares.append(KVService.txn_compare_create_revision(name_key, 0))
                requests.append(KVService.txn_op_put(name_key, obj.id.encode()))
                watched.append(name_key)
                nbytes += 2 * len(name_key) + len(obj.id)
            return _Prepared(op, compares, requests, watched, obj, nbytes)
        kind, obj_id = op.kind, op.obj_id
        key = keys.key(kind, obj_id)
        if not fresh:
            base = op.base if op.base is not None else self._cached(kind, obj_id)
        if isinstance(op, Update):
            if base is None:
                if fresh:
                    return NotFoundError(f"{kind.folder[:-1]} {obj_id} not found")
                # Not in the cache (yet): send a compare that fails, so the failure branch
                # reads the object and the update is retried on what etcd holds.
                return _Prepared(
                    op, [KVService.txn_compare_create_revision(key, -1)], [], [key], None, len(key)
                )
            if op.expect_version is not None and base.meta.version != op.expect_version:
                return ConflictError(
                    f"{kind.folder[:-1]} {obj_id} changed since it was read (version "
                    f"{op.expect_version}, now {base.meta.version})"
                )
            copy = kind.message()
            copy.CopyFrom(base)
            new = op.mutate(copy)
            if new is None:
                return None
            stamp_now(new.meta.updated_at)
            value = _serialize(new)
            return _Prepared(
                op,
                [_compare_mod_revision(key, base.meta.version)],
                [KVService.txn_op_put(key, value)],
                [key],
                new,
                2 * len(key) + len(value),
            )
        # Delete
        if base is None:
            if fresh:
                return None  # already gone: nothing to do
            return _Prepared(
                op, [KVService.txn_compare_create_revision(key, -1)], [], [key], None, len(key)
            )
        if op.expect_version is not None and base.meta.version != op.expect_version:
            return ConflictError(f"{kind.folder[:-1]} {obj_id} changed since it was read")
        if op.check is not None and not op.check(base):
            return None
        requests = [KVService.txn_op_delete(key)] + [KVService.txn_op_delete(k) for k in op.also]
        nbytes = 2 * len(key) + sum(len(k) for k in op.also)
        return _Prepared(
            op, [_compare_mod_revision(key, base.meta.version)], requests, [key], base, nbytes
        )

    async def _commit_chunk(self, chunk: list[_Prepared], result: BatchResult) -> None:
        for _attempt in range(_MAX_ATTEMPTS):
            compares = [c for p in chunk for c in p.compares]
            success = [r for p in chunk for r in p.requests]
            # The failure branch reads only the guard: conflicts are rare, so the keys
            # are read again in a second request when one happens rather than a get
            # per key being built and sent with every transaction.
            failure = []
            if self.guard is not None:
                compares.append(KVService.txn_compare_value(*self.guard))
                failure.append(KVService.txn_op_get(self.guard[0]))
            started = time.monotonic()
            resp = await self._call(self._kv.txn(compares, success, failure, timeout=self._timeout))
            if self.txn_observer is not None:
                self.txn_observer(time.monotonic() - started)
            if resp.succeeded:
                revision = resp.header.revision
                result.revision = max(result.revision, revision)
                for p in chunk:
                    if isinstance(p.op, Delete):
                        result.deleted.append((p.op.kind, p.op.obj_id))
                    elif p.obj is not None:
                        p.obj.meta.version = revision
                        result.written.append(p.obj)
                return
            # Lost a race: re-prepare every op on what etcd holds now.
            if self.guard is not None:
                holder = resp.responses[-1].response_range.kvs
                if not holder or holder[0].value != self.guard[1]:
                    raise NotLeaderError("this manager is no longer the leader")
            watched = [k for p in chunk for k in p.watched]
            reads = await self._call(
                self._kv.txn([], [KVService.txn_op_get(k) for k in watched], timeout=self._timeout)
            )
            current: dict[bytes, Any] = {}
            for key, r in zip(watched, reads.responses, strict=True):
                current[key] = r.response_range.kvs[0] if r.response_range.kvs else None
            retry: list[_Prepared] = []
            for p in chunk:
                op = p.op
                if isinstance(op, Create):
                    taken = [k for k in p.watched if current[k] is not None]
                    if taken:
                        kind_name = Kind.of(op.obj).folder[:-1]
                        what = (
                            f"a {kind_name} named {op.unique_name!r} already exists"
                            if op.unique_name is not None
                            and taken[-1] == p.watched[-1]
                            and len(p.watched) > 1
                            else f"{Kind.of(op.obj).folder[:-1]} {op.obj.id} already exists"
                        )
                        result.failed.append((op, AlreadyExistsError(what)))
                        continue
                    again = self._prepare(op, None, fresh=True)
                else:
                    kv = current[p.watched[0]]
                    base = decode(op.kind, kv.value, kv.mod_revision) if kv is not None else None
                    again = self._prepare(op, base, fresh=True)
                if again is None:
                    continue
                if isinstance(again, StoreError):
                    result.failed.append((op, again))
                    continue
                retry.append(again)
            if not retry:
                return
            chunk = retry
        for p in chunk:
            result.failed.append((p.op, ConflictError("too much contention; try again")))

    def _cached(self, kind: Kind, obj_id: str) -> Any | None:
        return self.base_reader(kind, obj_id) if self.base_reader else None

    async def _call(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError) as exc:
            raise translate(exc, self._endpoints) from exc
        except asyncio.CancelledError:
            raise


@dataclass
class _Prepared:
    op: Op
    compares: list[Any]
    requests: list[Any]
    watched: list[bytes]
    obj: Any

    # About what the op adds to a transaction request: its keys and values (with
    # etcd's framing a few bytes more, which MAX_TXN_BYTES leaves room for).
    nbytes: int

    @property
    def size(self) -> int:
        return max(len(self.compares), len(self.requests), len(self.watched))


def _serialize(obj: Any) -> bytes:
    # The version is the key's mod_revision, never stored in the value.
    version = obj.meta.version
    obj.meta.version = 0
    data: bytes = obj.SerializeToString()
    obj.meta.version = version
    return data


def _compare_mod_revision(key: bytes, revision: int) -> Compare:
    return Compare(result=Compare.EQUAL, target=Compare.MOD, key=key, mod_revision=revision)
