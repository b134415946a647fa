"""A key whose reconcile raises is isolated: the other keys of the pass are reconciled
and committed, the failure is logged with the key's id, and the key is retried alone
with its own backoff (exponential, capped), not at every pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from typing import Any

import pytest
import structlog

from common import states
from common.api import objects_pb2
from manager.orchestrator import orchestrator as orch_mod
from manager.orchestrator.orchestrator import Orchestrator
from manager.orchestrator.plan import Plan
from manager.orchestrator.replicated import plan_service
from manager.reconciler import Reconciler
from tests.fakes import FakeCache, fake_store
from tests.unit import factories as f
from tests.unit.factories import NOW


class Clock:
    """A clock the test moves; the reconciler's timers run on it."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Reconciler], None]]:
    tasks: list[asyncio.Task[None]] = []

    def start(r: Reconciler) -> None:
        tasks.append(asyncio.create_task(r.run()))

    yield start
    for t in tasks:
        t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    # The loop itself must not have died of the poisoned key.
    assert all(isinstance(r, asyncio.CancelledError) for r in results), results


# ---- the Orchestrator: one service whose planner raises -----------------------------------


class Poisoned:
    """plan_service, except that it raises for the service `bad`; counts its calls."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.calls: list[str] = []
        self.real = plan_service

    def __call__(self, service: objects_pb2.Service, *args: Any, **kw: Any) -> Plan:
        self.calls.append(service.id)
        if service.id == self.bad:
            raise ValueError(f"planner bug on {service.id}")
        return self.real(service, *args, **kw)


def tasks_of(cache: FakeCache, service_id: str) -> int:
    return len(cache.tasks_by_service.get(service_id, {}))


async def test_a_poisoned_service_does_not_stall_the_others(
    monkeypatch: pytest.MonkeyPatch, running: Callable[[Reconciler], None]
) -> None:
    planner = Poisoned("bad")
    monkeypatch.setattr(orch_mod, "plan_service", planner)  # what the orchestrator calls
    services = [
        f.service(2, service_id=sid, name=sid) for sid in ("alpha", "bad", "gamma", "delta")
    ]
    cache, store = fake_store(*services)
    clock = Clock()
    orch = Orchestrator(cache, store, clock)
    with structlog.testing.capture_logs() as logs:
        running(orch)
        await until(lambda: all(tasks_of(cache, s) == 2 for s in ("alpha", "gamma", "delta")))
    assert tasks_of(cache, "bad") == 0
    failed = [e for e in logs if e.get("service_id") == "bad"]
    assert failed, logs
    assert failed[0]["log_level"] == "error"
    assert failed[0]["exc_info"]  # the traceback goes with it
    assert failed[0]["retry_in"] == orch.key_backoff

    # A change to a healthy service is reconciled at once; the poisoned one is not
    # re-planned with it (its retry is not due).
    planned = planner.calls.count("bad")
    cache.put(f.changed(services[0], replicas=3))
    await until(lambda: tasks_of(cache, "alpha") == 3)
    assert planner.calls.count("bad") == planned

    # Its retry comes on its own when its backoff has passed...
    clock.now += orch.key_backoff
    orch.mark("nudge")  # any wake-up looks at the timers (the clock is the test's)
    await until(lambda: planner.calls.count("bad") == planned + 1)
    # ...and fails again: the next wait is twice as long.
    await until(lambda: orch.key_failures("bad") == 2)
    clock.now += orch.key_backoff
    orch.mark("nudge")
    await asyncio.sleep(0.05)
    assert planner.calls.count("bad") == planned + 1
    clock.now += orch.key_backoff
    orch.mark("nudge")
    await until(lambda: planner.calls.count("bad") == planned + 2)

    # Once the planner is fixed, the service converges and its failures are forgotten.
    planner.bad = ""
    await until(lambda: orch.key_failures("bad") == 3)
    clock.now += 4 * orch.key_backoff
    orch.mark("nudge")
    await until(lambda: tasks_of(cache, "bad") == 2)
    assert orch.key_failures("bad") == 0


# ---- the Reconciler loop: per-key backoff ---------------------------------------------------


class PerKey(Reconciler):
    """Reconciles each key alone through `isolate`; the keys in `bad` raise."""

    name = "test.perkey"

    def __init__(self, keys: Iterable[str], clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.keys = set(keys)
        self.bad: set[str] = set()
        # Keys the pass no longer has work for (as the reaper skips an emptied slot).
        self.gone: set[str] = set()
        self.done: list[str] = []
        self.tried: list[str] = []

    def all_keys(self) -> Iterable[str]:
        return set(self.keys)

    def _work(self, key: str) -> str:
        self.tried.append(key)
        if key in self.bad:
            raise RuntimeError(f"cannot reconcile {key}")
        return key

    async def reconcile(self, keys: set[str]) -> None:
        for key in sorted(keys - self.gone):
            out = self.isolate(key, partial(self._work, key), thing_id=key)
            if out is not None:
                self.done.append(out)


async def test_backoff_doubles_per_failure_and_is_capped(
    running: Callable[[Reconciler], None],
) -> None:
    clock = Clock()
    r = PerKey({"a", "b", "c"}, clock)
    r.key_backoff, r.key_backoff_max = 1.0, 4.0
    r.bad = {"b"}
    running(r)
    await until(lambda: {"a", "c"} <= set(r.done))
    waits = []
    for failures in range(1, 6):
        await until(lambda: r.key_failures("b") == failures)  # noqa: B023 - awaited at once
        retry_at = r.key_retry_at("b")
        assert retry_at is not None
        waits.append(retry_at - clock.now)
        clock.now = retry_at
        r.mark("a")  # wakes the loop, which fires the due timer
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert "a" in r.done[2:]  # the healthy key kept being reconciled


async def test_a_key_marked_while_backing_off_waits_for_its_retry(
    running: Callable[[Reconciler], None],
) -> None:
    clock = Clock()
    r = PerKey({"a", "b"}, clock)
    r.bad = {"b"}
    running(r)
    await until(lambda: r.key_failures("b") == 1)
    tries = r.tried.count("b")
    for _ in range(5):
        r.mark_many(["a", "b"])  # events keep coming for both
        await asyncio.sleep(0.01)
    assert r.tried.count("b") == tries
    assert r.done.count("a") >= 2


async def test_a_key_that_recovers_is_forgotten(running: Callable[[Reconciler], None]) -> None:
    clock = Clock()
    r = PerKey({"a", "b"}, clock)
    r.bad = {"b"}
    running(r)
    await until(lambda: r.key_failures("b") == 1)
    r.bad.clear()
    clock.now += r.key_backoff
    r.mark("a")
    await until(lambda: "b" in r.done)
    assert r.key_failures("b") == 0
    assert r.key_retry_at("b") is None


async def test_a_key_that_went_away_is_forgotten(running: Callable[[Reconciler], None]) -> None:
    clock = Clock()
    r = PerKey({"a", "b"}, clock)
    r.bad = {"b"}
    running(r)
    await until(lambda: r.key_failures("b") == 1)
    r.gone.add("b")  # e.g. its slot emptied: the pass no longer works on it
    clock.now += r.key_backoff
    r.mark("a")
    await until(lambda: r.key_failures("b") == 0)


def test_store_errors_are_not_a_keys_failure() -> None:
    from manager.store import StoreUnavailableError

    r = PerKey({"a"}, Clock())

    def down() -> str:
        raise StoreUnavailableError("etcd is unavailable")

    with pytest.raises(StoreUnavailableError):
        r.isolate("a", down)
    assert r.key_failures("a") == 0


# ---- the TaskReaper: one slot whose decision raises -----------------------------------------


async def test_a_poisoned_slot_does_not_stop_the_reaper(monkeypatch: pytest.MonkeyPatch) -> None:
    from manager.orchestrator import taskreaper as reaper_mod
    from manager.orchestrator.taskreaper import TaskReaper, slot_key, tasks_to_delete

    def poisoned(tasks: list[objects_pb2.Task], *args: Any) -> list[objects_pb2.Task]:
        if tasks[0].service_id == "bad":
            raise KeyError("reaper bug")
        return tasks_to_delete(tasks, *args)

    monkeypatch.setattr(reaper_mod, "tasks_to_delete", poisoned)
    good, bad = f.service(1, service_id="good"), f.service(1, service_id="bad")
    removed = [f.task(svc, 1, state=states.SHUTDOWN, desired=states.REMOVE) for svc in (good, bad)]
    cache, store = fake_store(f.node("n1"), good, bad, *removed)
    reaper = TaskReaper(cache, store)
    with structlog.testing.capture_logs() as logs:
        await reaper.reconcile(set(reaper.all_keys()))
    assert store.deleted == [removed[0].id]  # the good slot was reaped in the same pass
    key = slot_key(removed[1])
    assert reaper.key_failures(key) == 1
    assert [e["slot"] for e in logs if e["log_level"] == "error"] == [key]
