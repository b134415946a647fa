"""The control API served from threads (manager/controlapi/threaded.py): reads answer
while the manager's event loop is busy, everything else runs on the loop with the same
status codes, and bytes that are no request are INVALID_ARGUMENT. A real gRPC server on
a unix socket and a real client; the cache is fed directly (no etcd)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from common.api import control_pb2, control_pb2_grpc, objects_pb2
from manager.controlapi import ControlAPI, threaded
from manager.store import Cache
from manager.store.keys import KeySpace


def _cache() -> Cache:
    cache = Cache(None, SimpleNamespace(keys=KeySpace("/t/")))  # type: ignore[arg-type]
    service = objects_pb2.Service(id="s1")
    service.spec.annotations.name = "web"
    service.spec.replicated.replicas = 1
    cache.load([service])
    return cache


def _api(cache: Cache) -> ControlAPI:
    return ControlAPI(cache, None, lambda _: None, None)  # type: ignore[arg-type]


def _call(socket: Path, fn: Any) -> Any:
    with grpc.insecure_channel(f"unix:{socket}") as channel:
        return fn(control_pb2_grpc.ControlStub(channel))


async def test_a_read_answers_while_the_loop_is_busy(tmp_path: Path) -> None:
    socket = tmp_path / "c.sock"
    server, _ = threaded.serve(_api(_cache()), asyncio.get_running_loop(), f"unix:{socket}")
    try:
        took: list[float] = []
        names: list[str] = []

        def client() -> None:
            start = time.monotonic()
            reply = _call(
                socket, lambda s: s.ListServices(control_pb2.ListServicesRequest(), timeout=5)
            )
            took.append(time.monotonic() - start)
            names.extend(s.spec.annotations.name for s in reply.services)

        t = threading.Thread(target=client)
        t.start()
        time.sleep(1.5)  # noqa: ASYNC251 - on purpose: the loop is busy meanwhile
        await asyncio.to_thread(t.join, 10)
        assert names == ["web"]
        assert took[0] < 1.0
    finally:
        server.stop(0).wait()


async def test_other_calls_run_on_the_loop_with_their_status_codes(tmp_path: Path) -> None:
    socket = tmp_path / "c.sock"
    server, _ = threaded.serve(_api(_cache()), asyncio.get_running_loop(), f"unix:{socket}")
    try:

        def create() -> grpc.RpcError:
            spec = control_pb2.CreateServiceRequest()
            spec.spec.annotations.name = "-bad name-"
            with pytest.raises(grpc.RpcError) as err:
                _call(socket, lambda s: s.CreateService(spec, timeout=5))
            return err.value

        error = await asyncio.to_thread(create)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT

        def missing() -> grpc.RpcError:
            with pytest.raises(grpc.RpcError) as err:
                _call(
                    socket,
                    lambda s: s.GetService(
                        control_pb2.GetServiceRequest(service_id="nope"), timeout=5
                    ),
                )
            return err.value

        error = await asyncio.to_thread(missing)
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "nope" in (error.details() or "")
    finally:
        server.stop(0).wait()


async def test_bytes_that_are_no_request_are_invalid_argument(tmp_path: Path) -> None:
    socket = tmp_path / "c.sock"
    server, _ = threaded.serve(_api(_cache()), asyncio.get_running_loop(), f"unix:{socket}")
    try:

        def garbage() -> grpc.RpcError:
            with grpc.insecure_channel(f"unix:{socket}") as channel:
                call = channel.unary_unary("/swarmlet.Control/ListServices")
                with pytest.raises(grpc.RpcError) as err:
                    call(b"\xff\xff\xff\xff", timeout=5)
                return err.value

        error = await asyncio.to_thread(garbage)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        server.stop(0).wait()
