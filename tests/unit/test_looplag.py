"""`wait_excluding_stalls`: a wait whose timer fires late (the event loop stood still)
goes on for as long again; an on-time timeout is a timeout."""

from __future__ import annotations

import asyncio
import time

from common.looplag import wait_excluding_stalls


async def test_an_answer_due_during_a_stall_of_the_loop_is_still_taken() -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()
    # The loop stands still from 0.05 s to 0.55 s, past the 0.2 s deadline; the answer
    # comes at 0.7 s, which plain asyncio.wait_for would not wait for.
    loop.call_later(0.05, time.sleep, 0.5)
    loop.call_later(0.7, answer.set_result, 1)
    started = time.monotonic()
    assert await wait_excluding_stalls(answer, 0.2)
    assert answer.result() == 1
    assert time.monotonic() - started < 1.5


async def test_a_wait_without_a_stall_times_out_on_time() -> None:
    never: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    assert not await wait_excluding_stalls(never, 0.2)
    assert 0.2 <= time.monotonic() - started < 0.5
    assert not never.cancelled()  # the caller decides


async def test_plain_wait_for_gives_up_in_the_same_case() -> None:
    """The behaviour `wait_excluding_stalls` exists to avoid."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[int] = loop.create_future()
    loop.call_later(0.05, time.sleep, 0.5)
    loop.call_later(0.7, answer.set_result, 1)
    try:
        await asyncio.wait_for(answer, 0.2)
    except TimeoutError:
        return
    raise AssertionError("asyncio.wait_for waited through the stall")


async def test_a_loop_late_all_the_time_waits_at_most_twice_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[int] = loop.create_future()
    stop = loop.time() + 3.0

    def stall() -> None:  # the loop stands still 0.3 s in every 0.35 s, for 3 s
        time.sleep(0.3)
        if loop.time() < stop:
            loop.call_later(0.05, stall)

    loop.call_soon(stall)
    started = time.monotonic()
    assert not await wait_excluding_stalls(never, 0.5)
    assert time.monotonic() - started < 2.0
