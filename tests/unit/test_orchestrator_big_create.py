"""A huge create keeps the manager's event loop responsive: the orchestrator plans a
large service in a worker thread (`Orchestrator.plan_in_thread`) and commits its
creates in slices with the loop getting turns between them (`commit_sliced`). Measured
here with a real Cache, as the CPU time of the loop's longest step; before, each pass
of a 30,000-replica service held the loop for its whole plan (~0.6 s and more)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from common.api import objects_pb2
from manager.orchestrator import orchestrator as orch_mod
from manager.store import BatchResult, Cache, Create, Update
from manager.store.store import Op
from tests.fakes import offline_cache
from tests.unit import factories as f
from tests.unit.factories import NOW

REPLICAS = 30_000


class CacheStore:
    """Writes into a real Cache, a watch response's worth (256 events) at a time with
    the loop's turn in between, as the cache applies what etcd sends; counts commits."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.revision = 1
        self.commits: list[int] = []

    async def commit(self, ops: Sequence[Op]) -> BatchResult:
        self.commits.append(len(ops))
        result = BatchResult()
        objs: list[Any] = []
        for op in ops:
            if isinstance(op, Create):
                objs.append(op.obj)
            else:
                assert isinstance(op, Update), f"the orchestrator deletes nothing here: {op}"
                current = self.cache.get(op.kind, op.obj_id)
                if current is None:
                    continue
                copy = type(current)()
                copy.CopyFrom(current)
                new = op.mutate(copy)
                if new is not None:
                    objs.append(new)
        await asyncio.sleep(0.001)  # etcd answers
        for start in range(0, len(objs), 256):
            self.revision += 1
            self.cache.load(objs[start : start + 256], self.revision)
            await asyncio.sleep(0)
        result.revision = self.revision
        result.written.extend(objs)
        return result


@contextlib.contextmanager
def longest_step(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """The most CPU time the loop's thread spent in one callback (one step of a
    coroutine) while the block ran. CPU time, not wall time: on a machine shared with
    other work the wall time of a step includes waiting for a core (and for the GIL,
    held by the planning thread), which is not the loop being held by this code."""
    longest = [0.0]
    run = asyncio.events.Handle._run

    def timed(handle: asyncio.events.Handle) -> None:
        started = time.thread_time()
        run(handle)
        longest[0] = max(longest[0], time.thread_time() - started)

    monkeypatch.setattr(asyncio.events.Handle, "_run", timed)
    # The test runner's own heap (a thousand tests' objects) is not this code's: a full
    # collection of it inside a step failed this test in the whole suite only.
    gc.collect()
    gc.freeze()
    try:
        yield longest
    finally:
        gc.unfreeze()


async def test_a_huge_create_never_holds_the_loop_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(orch_mod, "MAX_CREATES_PER_PASS", 10_000)
    service = f.service(REPLICAS, service_id="big", name="big")
    cache = offline_cache(service, f.node("n1"))
    store = CacheStore(cache)
    orch = orch_mod.Orchestrator(cache, store, lambda: NOW)

    async def passes() -> int:
        count = 0
        orch._dirty.clear()
        orch._everything = False
        keys = {"big"}
        while keys:
            await orch.reconcile(keys)
            count += 1
            keys, orch._dirty = orch._dirty, set()
        return count

    with longest_step(monkeypatch) as longest:
        count = await passes()
    assert count >= 3  # 10,000 a pass, and one that finds nothing to do
    slots = sorted(t.slot for t in cache.tasks_by_service["big"].values())
    assert slots == list(range(1, REPLICAS + 1))  # every slot once
    # Creates went out in slices (COMMIT_SLICE), not as one commit of 10,000.
    assert max(store.commits) <= orch_mod.COMMIT_SLICE
    # No step of the loop took 100 ms of CPU (a pass's plan took 0.6 s and more at
    # this size before, all in one step).
    assert longest[0] < 0.1, f"the loop ran {longest[0]:.3f} s of CPU in one step"


def test_plan_for_is_what_plan_gives() -> None:
    """The thread's planner and the loop's read the same things the same way."""
    service = f.service(5)
    tasks = [f.task(service, s) for s in (1, 2)]
    cache = offline_cache(service, f.node("n1"), *tasks)
    store = CacheStore(cache)
    orch = orch_mod.Orchestrator(cache, store, lambda: NOW)
    plan = orch.plan(service.id, NOW)
    again = orch_mod.plan_for(
        service, [objects_pb2.Task.FromString(t.SerializeToString()) for t in tasks],
        cache.nodes, NOW, None, None,
    )  # fmt: skip
    assert (
        sorted(t.slot for t in plan.creates) == sorted(t.slot for t in again.creates) == [3, 4, 5]
    )


def test_a_create_is_planned_a_few_times_not_once_per_4096_tasks() -> None:
    """Each plan reads every slot and task of the service: a 100,000-replica create in
    passes of 4,096 was planned 25 times (quadratic); a pass may now create an eighth."""
    cache = offline_cache(
        f.service(100_000, service_id="big"), f.service(1_000, service_id="small")
    )
    store = CacheStore(cache)
    orch = orch_mod.Orchestrator(cache, store, lambda: NOW)
    assert orch._pass_budget("big") == 100_000 // orch_mod.PLANS_PER_CREATE
    assert orch._pass_budget("small") == orch_mod.MAX_CREATES_PER_PASS
