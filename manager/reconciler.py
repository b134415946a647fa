"""The loop every reconciler runs: level-triggered, fed by a dirty set.

Cache listeners mark keys (service ids, task ids...) dirty; the loop waits for work,
then reconciles the dirty keys in one pass whose writes go out in batched transactions.
A change after a quiet spell is handled at once; while changes keep coming, a short
debounce gathers them into fewer, larger passes. A failed pass puts its keys back and retries
with backoff. On start every key is dirty, so a reconciler recovers from etcd alone
(crash-only): nothing it remembers in memory decides anything across restarts.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections.abc import Callable, Iterable

from common.log import get_logger
from manager.metrics import RECONCILE
from manager.store import NotLeaderError, StoreError


class Reconciler:
    """Base class: subclasses implement `all_keys` and `reconcile`, and call `mark`."""

    name = "reconciler"
    # Wait this long after the first change for more to arrive...
    debounce = 0.0
    # ...but never delay a pass longer than this after the first change.
    max_delay = 1.0

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._timers: list[tuple[float, str]] = []
        self._dirty: set[str] = set()
        self._everything = True
        self._wake = asyncio.Event()
        self._wake.set()
        self.log = get_logger(self.name)
        self.passes = 0

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
            try:
                with RECONCILE.labels(self.name).time():
                    await self.reconcile(keys)
                self.passes += 1
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
