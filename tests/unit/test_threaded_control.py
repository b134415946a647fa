"""The control API served from threads (manager/controlapi/threaded.py): reads answer
while the manager's event loop is busy, everything else runs on the loop with the same
status codes, and bytes that are no request are INVALID_ARGUMENT. A real gRPC server on
a unix socket and a real client; the cache is fed directly (no etcd)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from common.api import control_pb2, objects_pb2
from common.api.control_pb2_grpc import ControlStub as Stub
from manager.controlapi import ControlAPI, threaded
from manager.store import Cache
from tests.fakes import ReadOnlyStore, no_previews, offline_cache


def _cache() -> Cache:
    service = objects_pb2.Service(id="s1")
    service.spec.annotations.name = "web"
    service.spec.replicated.replicas = 1
    return offline_cache(service, prefix="/t/")


def _api(cache: Cache) -> ControlAPI:
    return ControlAPI(cache, ReadOnlyStore(), lambda _: None, no_previews)


def _call(socket: Path, fn: Any) -> Any:
    """`fn(channel)` on a channel to the server's socket."""
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        return fn(channel)


def _error(socket: Path, fn: Any) -> grpc.RpcError:
    """The error `_call(socket, fn)` ends with (it must fail)."""
    with pytest.raises(grpc.RpcError) as err:
        _call(socket, fn)
    return err.value


@pytest_asyncio.fixture
async def socket(tmp_path: Path) -> AsyncIterator[Path]:
    """A threaded control server over `_cache()` on this test's loop: its socket."""
    path = tmp_path / "c.sock"
    interval = sys.getswitchinterval()
    server, _ = threaded.serve(_api(_cache()), asyncio.get_running_loop(), f"unix:{path}")
    try:
        yield path
    finally:
        server.stop(0).wait()
        sys.setswitchinterval(interval)


async def test_serving_shortens_the_gil_switch_interval(socket: Path) -> None:
    # Each call takes the GIL many times; at Python's default 5 ms a busy loop made
    # `service ls` wait 458 ms at p99, at 1 ms 163 ms (docs/performance.md).
    assert sys.getswitchinterval() == pytest.approx(threaded.SWITCH_INTERVAL)
    assert threaded.SWITCH_INTERVAL < 0.005


async def test_a_read_answers_while_the_loop_is_busy(socket: Path) -> None:
    took: list[float] = []
    names: list[str] = []

    def client() -> None:
        start = time.monotonic()
        listing = control_pb2.ListServicesRequest()
        reply = _call(socket, lambda ch: Stub(ch).ListServices(listing, timeout=5))
        took.append(time.monotonic() - start)
        names.extend(s.spec.annotations.name for s in reply.services)

    t = threading.Thread(target=client)
    t.start()
    time.sleep(1.5)  # noqa: ASYNC251 - on purpose: the loop is busy meanwhile
    await asyncio.to_thread(t.join, 10)
    assert names == ["web"]
    assert took[0] < 1.0


async def test_other_calls_run_on_the_loop_with_their_status_codes(socket: Path) -> None:
    request = control_pb2.CreateServiceRequest()
    request.spec.annotations.name = "-bad name-"
    error = await asyncio.to_thread(
        _error, socket, lambda ch: Stub(ch).CreateService(request, timeout=5)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

    missing = control_pb2.GetServiceRequest(service_id="nope")
    error = await asyncio.to_thread(
        _error, socket, lambda ch: Stub(ch).GetService(missing, timeout=5)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (error.details() or "")


async def test_bytes_that_are_no_request_are_invalid_argument(socket: Path) -> None:
    def garbage(channel: grpc.Channel) -> Any:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/swarmlet.Control/ListServices"
        )
        return call(b"\xff\xff\xff\xff", timeout=5)

    error = await asyncio.to_thread(_error, socket, garbage)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
