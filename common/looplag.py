"""How late the event loop runs what is due: a timer every INTERVAL measures it.

A loop that is late by more than a heartbeat period answers heartbeats late too, so the
lag explains sessions lost under load. Every process exports it as the histogram
`swarmlet_event_loop_lag_seconds` and logs a warning when it passes WARN_LAG; pauses of
the garbage collector, a common cause, are timed too (`swarmlet_gc_pause_seconds`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from prometheus_client import Histogram

from common.log import get_logger

_log = get_logger("looplag")
INTERVAL = 0.25
WARN_LAG = 1.0
LAG = Histogram(
    "swarmlet_event_loop_lag_seconds",
    "How late the event loop ran a timer that was due.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


GC_PAUSE = Histogram(
    "swarmlet_gc_pause_seconds",
    "How long Python's garbage collector stopped the process, by generation.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# When the collection in progress started (a list, to be set from the callback).
_gc_started = [0.0]
# Young generations collected far less often than Python's default (700 allocations):
# a manager holds millions of long-lived objects, and each collection that reaches the
# oldest generation walks all of them (a second or more at 150,000 tasks) to find next
# to nothing. The middle one is collected every 5 young collections, not every 20: it
# then walks at most 5 x 50,000 survivors, a pause of 0.2-0.3 s at 150,000 tasks
# instead of 0.5-0.8 s, which was where a run's slowest control calls fell.
GC_THRESHOLDS = (50_000, 5, 100)


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    pause = time.perf_counter() - _gc_started[0]
    GC_PAUSE.labels(str(info.get("generation", -1))).observe(pause)
    if pause > WARN_LAG / 2:
        _log.warning(
            "garbage collection paused the process",
            pause=round(pause, 2),
            generation=info.get("generation"),
            collected=info.get("collected"),
        )


def watch_gc() -> None:
    """Time every garbage collection (installed once per process), and collect less
    often (GC_THRESHOLDS); what the process holds at start is frozen out of it."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
        gc.set_threshold(*GC_THRESHOLDS)
        gc.freeze()


async def watch_loop_lag() -> None:
    """Measure the loop's lag forever (run it as a background task)."""
    watch_gc()
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + INTERVAL
        await asyncio.sleep(INTERVAL)
        lag = max(0.0, loop.time() - expected)
        LAG.observe(lag)
        if lag > WARN_LAG:
            _log.warning("event loop running late", lag=round(lag, 2))


# A timeout that fires this much later than it was due means the loop stood still.
STALLED = 0.25


async def wait_excluding_stalls(future: asyncio.Future[Any], timeout: float) -> bool:
    """Wait up to `timeout` seconds for `future`; return whether it is done (it is
    neither cancelled nor awaited for its result: the caller decides).

    Time this process's event loop stood still does not count: when the wait's own
    timer fires late, the loop was busy elsewhere and the answer may be waiting behind
    the stall, so the wait goes on for as long again as the timer was late (at most
    `timeout` more in all: a loop that is late all the time must not wait for ever). A
    process running thousands of hollow agents stalls for seconds under load;
    counting that against the manager made agents give up live sessions, and their
    reconnections fed the load that stalled it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    extended = 0.0
    while True:
        done, _ = await asyncio.wait({future}, timeout=max(0.0, deadline - loop.time()))
        if done:
            return True
        late = loop.time() - deadline
        if late < STALLED or extended >= timeout:
            return False
        late = min(late, timeout - extended)
        extended += late
        deadline = loop.time() + late
