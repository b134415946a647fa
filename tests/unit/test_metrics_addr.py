"""`--metrics-addr :PORT` serves /metrics on loopback only; other hosts reach it only
when an address is given (common/metrics.py, used by both daemons)."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator

import pytest

from common.metrics import MetricsAddressError, MetricsEndpoint, serve_metrics


def outward_address() -> str:
    """An address of this host other than loopback (the one its default route uses)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))  # no packet is sent: UDP only picks a route
        except OSError:
            pytest.skip("this host has no route, so no address other than loopback")
        address: str = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this host has no address other than loopback")
    return address


def answers(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def endpoints() -> Iterator[list[MetricsEndpoint]]:
    started: list[MetricsEndpoint] = []
    try:
        yield started
    finally:
        for endpoint in started:
            endpoint.close()


def test_a_port_alone_listens_on_loopback_only(endpoints: list[MetricsEndpoint]) -> None:
    other = outward_address()
    endpoints.append(endpoint := serve_metrics(":0"))
    assert endpoint.host == "127.0.0.1"
    assert answers("127.0.0.1", endpoint.port)
    assert not answers(other, endpoint.port)


def test_a_given_address_is_used(endpoints: list[MetricsEndpoint]) -> None:
    other = outward_address()
    endpoints.append(endpoint := serve_metrics("0.0.0.0:0"))
    assert answers("127.0.0.1", endpoint.port)
    assert answers(other, endpoint.port)
    endpoints.append(endpoint := serve_metrics(f"{other}:0"))
    assert answers(other, endpoint.port)
    assert not answers("127.0.0.1", endpoint.port)


@pytest.mark.parametrize("addr", ["9100", "host:", "host:port"])
def test_a_bad_address_says_what_to_write(addr: str) -> None:
    with pytest.raises(MetricsAddressError, match=r"use \[HOST\]:PORT"):
        serve_metrics(addr)
