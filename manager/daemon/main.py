"""`swarm-manager`: the manager daemon's command line."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from common.defaults import (
    HEARTBEAT_PERIOD,
    MAX_HEARTBEAT_PERIOD,
    MIN_HEARTBEAT_PERIOD,
    MISSED_HEARTBEATS,
)
from common.log import get_logger, setup_logging
from common.timeutil import parse_duration
from manager.daemon.config import ManagerConfig, ManagerError
from manager.daemon.server import serve
from manager.store import StoreError
from manager.store.embedded import EmbeddedEtcdError
from manager.store.etcd import EtcdConfig

app = typer.Typer(add_completion=False, help=__doc__)


def _duration(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def main(
    state_dir: Annotated[
        Path, typer.Option(help="Where the manager keeps its state (and the embedded etcd's data).")
    ] = Path("/var/lib/swarmlet/manager"),
    listen_addr: Annotated[
        str, typer.Option(help="host:port of the dispatcher that agents connect to.")
    ] = "127.0.0.1:4242",
    advertise_addr: Annotated[
        str,
        typer.Option(
            help="host:port agents should use to reach this manager (default: --listen-addr)."
        ),
    ] = "",
    etcd: Annotated[
        str,
        typer.Option(
            help="Comma-separated etcd endpoints (http(s)://host:port, or one unix:///path). "
            "Without it an embedded etcd is started, on unix sockets in --state-dir."
        ),
    ] = "",
    etcd_prefix: Annotated[
        str, typer.Option(help="Key prefix of swarmlet's objects in etcd.")
    ] = "/swarmlet/",
    etcd_cacert: Annotated[
        Path | None,
        typer.Option(
            help="CA certificate of the etcd servers (enables TLS; needs --etcd).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    etcd_cert: Annotated[
        Path | None,
        typer.Option(
            help="Client certificate for etcd (with --etcd-key).", exists=True, dir_okay=False
        ),
    ] = None,
    etcd_key: Annotated[
        Path | None,
        typer.Option(help="Client key for etcd (with --etcd-cert).", exists=True, dir_okay=False),
    ] = None,
    etcd_user: Annotated[
        str,
        typer.Option(
            help="etcd user (password from SWARMLET_ETCD_PASSWORD; needs --etcd).",
            envvar="SWARMLET_ETCD_USER",
        ),
    ] = "",
    etcd_password: Annotated[str, typer.Option(hidden=True, envvar="SWARMLET_ETCD_PASSWORD")] = "",
    heartbeat_period: Annotated[
        str,
        typer.Option(
            help=f"How often agents heartbeat; a node is down after {MISSED_HEARTBEATS} missed."
        ),
    ] = f"{HEARTBEAT_PERIOD:g}s",
    agent_restart_grace: Annotated[
        str,
        typer.Option(
            help="How long an agent that stopped cleanly (SIGTERM: an upgrade, a restart) may "
            "stay away before its node is declared down and its tasks are replaced."
        ),
    ] = "60s",
    control_addr: Annotated[
        str,
        typer.Option(
            help="Also serve the control API on this host:port over mutual TLS (admin "
            "certificates only; one is written to <state-dir>/admin/). Off by default."
        ),
    ] = "",
    cert_expiry: Annotated[
        str,
        typer.Option(help="Lifetime of node certificates when this manager creates the cluster."),
    ] = "2160h",
    join_token: Annotated[
        str,
        typer.Option(
            envvar="SWARMLET_JOIN_TOKEN",
            help="Manager join token, to join a cluster that already exists in --etcd.",
        ),
    ] = "",
    leader_ttl: Annotated[
        int,
        typer.Option(help="Seconds before a dead manager's lease (leadership, sessions) expires."),
    ] = 2,
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
    """Run a swarmlet manager: keeps the desired state in etcd, schedules tasks, serves agents."""
    _check_etcd_options(etcd, etcd_cacert, etcd_cert, etcd_key, etcd_user, etcd_password)
    restart_grace = _duration(agent_restart_grace)
    if not 0 <= restart_grace <= 3600:
        raise typer.BadParameter(
            f"--agent-restart-grace {agent_restart_grace}: use 0s (none) to 1h"
        )
    if log_format not in ("auto", "json", "console"):
        raise typer.BadParameter(f"invalid --log-format {log_format!r}: use auto, json or console")
    try:
        setup_logging(log_level, log_format)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    period = _duration(heartbeat_period)
    if not MIN_HEARTBEAT_PERIOD <= period <= MAX_HEARTBEAT_PERIOD:
        raise typer.BadParameter(
            f"--heartbeat-period {heartbeat_period}: use {MIN_HEARTBEAT_PERIOD}s to "
            f"{MAX_HEARTBEAT_PERIOD:.0f}s"
        )
    if metrics_addr and not metrics_addr.rpartition(":")[2].isdigit():
        raise typer.BadParameter(f"invalid --metrics-addr {metrics_addr!r}: use [HOST]:PORT")
    if not 1 <= leader_ttl <= 60:
        raise typer.BadParameter(f"--leader-ttl {leader_ttl}: use 1 to 60 seconds")
    expiry = _duration(cert_expiry)
    if expiry < 60:
        raise typer.BadParameter(f"--cert-expiry {cert_expiry}: use at least 1m")
    etcd_config = None
    if etcd:
        etcd_config = EtcdConfig(
            [e for e in etcd.split(",") if e.strip()],
            ca_cert=etcd_cacert,
            cert=etcd_cert,
            key=etcd_key,
            user=etcd_user or None,
            password=etcd_password or None,
        )
    config = ManagerConfig(
        state_dir=state_dir.absolute(),
        listen_addr=listen_addr,
        advertise_addr=advertise_addr,
        etcd=etcd_config,
        etcd_prefix=etcd_prefix,
        heartbeat_period=period,
        agent_restart_grace=restart_grace,
        control_addr=control_addr,
        cert_expiry=expiry,
        join_token=join_token,
        leader_ttl=leader_ttl,
        metrics_addr=metrics_addr,
    )
    log = get_logger("manager")
    try:
        asyncio.run(_run(config))
    except (ManagerError, StoreError, EmbeddedEtcdError, OSError) as exc:
        log.error("manager failed", error=str(exc))
        print(f"swarm-manager: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def _check_etcd_options(
    etcd: str,
    cacert: Path | None,
    cert: Path | None,
    key: Path | None,
    user: str,
    password: str,
) -> None:
    """Refuse etcd credentials that would be ignored or cannot work."""
    if not etcd:
        given = [
            name
            for name, value in [
                ("--etcd-cacert", cacert),
                ("--etcd-cert", cert),
                ("--etcd-key", key),
                ("--etcd-user (or SWARMLET_ETCD_USER)", user),
                ("SWARMLET_ETCD_PASSWORD", password),
            ]
            if value
        ]
        if given:
            raise typer.BadParameter(
                f"{', '.join(given)} only apply to an external etcd given with --etcd; the "
                "embedded etcd needs no credentials (it listens on owner-only unix sockets in "
                "the state dir). Add --etcd URL, or drop them."
            )
    if bool(cert) != bool(key):
        raise typer.BadParameter(
            "--etcd-cert and --etcd-key go together: give both (the client certificate and "
            "its key) or neither"
        )
    if cert and not cacert:
        raise typer.BadParameter(
            "--etcd-cert needs --etcd-cacert (the CA that signed etcd's server certificate)"
        )
    if password and not user:
        raise typer.BadParameter("SWARMLET_ETCD_PASSWORD is set but no --etcd-user is given")


async def _run(config: ManagerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(config, stop)


def run() -> None:
    app()
