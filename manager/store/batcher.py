"""Coalescing writer: gathers store operations from many callers and commits them
together, so that a thousand agents registering at once cost a handful of etcd
transactions rather than a thousand.

A lone operation is committed at once; operations that arrive while a commit is in
flight go out together in the next one (after `interval`, if one is set).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from common.log import get_logger
from manager.store.errors import StoreError
from manager.store.keys import Kind
from manager.store.store import Create, Op
from manager.store.views import Committer

_log = get_logger("store.batcher")


@dataclass
class _Pending:
    op: Op
    future: asyncio.Future[Any]


def _target(op: Op) -> tuple[Kind, str]:
    if isinstance(op, Create):
        return Kind.of(op.obj), op.obj.id
    return op.kind, op.obj_id


class BatchWriter:
    """Commits submitted operations as soon as the previous commit is done."""

    def __init__(self, store: Committer, *, interval: float = 0.0, name: str = "batch") -> None:
        self.store = store
        self.interval = interval
        self.name = name
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()

    async def submit(self, op: Op) -> Any | None:
        """Queue `op` and wait for the commit that carries it: the object it wrote (None
        if it had nothing to do); raises its StoreError."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(op, future))
        self._wake.set()
        return await future

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if self.interval:
                await asyncio.sleep(self.interval)
            self._wake.clear()
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
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            failed = {id(op): error for op, error in result.failed}
            written = {(Kind.of(obj), obj.id): obj for obj in result.written}
            for p in batch:
                error = failed.get(id(p.op))
                if p.future.done():
                    continue
                if error is not None:
                    p.future.set_exception(error)
                else:
                    p.future.set_result(written.get(_target(p.op)))
