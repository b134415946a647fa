"""`swarm-agent`: the agent daemon's command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.agent import Agent, AgentConfig
from agent.executor.docker import DockerExecutor
from agent.identity import IdentityError
from common.log import get_logger, setup_logging

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    manager: Annotated[
        list[str],
        typer.Option(
            help="host:port of a manager's dispatcher; repeat or comma-separate for several."
        ),
    ],
    state_dir: Annotated[
        Path, typer.Option(help="Where the agent keeps its node identity.")
    ] = Path("/var/lib/swarmlet/agent"),
    docker_host: Annotated[
        str, typer.Option(help="The Docker engine to run tasks on.", envvar="DOCKER_HOST")
    ] = "unix:///var/run/docker.sock",
    hostname: Annotated[
        str, typer.Option(help="Node hostname to report (default: the engine's).")
    ] = "",
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
    log_format: Annotated[
        str, typer.Option(help="auto (console on a TTY, else JSON), json or console.")
    ] = "auto",
) -> None:
    """Run a swarmlet agent: runs this node's tasks on its Docker engine."""
    if log_format not in ("auto", "json", "console"):
        raise typer.BadParameter(f"invalid --log-format {log_format!r}: use auto, json or console")
    try:
        setup_logging(log_level, log_format)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    managers = [m.strip() for item in manager for m in item.split(",") if m.strip()]
    for m in managers:
        host, sep, port = m.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise typer.BadParameter(f"invalid --manager {m!r}: use HOST:PORT, like 10.0.0.1:4242")
    log = get_logger("agent")
    try:
        executor = DockerExecutor(docker_host, hostname=hostname)
        agent = Agent(AgentConfig(managers, state_dir.absolute()), executor)
    except (IdentityError, OSError) as exc:
        print(f"swarm-agent: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except Exception as exc:  # the docker SDK raises plain DockerException for a bad URL
        print(f"swarm-agent: cannot use Docker engine {docker_host!r}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    log.info("using Docker engine", docker_host=docker_host, pid=os.getpid())
    asyncio.run(_run(agent))


async def _run(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await agent.run(stop)


def run() -> None:
    app()
