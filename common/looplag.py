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
# Young generations collected less often than Python's default (700 allocations): a
# manager holds millions of long-lived objects, and each collection that reaches the
# oldest generation walks all of them (a second or more at 150,000 tasks) to find next
# to nothing. The young one every 20,000 net allocations, not 50,000: a young
# collection walks what is young and alive, and at 50,000 that took 0.1-0.27 s at
# 5,000 nodes, 3-4 times a run, where about half the slowest `service ls` calls
# fell; at 20,000 none did (the middle generation's took over 0.1 s 0-3 times), for
# 2-3 s more of collecting in a 60-85 s run (docs/performance.md).
# (Most of what the young collections free is gRPC's: every incoming call leaves a
# cycle of five objects in `_find_method_handler`.) The middle one every 5 young
# collections, not 20, to keep its pauses short too.
GC_THRESHOLDS = (20_000, 5, 100)


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
