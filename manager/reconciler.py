"""The loop every reconciler runs: level-triggered, fed by a dirty set.

Cache listeners mark keys (service ids, task ids...) dirty; the loop waits for work,
then reconciles the dirty keys in one pass whose writes go out in batched transactions.
A change after a quiet spell is handled at once; while changes keep coming, a short
debounce gathers them into fewer, larger passes. A pass that fails on the store (StoreError)
puts its keys back and is retried whole with backoff. On start every key is dirty, so a
reconciler recovers from etcd alone (crash-only): nothing it remembers in memory decides
anything across restarts.

A pass does the work of each key (planning one service, reaping one slot) inside
`isolate`, and batches the writes of all of them. A key whose work raises (a bug, data
it cannot handle) is left out of the pass, logged with its id, and retried alone with a
backoff of its own (exponential, capped); the other keys go on. Without that, one
poisoned service would fail every pass, and no service would be reconciled.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from common.log import get_logger
from manager.metrics import RECONCILE
from manager.store import NotLeaderError, StoreError

T = TypeVar("T")


@dataclass
class _Failing:
    """A key whose work raised: how many times in a row, and when it is tried again."""

    failures: int
    retry_at: float


class Reconciler:
    """Base class: subclasses implement `all_keys` and `reconcile`, and call `mark`."""

    name = "reconciler"
    # Wait this long after the first change for more to arrive...
    debounce = 0.0
    # ...but never delay a pass longer than this after the first change.
    max_delay = 1.0
    # A key whose work raised is tried again after this long, twice as long after each
    # failure in a row, up to `key_backoff_max` (seconds on `clock`).
    key_backoff = 1.0
    key_backoff_max = 60.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._timers: list[tuple[float, str]] = []
        self._dirty: set[str] = set()
        self._everything = True
        self._wake = asyncio.Event()
        self._wake.set()
        self.log = get_logger(self.name)
        self.passes = 0
        # The keys whose work raised, until it succeeds (or they have no work any more).
        self._failing: dict[str, _Failing] = {}

    def mark(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    def mark_many(self, keys: Iterable[str]) -> None:
        self._dirty.update(keys)
        self._wake.set()

    def mark_at(self, when: float, key: str) -> None:
        """Mark `key` dirty at time `when` (on `clock`), e.g. when a restart delay ends."""
        heapq.heappush(self._timers, (when, key))
        self._wake.set()

    def _fire_timers(self) -> float | None:
        """Mark the keys whose time has come; seconds until the next timer, if any."""
        now = self.clock()
        while self._timers and self._timers[0][0] <= now:
            self._dirty.add(heapq.heappop(self._timers)[1])
        return self._timers[0][0] - now if self._timers else None

    async def _sleep_until_work(self) -> None:
        while True:
            next_timer = self._fire_timers()
            if self.has_work():
                return
            self._wake.clear()
            await self._wait_for_wake(next_timer)

    async def _wait_for_wake(self, timeout: float | None) -> bool:
        """Wait until woken (True) or `timeout` seconds pass (False).

        Not asyncio.wait_for: in Python 3.11 it returns, rather than raising, when it is
        cancelled just as the event is set, and the cancelled loop then ran on (a
        reconciler left running after its leadership was lost)."""
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    def has_work(self) -> bool:
        """Whether a pass is due; subclasses with other kinds of pending work extend it."""
        return bool(self._dirty) or self._everything

    def mark_everything(self) -> None:
        self._everything = True
        self._wake.set()

    def all_keys(self) -> Iterable[str]:
        raise NotImplementedError

    # ---- keys whose work raises --------------------------------------------------------

    def isolate(self, key: str, work: Callable[[], T], **ids: Any) -> T | None:
        """Run `work`, the part of a pass for `key`, and return what it returns; if it
        raises, return None and let the pass go on without this key.

        The failure is logged with `ids` (e.g. service_id=...) and the traceback, and
        the key is retried alone after its backoff; until then, marks of the key wait
        for that retry. A StoreError is not the key's fault but etcd's: it goes up, and
        the whole pass is retried. `work` must not return None."""
        with self._isolated(key, ids):
            return work()
        return None

    async def isolate_async(
        self, key: str, work: Callable[[], Awaitable[T]], **ids: Any
    ) -> T | None:
        """`isolate` for work that awaits (a plan made in a worker thread)."""
        with self._isolated(key, ids):
            return await work()
        return None

    @contextlib.contextmanager
    def _isolated(self, key: str, ids: dict[str, Any]) -> Iterator[None]:
        """The rule of `isolate`: a failure (not the store's) is the key's, swallowed and
        retried with the key's backoff; a success ends the key's failing streak."""
        try:
            yield
        except StoreError:
            raise
        except Exception:
            self._key_failed(key, ids)
            return
        if self._failing:
            self._failing.pop(key, None)

    def key_failures(self, key: str) -> int:
        """How many times in a row the work of `key` raised (0: it is not failing)."""
        failing = self._failing.get(key)
        return failing.failures if failing is not None else 0

    def key_retry_at(self, key: str) -> float | None:
        """When a failing key is tried again (on `clock`)."""
        failing = self._failing.get(key)
        return failing.retry_at if failing is not None else None

    def _key_failed(self, key: str, ids: dict[str, Any]) -> None:
        previous = self._failing.get(key)
        failures = previous.failures + 1 if previous is not None else 1
        delay = min(self.key_backoff * 2 ** (failures - 1), self.key_backoff_max)
        retry_at = self.clock() + delay
        self._failing[key] = _Failing(failures, retry_at)
        self.mark_at(retry_at, key)
        self.log.exception(
            "reconciling one key failed; retrying it alone",
            key=key,
            failures=failures,
            retry_in=round(delay, 2),
            **ids,
        )

    def _hold_back(self, keys: set[str], now: float) -> None:
        """Take out of `keys` the failing keys whose retry is not due yet (their timer
        marks them when it is)."""
        keys.difference_update(
            [k for k, failing in self._failing.items() if failing.retry_at > now and k in keys]
        )

    def _forget_settled(self, keys: set[str], started: float) -> None:
        """Forget the failing keys that were due in this pass and that the pass had no
        work for (a deleted service, an emptied slot): they are not failing any more.
        Keys the pass put back for later (`_dirty`) are still pending."""
        for key in [
            k
            for k, failing in self._failing.items()
            if failing.retry_at <= started and k in keys and k not in self._dirty
        ]:
            del self._failing[key]

    async def reconcile(self, keys: set[str]) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.1
        # (Re)started: what happened while no pass ran is unknown, so look at everything.
        self.mark_everything()
        last_pass = -1e9
        while True:
            await self._sleep_until_work()
            # A change after a quiet spell is handled at once; changes that follow on the
            # heels of a pass are gathered for `debounce` (at most `max_delay`).
            if self.debounce and loop.time() - last_pass < self.debounce:
                first = loop.time()
                while True:
                    self._wake.clear()
                    remaining = self.max_delay - (loop.time() - first)
                    if remaining <= 0:
                        break
                    if not await self._wait_for_wake(min(self.debounce, remaining)):
                        break
            self._wake.clear()
            keys, self._dirty = self._dirty, set()
            if self._everything:
                self._everything = False
                keys.update(self.all_keys())
            started = self.clock()
            if self._failing:
                self._hold_back(keys, started)
            try:
                with RECONCILE.labels(self.name).time():
                    await self.reconcile(keys)
                self.passes += 1
                if self._failing:
                    self._forget_settled(keys, started)
                backoff = 0.1
                last_pass = loop.time()
            except NotLeaderError:
                raise  # leadership is gone: the leader loop stops this reconciler
            except StoreError as exc:
                self._dirty.update(keys)
                self.log.warning(
                    "pass failed; retrying",
                    error=str(exc),
                    keys=len(keys),
                    retry_in=round(backoff, 2),
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 5.0)
                self._wake.set()
