"""How late the event loop runs what is due: a timer every INTERVAL measures it.

A loop that is late by more than a heartbeat period answers heartbeats late too, so the
lag explains sessions lost under load. Every process exports it as the histogram
`swarmlet_event_loop_lag_seconds` and logs a warning when it passes WARN_LAG.
"""

from __future__ import annotations

import asyncio

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


async def watch_loop_lag() -> None:
    """Measure the loop's lag forever (run it as a background task)."""
    loop = asyncio.get_running_loop()
    while True:
        expected = loop.time() + INTERVAL
        await asyncio.sleep(INTERVAL)
        lag = max(0.0, loop.time() - expected)
        LAG.observe(lag)
        if lag > WARN_LAG:
            _log.warning("event loop running late", lag=round(lag, 2))
