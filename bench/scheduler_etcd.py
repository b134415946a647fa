"""The scheduler benchmark with the etcd commits: a real etcd (the manager's own
EmbeddedEtcd, in a temporary directory), a real Store and Cache on it, wired as
manager/daemon/server.py wires them, and the real Scheduler reconciler started as the manager
starts it (`Scheduler.run()`).

Per run, under a key prefix of its own: the nodes, services and pending tasks are
written first and listed into a fresh cache (not timed); then the clock starts, the
scheduler's loop is started, and the clock stops when the cache has seen, through its
watch, every task ASSIGNED (or PENDING with an explanation, for a task that fits
nowhere). The prefix is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcd3aio import Etcd3Client, prefix_range_end

import manager.scheduler.scheduler as scheduler_module
from bench.common import BenchError
from bench.scheduler_workload import hollow_nodes, workload
from common import states
from common.api import objects_pb2
from manager.scheduler import Scheduler
from manager.store import Cache, Create, Event, Kind, Store
from manager.store.embedded import EmbeddedEtcd
from manager.store.etcd import EtcdConfig, connect
from manager.store.keys import KeySpace


@dataclass
class EtcdSample:
    variant: str
    nodes: int
    tasks: int
    # Scheduler started -> the cache has seen every task decided.
    seconds: float
    placed: int
    unplaced: int
    # Scheduler started -> the first placement seen back through the watch.
    first_seen: float
    # Time spent in schedule_group (the placement computation) inside the passes.
    placement: float
    passes: int
    # etcd transactions that carried the placements (distinct revisions seen).
    txns: int
    per_node_min: int
    per_node_max: int
    # Untimed preparation: writing the objects, listing them into the cache.
    write_seconds: float
    list_seconds: float
    timed: bool = True

    @property
    def rate(self) -> float:
        return self.placed / self.seconds


@dataclass
class _Tracker:
    """A cache listener that notes when each benchmark task is decided."""

    waiting: set[str]
    start: float = 0.0
    first: float | None = None
    end: float | None = None
    placed: int = 0
    unplaced: int = 0
    revisions: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, ev: Event) -> None:
        if ev.kind is not Kind.TASK or ev.new is None:
            return
        task: objects_pb2.Task = ev.new
        if task.id not in self.waiting:
            return
        if task.status.state == states.ASSIGNED:
            self.placed += 1
            self.revisions.add(ev.revision)
            if self.first is None:
                self.first = time.perf_counter()
        elif task.status.state == states.PENDING and task.status.err:
            self.unplaced += 1
        else:
            return
        self.waiting.discard(task.id)
        if not self.waiting:
            self.end = time.perf_counter()
            self.done.set()


@contextlib.contextmanager
def _timed_schedule_group(sink: list[float]) -> Iterator[None]:
    """Time each schedule_group call the scheduler makes (it looks the function up in
    its module on every call); the behaviour is unchanged."""
    original = scheduler_module.schedule_group

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - start)

    scheduler_module.schedule_group = timed
    try:
        yield
    finally:
        scheduler_module.schedule_group = original


async def _watching(cache: Cache, client: Etcd3Client) -> None:
    """Return once the cache's watch is established (`synced` is set after the list,
    before the watch starts): a write to a key that is no object, waited for."""
    assert client.kv is not None
    put = await client.kv.put(f"{cache._keys.prefix}sentinel".encode(), b"")
    await cache.wait_for(put.header.revision, timeout=30)
    if cache.revision < put.header.revision:
        raise BenchError("the cache's watch did not start within 30 s")


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, Exception):
            raise BenchError(f"a background task failed: {r!r}") from r


class CommittedBench:
    """One embedded etcd for all the committed runs."""

    def __init__(self, workdir: Path, timeout: float) -> None:
        self.workdir = workdir
        self.timeout = timeout
        # EmbeddedEtcd keeps its pid in workdir/etcd.pid while it runs.
        self.etcd = EmbeddedEtcd(workdir / "etcd", workdir / "etcd.log")
        self.url = ""
        self.client: Etcd3Client | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        self._stack.push_async_callback(self.etcd.stop)
        self.url = await self.etcd.start()
        self.client = await self._stack.enter_async_context(connect(EtcdConfig([self.url])))

    async def stop(self) -> None:
        self.client = None
        await self._stack.aclose()

    async def run(
        self,
        variant: str,
        node_count: int,
        tasks: int,
        services: int,
        *,
        timed: bool = True,
        progress: Callable[[str], None] = lambda _: None,
    ) -> EtcdSample:
        client = self.client
        assert client is not None
        assert client.kv is not None
        prefix = f"/swarmlet-bench-{uuid.uuid4().hex[:8]}/"
        store = Store(client, KeySpace(prefix), endpoints=self.url)
        nodes = hollow_nodes(node_count)
        work = workload(variant, tasks, services)
        runners: list[asyncio.Task[Any]] = []
        try:
            start = time.perf_counter()
            ops = [Create(n) for n in nodes]
            ops += [Create(s, unique_name=s.spec.annotations.name) for s in work.services]
            ops += [Create(t) for t in work.tasks]
            result = await store.commit(ops)
            if result.failed:
                raise BenchError(f"writing the workload failed: {result.failed[0][1]}")
            write_seconds = time.perf_counter() - start

            start = time.perf_counter()
            cache = Cache(client, store)
            store.base_reader = cache.get
            runners.append(asyncio.create_task(cache.run(), name="bench-cache"))
            await asyncio.wait_for(cache.synced.wait(), 60)
            await _watching(cache, client)
            list_seconds = time.perf_counter() - start
            if len(cache.tasks) != work.count or len(cache.nodes) != node_count:
                raise BenchError(
                    f"the cache lists {len(cache.tasks)} tasks and {len(cache.nodes)} nodes, "
                    f"expected {work.count} and {node_count}"
                )
            progress("written")

            tracker = _Tracker({t.id for t in work.tasks})
            cache.add_listener(tracker.on_event)
            scheduler = Scheduler(cache, store)
            placement: list[float] = []
            with _timed_schedule_group(placement):
                tracker.start = time.perf_counter()
                runners.append(asyncio.create_task(scheduler.run(), name="bench-scheduler"))
                try:
                    await asyncio.wait_for(tracker.done.wait(), self.timeout)
                except TimeoutError:
                    raise BenchError(
                        f"{variant}, {node_count} nodes: {len(tracker.waiting)} of {work.count} "
                        f"tasks not decided after {self.timeout:g} s"
                    ) from None
            assert tracker.end is not None
            await _stop(*runners)
            runners.clear()
            per_node = Counter(t.node_id for t in cache.tasks.values() if t.node_id)
            unknown = set(per_node) - set(cache.nodes)
            if unknown:
                raise BenchError(f"tasks assigned to {len(unknown)} unknown node(s)")
            return EtcdSample(
                variant=variant,
                nodes=node_count,
                tasks=work.count,
                seconds=tracker.end - tracker.start,
                placed=tracker.placed,
                unplaced=tracker.unplaced,
                first_seen=(tracker.first or tracker.end) - tracker.start,
                placement=sum(placement),
                passes=scheduler.passes,
                txns=len(tracker.revisions),
                per_node_min=min(per_node.values(), default=0),
                per_node_max=max(per_node.values(), default=0),
                write_seconds=write_seconds,
                list_seconds=list_seconds,
                timed=timed,
            )
        finally:
            with contextlib.suppress(BenchError):
                await _stop(*runners)
            # Leave etcd as it was: the run's keys deleted, their history compacted.
            with contextlib.suppress(Exception):
                deleted = await client.kv.delete(
                    prefix.encode(), range_end=prefix_range_end(prefix.encode()), timeout=30
                )
                await client.kv.compact(deleted.header.revision, timeout=30)
