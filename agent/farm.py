"""A farm of hollow agents in one process, each a full agent with its own node id, its
own gRPC channel and session, heartbeats and status reports; only the executor is
hollow. For tests that need many nodes and for the scale benchmark."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from agent.agent import Agent, AgentConfig
from agent.executor.hollow import HollowConfig, HollowExecutor
from common.log import get_logger
from common.supervise import cancel_all

_log = get_logger("farm")


def hollow_agents(
    count: int,
    managers: list[str],
    state_dir: Path,
    hostname_prefix: str = "hollow-",
    config: HollowConfig | None = None,
    join_token: str = "",
) -> list[Agent]:
    """`count` hollow agents; agent i keeps its identity in `state_dir/i` and is named
    `<hostname_prefix>i` (a single one: `state_dir` and `hostname_prefix` as given)."""
    if count == 1 and not hostname_prefix.endswith("-"):
        return [
            Agent(
                AgentConfig(managers, state_dir, join_token),
                HollowExecutor(hostname_prefix, config),
            )
        ]
    agents = []
    for i in range(1, count + 1):
        executor = HollowExecutor(f"{hostname_prefix}{i}", config)
        agents.append(Agent(AgentConfig(managers, state_dir / str(i), join_token), executor))
    return agents


async def run_farm(agents: list[Agent], stop: asyncio.Event, ramp: float = 0.0) -> None:
    """Run `agents` until `stop`; with `ramp`, start that many a second (thousands of
    nodes that all join and open sessions in the same instant are a thundering herd
    no real fleet makes)."""
    _log.info("hollow farm starting", agents=len(agents), ramp=ramp or None)
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for i, agent in enumerate(agents):
            if ramp:
                delay = started + i / ramp - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
            tasks.append(asyncio.create_task(agent.run(stop), name=f"hollow-{i}"))
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await cancel_all(tasks)
