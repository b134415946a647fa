"""Coalescing writer: gathers store operations from many callers for a short window and
commits them together, so that a thousand agents reporting at once cost a handful of
etcd transactions rather than a thousand."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from common.log import get_logger
from manager.store.errors import StoreError
from manager.store.store import BatchResult, Op, Store

_log = get_logger("store.batcher")


@dataclass
class _Pending:
    op: Op
    future: asyncio.Future[BatchResult] | None


class BatchWriter:
    """Commits submitted operations every `interval` seconds (sooner once `max_ops` wait)."""

    def __init__(
        self, store: Store, *, interval: float = 0.1, max_ops: int = 10_000, name: str = "batch"
    ) -> None:
        self.store = store
        self.interval = interval
        self.max_ops = max_ops
        self.name = name
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()

    def submit_nowait(self, op: Op) -> None:
        """Queue `op`; its outcome is only logged."""
        self._queue(_Pending(op, None))

    async def submit(self, op: Op) -> BatchResult:
        """Queue `op` and wait for the commit that carries it; raises its StoreError."""
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue(_Pending(op, future))
        result = await future
        for failed, error in result.failed:
            if failed is op:
                raise error
        return result

    def _queue(self, item: _Pending) -> None:
        self._pending.append(item)
        self._wake.set()
        if len(self._pending) >= self.max_ops:
            self._full.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < self.max_ops:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.interval)
            self._wake.clear()
            self._full.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                result = await self.store.commit([p.op for p in batch])
            except StoreError as exc:
                _log.warning(
                    "batched write failed", batch=self.name, ops=len(batch), error=str(exc)
                )
                for p in batch:
                    if p.future is not None and not p.future.done():
                        p.future.set_exception(exc)
                continue
            for op, error in result.failed:
                if not any(p.op is op and p.future is not None for p in batch):
                    _log.debug("batched op failed", batch=self.name, error=str(error))
            for p in batch:
                if p.future is not None and not p.future.done():
                    p.future.set_result(result)
