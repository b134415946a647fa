"""The control API served from threads of its own, so that it answers while the
manager's event loop is busy.

The manager does its work on one asyncio loop: at thousands of nodes that loop runs
flat out, and a control call served on it waits behind everything else that is ready
(`service ls` took 130 ms at the median and 800 ms at p99 while 150,000 tasks were
being started). Here the control API is a synchronous gRPC server with a thread pool:

- reads (`READS`: get/list of nodes, tasks, services, the cluster) run in the calling
  thread, straight on the cache, holding `Cache.lock` so that they see no half-applied
  change (ListTasks holds it only while it gathers the tasks, not while it sorts and
  copies them). The thread takes the GIL at Python's switch interval, so a read waits
  milliseconds, not for the loop. A call takes the GIL dozens of times on its way
  through gRPC's threads, each time waiting up to that interval behind the busy loop,
  so the manager sets it to SWITCH_INTERVAL (Python's default is 5 ms): `service ls`
  at 1,500 nodes starting 45,000 tasks, p50 / p99 25 / 458 ms at 5 ms, 14 / 246 ms at
  2 ms, 9 / 163 ms at 1 ms, with no change in the time to all running or the
  manager's CPU (docs/performance.md);
- everything else (writes, which go through the store and wait for the cache, and the
  logs and events streams) runs on the manager's loop, as before: the thread hands the
  call over and waits for it.

Either way the ControlAPI's own methods do the work, so the checks and status codes
are the same. Their `context` is a `LoopContext`, which answers `abort` by raising
`Aborted`; the thread then aborts the real call with that status.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

import grpc

from common.api import control_pb2
from manager.controlapi.api import ControlAPI
from manager.grpc_errors import Undecodable, tolerant, undecodable_details

READS = frozenset(
    {
        "GetNode",
        "ListNodes",
        "GetTask",
        "ListTasks",
        "GetService",
        "ListServices",
        "GetNetwork",
        "ListNetworks",
        "GetCluster",
    }
)
# Reads that hold `Cache.lock` only for the part that needs it, themselves.
_LOCKS_ITSELF = frozenset({"ListTasks"})
# Streamed reads (lists in parts): they too run in the calling thread, and take
# `Cache.lock` themselves while they choose what to send.
READ_STREAMS = frozenset({"ListNodesStream", "ListTasksStream", "ListServicesStream"})
# Threads for calls in flight, streams included: each `logs -f` or `events` holds one
# for as long as it runs, so there are enough for many watchers and the calls besides
# (the pool starts them only as they are needed).
MAX_THREADS = 256
# How long a thread may hold the GIL while another waits for it, seconds (`serve`).
SWITCH_INTERVAL = 0.001


class Aborted(grpc.aio.AbortError):
    """A ControlAPI method aborted its call with this status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class LoopContext:
    """What a ControlAPI method gets as its context when served from a thread: the
    real call's context, except that `abort` raises `Aborted` for the thread to
    pass on."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Aborted(code, details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def _run_now(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that never waits to its end, in this thread. A read that would
    wait (it never should) is an error, not a hang."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a control API read tried to wait; it must not")


class ThreadedControl:
    """Builds the gRPC handlers that serve `api` from threads; `loop` is the manager's."""

    def __init__(self, api: ControlAPI, loop: asyncio.AbstractEventLoop) -> None:
        self.api = api
        self.loop = loop

    def handler(self) -> grpc.GenericRpcHandler:
        service = control_pb2.DESCRIPTOR.services_by_name["Control"]
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            decode = tolerant(getattr(control_pb2, method.input_type.name).FromString)
            encode = _encode
            if method.name in READ_STREAMS:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                    self._read_stream(method.name, path), decode, encode
                )
            elif method.server_streaming:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                    self._stream(method.name, path), decode, encode
                )
            else:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                    self._unary(method.name, path), decode, encode
                )
        return grpc.method_handlers_generic_handler(service.full_name, handlers)

    def _unary(self, name: str, path: str) -> Callable[[Any, grpc.ServicerContext], Any]:
        method = getattr(self.api, name)
        read = name in READS
        lock = self.api.cache.lock if name not in _LOCKS_ITSELF else contextlib.nullcontext()

        def serve(request: Any, context: grpc.ServicerContext) -> Any:
            _check_decoded(request, context, path)
            ctx = LoopContext(context)
            try:
                if read:
                    with lock:
                        return _run_now(method(request, ctx))
                future = asyncio.run_coroutine_threadsafe(method(request, ctx), self.loop)
                context.add_callback(lambda: void(future.cancel()))
                return future.result()
            except Aborted as stop:
                context.abort(stop.code, stop.details)
            except concurrent.futures.CancelledError:
                context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled")

        return serve

    def _read_stream(
        self, name: str, path: str
    ) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        method = getattr(self.api, name)

        def serve(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            _check_decoded(request, context, path)
            stream = method(request, LoopContext(context))
            try:
                while True:
                    try:
                        item = _run_now(stream.__anext__())
                    except StopAsyncIteration:
                        return
                    yield item
            except Aborted as stop:
                context.abort(stop.code, stop.details)

        return serve

    def _stream(self, name: str, path: str) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
        method = getattr(self.api, name)

        def serve(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            _check_decoded(request, context, path)
            stream = method(request, LoopContext(context))
            current: list[concurrent.futures.Future[Any]] = []

            def cancel() -> None:
                for f in current:
                    f.cancel()

            context.add_callback(cancel)
            try:
                while context.is_active():
                    future = asyncio.run_coroutine_threadsafe(_next(stream), self.loop)
                    current[:] = [future]
                    try:
                        item = future.result()
                    except StopAsyncIteration:
                        return
                    except concurrent.futures.CancelledError:
                        return
                    except Aborted as stop:
                        context.abort(stop.code, stop.details)
                    yield item
            finally:
                # Let the generator end on the loop (its cleanup is async).
                closing = asyncio.run_coroutine_threadsafe(stream.aclose(), self.loop)
                closing.add_done_callback(lambda f: f.cancelled() or f.exception())

        return serve


def void(_: object) -> None:
    """Drop a result (for callbacks that must return None)."""


async def _next(stream: Any) -> Any:
    return await stream.__anext__()


def _encode(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _check_decoded(request: Any, context: grpc.ServicerContext, path: str) -> None:
    if isinstance(request, Undecodable):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, undecodable_details(path, request))


def serve(
    api: ControlAPI,
    loop: asyncio.AbstractEventLoop,
    address: str,
    credentials: grpc.ServerCredentials | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.Server, int]:
    """Start a threaded control server on `address` (`unix:PATH`, or HOST:PORT with
    `credentials`); the port it got (0: none). Sets the process's GIL switch interval
    to SWITCH_INTERVAL, for the calls' threads to get their turns sooner."""
    sys.setswitchinterval(SWITCH_INTERVAL)
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="control"),
        handlers=[ThreadedControl(api, loop).handler()],
        maximum_concurrent_rpcs=MAX_THREADS * 4,
        options=options,
    )
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    server.start()
    return server, int(port)
