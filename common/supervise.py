"""Supervised background tasks: a crash is logged with its context and the work restarted
after a backoff, never silently lost (as kopf guards its daemons)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from common.log import get_logger

_log = get_logger("supervise")


def supervise(
    name: str,
    factory: Callable[[], Awaitable[None]],
    *,
    restart: bool = True,
    initial_backoff: float = 0.1,
    max_backoff: float = 5.0,
    **context: Any,
) -> asyncio.Task[None]:
    """Run `factory()` as a task named `name`; restart it with jittered backoff when it raises.

    With restart=False a crash is logged and the task ends. Returning normally ends the
    task. Cancellation goes through.
    """

    async def runner() -> None:
        backoff = initial_backoff
        while True:
            try:
                await factory()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("background task crashed", task=name, restart=restart, **context)
                if not restart:
                    return
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, max_backoff)

    return asyncio.create_task(runner(), name=name)


async def cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait for them to finish."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
