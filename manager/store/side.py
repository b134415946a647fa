"""A thread with its own event loop and etcd connection, for the work that must not
wait on the manager's own event loop: keeping the manager's lease alive, and probing
etcd's health. When thousands of tasks are placed and reported at once the manager's
loop can be busy for seconds at a time; a lease kept alive from it would expire, and a
probe timed on it would report a healthy etcd as gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from etcd3aio import Etcd3Client

from common.log import get_logger
from manager.store.etcd import EtcdConfig, connect

_log = get_logger("store.side")
T = TypeVar("T")


class SideThread:
    """Runs coroutines on its own loop with its own etcd client."""

    def __init__(self, config: EtcdConfig) -> None:
        self._config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="etcd-side", daemon=True
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Etcd3Client | None = None
        self._connecting: asyncio.Lock | None = None
        self._thread.start()

    async def _connected(self) -> Etcd3Client:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            while self._client is None:
                try:
                    self._client = await self._stack.enter_async_context(connect(self._config))
                except Exception as exc:
                    _log.warning("cannot reach etcd from the side thread yet", error=str(exc))
                    await asyncio.sleep(0.5)
        return self._client

    async def run(self, work: Callable[[Etcd3Client], Awaitable[T]]) -> T:
        """Run `work(client)` on the thread's loop and wait for it from the caller's;
        cancelling the wait cancels the work."""

        async def on_thread() -> T:
            return await work(await self._connected())

        future = asyncio.run_coroutine_threadsafe(on_thread(), self._loop)
        try:
            return await asyncio.wrap_future(future)
        finally:
            future.cancel()

    def close(self) -> None:
        """Close the thread's etcd connection and stop the thread."""
        if not self._thread.is_alive():
            return
        closing = asyncio.run_coroutine_threadsafe(self._stack.aclose(), self._loop)
        with contextlib.suppress(Exception):
            closing.result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
