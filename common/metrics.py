"""Serving Prometheus metrics on an opt-in port (`--metrics-addr HOST:PORT`).

The metrics themselves are defined where they are measured (manager/metrics.py,
agent/metrics.py); this only starts the HTTP endpoint, in a thread of its own so that
a scrape never waits on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import start_http_server


class MetricsAddressError(ValueError):
    """--metrics-addr is not HOST:PORT."""


def serve_metrics(addr: str) -> int:
    """Serve /metrics on `addr` (HOST:PORT, port 0 for any); returns the port."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise MetricsAddressError(f"invalid metrics address {addr!r}: use HOST:PORT")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0")
    return int(server.server_port)


def by_state(metric: Any, name: Callable[[int], str]) -> Callable[[int], Any]:
    """The child of a metric labelled by state, for a state number, looked up once per
    state (`labels()` costs more than the update itself on a hot path)."""
    children: dict[int, Any] = {}

    def child(state: int) -> Any:
        found = children.get(state)
        if found is None:
            found = children[state] = metric.labels(name(state))
        return found

    return child
