"""Serving Prometheus metrics on an opt-in port (`--metrics-addr [HOST]:PORT`).

The metrics themselves are defined where they are measured (manager/metrics.py,
agent/metrics.py); this only starts the HTTP endpoint, in a thread of its own so that
a scrape never waits on the event loop. Without a HOST it listens on loopback only:
the metrics name nodes, services and images, so reaching them from other hosts must be
asked for (`--metrics-addr 0.0.0.0:PORT`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import start_http_server

# Where `--metrics-addr :PORT` listens.
DEFAULT_HOST = "127.0.0.1"


class MetricsAddressError(ValueError):
    """--metrics-addr is not [HOST]:PORT."""


@dataclass(frozen=True)
class MetricsEndpoint:
    """A running /metrics endpoint: where it listens, and how to stop it."""

    host: str
    port: int
    server: Any

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(addr: str) -> MetricsEndpoint:
    """Serve /metrics on `addr` ([HOST]:PORT, loopback without HOST, port 0 for any)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise MetricsAddressError(f"invalid metrics address {addr!r}: use [HOST]:PORT")
    host = host.strip("[]") or DEFAULT_HOST
    server, _thread = start_http_server(int(port), addr=host)
    return MetricsEndpoint(host, int(server.server_port), server)


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
