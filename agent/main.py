"""`swarm-agent`: the agent daemon's command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from agent.agent import Agent, AgentConfig, NodeRemovedError
from agent.credentials import JoinError
from agent.executor.docker import DockerExecutor
from agent.executor.hollow import HollowConfig
from agent.farm import hollow_agents, run_farm
from agent.tokenfile import TokenFileError, choose_token
from common.log import get_logger, setup_logging
from common.looplag import watch_loop_lag
from common.metrics import MetricsAddressError, serve_metrics
from common.supervise import cancel_all, supervise
from common.timeutil import parse_duration

app = typer.Typer(add_completion=False, help=__doc__)


def _duration(option: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{option}: {exc}") from None


def _size(option: str, value: str) -> int:
    units = {
        "": 1,
        "b": 1,
        "k": 1024,
        "kb": 1024,
        "kib": 1024,
        "m": 1024**2,
        "mb": 1024**2,
        "mib": 1024**2,
        "g": 1024**3,
        "gb": 1024**3,
        "gib": 1024**3,
    }
    text = value.strip().lower()
    number = text.rstrip("kmgib")
    unit = text[len(number) :]
    try:
        if unit not in units:
            raise ValueError
        return int(float(number) * units[unit])
    except ValueError:
        raise typer.BadParameter(
            f"{option}: invalid size {value!r}, use e.g. 512MiB or 8G"
        ) from None


def _labels(values: list[str]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, val = item.partition("=")
        if not key or not sep:
            raise typer.BadParameter(f"--hollow-label: invalid label {item!r}, use KEY=VALUE")
        out[key] = val
    return out


@app.command()
def main(
    manager: Annotated[
        list[str],
        typer.Option(
            help="host:port of a manager's dispatcher; repeat or comma-separate for several."
        ),
    ],
    join_token: Annotated[
        str,
        typer.Option(
            help="Join token (SWMTKN-1-...) for the first start; the certificate it brings is kept "
            "in the state dir. Better from the environment (SWARMLET_JOIN_TOKEN) or "
            "--join-token-file: on the command line every user of the host sees it in ps.",
            envvar="SWARMLET_JOIN_TOKEN",
        ),
    ] = "",
    join_token_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the join token from this file, which must be private (mode 0600).",
        ),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option(help="Where the agent keeps its node identity.")
    ] = Path("/var/lib/swarmlet/agent"),
    docker_host: Annotated[
        str, typer.Option(help="The Docker engine to run tasks on.", envvar="DOCKER_HOST")
    ] = "unix:///var/run/docker.sock",
    hostname: Annotated[
        str, typer.Option(help="Node hostname to report (default: the engine's; hollow: hollow-N).")
    ] = "",
    executor: Annotated[
        str,
        typer.Option(
            help="docker (real containers) or hollow (no containers: for tests and benchmarks)."
        ),
    ] = "docker",
    count: Annotated[
        int,
        typer.Option(
            help="Hollow only: run this many hollow agents in this process, each its own node."
        ),
    ] = 1,
    hollow_ramp: Annotated[
        float,
        typer.Option(help="Hollow: start this many agents a second (0: all at once)."),
    ] = 0.0,
    hollow_prepare: Annotated[
        str, typer.Option(help="Hollow: time spent preparing a task.")
    ] = "50ms",
    hollow_start: Annotated[str, typer.Option(help="Hollow: time spent starting a task.")] = "50ms",
    hollow_fail_rate: Annotated[
        float,
        typer.Option(help="Hollow: share of tasks (0..1) that fail after --hollow-fail-after."),
    ] = 0.0,
    hollow_fail_after: Annotated[str, typer.Option(help="Hollow: when failing tasks fail.")] = "1s",
    hollow_job_duration: Annotated[
        str, typer.Option(help="Hollow: how long a job's task runs before it exits 0.")
    ] = "500ms",
    hollow_cpus: Annotated[float, typer.Option(help="Hollow: CPUs each node reports.")] = 4.0,
    hollow_memory: Annotated[str, typer.Option(help="Hollow: memory each node reports.")] = "8GiB",
    hollow_label: Annotated[
        list[str] | None,
        typer.Option(help="Hollow: engine label KEY=VALUE each node reports (repeatable)."),
    ] = None,
    hollow_missing_image: Annotated[
        list[str] | None,
        typer.Option(help="Hollow: an image whose tasks are rejected as unpullable (repeatable)."),
    ] = None,
    sweep_interval: Annotated[
        str,
        typer.Option(
            help="How often to remove containers labelled with this node's id whose task is "
            "no longer this node's."
        ),
    ] = "60s",
    metrics_addr: Annotated[
        str,
        typer.Option(
            help="Serve Prometheus metrics on [HOST]:PORT (/metrics; loopback without HOST). "
            "Off by default."
        ),
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
    if executor not in ("docker", "hollow"):
        raise typer.BadParameter(f"invalid --executor {executor!r}: use docker or hollow")
    if count < 1 or (count > 1 and executor != "hollow"):
        raise typer.BadParameter("--count must be 1, or more with --executor hollow")
    if hollow_ramp < 0:
        raise typer.BadParameter(f"--hollow-ramp {hollow_ramp}: use 0 (all at once) or more")
    if not 0.0 <= hollow_fail_rate <= 1.0:
        raise typer.BadParameter(f"--hollow-fail-rate {hollow_fail_rate}: use a number from 0 to 1")
    try:
        join_token = choose_token(join_token, join_token_file)
    except TokenFileError as exc:
        raise typer.BadParameter(str(exc)) from None
    log = get_logger("agent")
    state = state_dir.absolute()
    if metrics_addr:
        try:
            endpoint = serve_metrics(metrics_addr)
            log.info("serving metrics", host=endpoint.host, port=endpoint.port)
        except (MetricsAddressError, OSError) as exc:
            raise typer.BadParameter(f"--metrics-addr: {exc}") from None
    try:
        if executor == "hollow":
            config = HollowConfig(
                prepare_delay=_duration("--hollow-prepare", hollow_prepare),
                start_delay=_duration("--hollow-start", hollow_start),
                fail_rate=hollow_fail_rate,
                fail_after=_duration("--hollow-fail-after", hollow_fail_after),
                job_duration=_duration("--hollow-job-duration", hollow_job_duration),
                nano_cpus=int(hollow_cpus * 1e9),
                memory_bytes=_size("--hollow-memory", hollow_memory),
                labels=_labels(hollow_label or []),
                missing_images=set(hollow_missing_image or []),
            )
            prefix = hostname or "hollow-"
            if count > 1 and not prefix.endswith("-"):
                prefix += "-"
            agents = hollow_agents(count, managers, state, prefix, config, join_token)
            log.info("running hollow agents (no containers)", count=len(agents))
            _run_or_explain(agents, hollow_ramp)
            return
        docker_executor = DockerExecutor(docker_host, hostname=hostname)
        sweep = _duration("--sweep-interval", sweep_interval)
        if sweep <= 0:
            raise typer.BadParameter(f"--sweep-interval {sweep_interval}: use more than 0s")
        agent = Agent(
            AgentConfig(managers, state, join_token, sweep_interval=sweep), docker_executor
        )
    except (JoinError, OSError) as exc:
        print(f"swarm-agent: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    except typer.BadParameter:
        raise
    except Exception as exc:  # the docker SDK raises plain DockerException for a bad URL
        print(f"swarm-agent: cannot use Docker engine {docker_host!r}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    log.info("using Docker engine", docker_host=docker_host, pid=os.getpid())
    _run_or_explain([agent])


def _run_or_explain(agents: list[Agent], ramp: float = 0.0) -> None:
    try:
        asyncio.run(_run_all(agents, ramp))
    except (JoinError, NodeRemovedError) as exc:
        print(f"swarm-agent: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


async def _run_all(agents: list[Agent], ramp: float = 0.0) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    lag = supervise("loop lag", watch_loop_lag)
    try:
        if len(agents) == 1:
            await agents[0].run(stop)
        else:
            await run_farm(agents, stop, ramp)
    finally:
        await cancel_all([lag])


def run() -> None:
    app()
