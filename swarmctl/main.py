"""The `swarmctl` command: its global options and the command groups under it.

    swarmctl [-H HOST] service|node|task|network|cluster COMMAND ...
    swarmctl join-token worker|manager
    swarmctl events [--filter type=service|task|node] [--since TIME] [--until TIME]

`-H/--host` (or SWARMCTL_HOST) names the manager: `unix:///path`, a socket path, or
`host:port`; by default the local manager's control socket.
"""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

import typer

from common.log import setup_logging
from swarmctl import cli, cluster, events, jointoken, network, node, service, task
from swarmctl.client import DEFAULT_HOST, HOST_ENV, ManagerAddress, TLSFiles

app = cli.new_typer(
    "swarmctl drives a swarmlet cluster the way `docker service` and `docker node` drive "
    "Docker Swarm."
)
app.add_typer(service.app, name="service", help="Manage services.")
app.add_typer(node.app, name="node", help="Manage nodes.")
app.add_typer(task.app, name="task", help="Manage tasks.")
app.add_typer(network.app, name="network", help="Manage networks.")
app.add_typer(cluster.app, name="cluster", help="Manage the cluster.")
app.command("join-token")(jointoken.join_token)
app.command("events")(events.events)


def _version(value: bool) -> None:
    if value:
        try:
            version = metadata.version("swarmlet")
        except metadata.PackageNotFoundError:  # pragma: no cover - always installed
            version = "unknown"
        typer.echo(f"swarmctl {version}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            "-H",
            "--host",
            envvar=HOST_ENV,
            metavar="ADDRESS",
            help="The manager: unix:///path/to/control.sock, a socket path, or HOST:PORT.",
        ),
    ] = DEFAULT_HOST,
    debug: Annotated[
        bool, typer.Option("-D", "--debug", help="Log each call; show tracebacks.")
    ] = False,
    tlscacert: Annotated[
        str, typer.Option(envvar="SWARMCTL_TLSCACERT", help="TCP only: the cluster's CA (PEM).")
    ] = "",
    tlscert: Annotated[
        str, typer.Option(envvar="SWARMCTL_TLSCERT", help="TCP only: admin certificate (PEM).")
    ] = "",
    tlskey: Annotated[
        str, typer.Option(envvar="SWARMCTL_TLSKEY", help="TCP only: admin key (PEM).")
    ] = "",
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """swarmctl drives a swarmlet cluster like `docker service` / `docker node`."""
    try:
        address = ManagerAddress.parse(host)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'-H' / '--host'") from None
    try:
        tls = TLSFiles.load(tlscacert, tlscert, tlskey)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--tls*'") from None
    if debug:
        setup_logging("debug", "console")
    ctx.obj = cli.Settings(address=address, debug=debug, tls=tls)


def run() -> None:
    """The console script's entry point."""
    app(prog_name="swarmctl")
