"""`swarmctl network create|ls|inspect|rm|prune`, as `docker network` on a swarm."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer

from common.api import control_pb2, objects_pb2, specs_pb2
from swarmctl import cli
from swarmctl.output import print_json, print_table, truncate_id
from swarmctl.parsing import parse_label
from swarmctl.task import FilterOpt, FormatOpt, NoTruncOpt

NETWORK_HEADERS = ("NETWORK ID", "NAME", "DRIVER", "SCOPE")
NETWORK_FILTERS = ("id", "name", "label")

app = cli.new_typer("Manage networks.")

NetworksArg = Annotated[
    list[str], typer.Argument(metavar="NETWORK", help="Network ids, id prefixes or names.")
]


def network_rows(
    networks: Iterable[objects_pb2.Network], no_trunc: bool = False
) -> list[list[str]]:
    """The rows of `network ls`, sorted by name. Every network spans the swarm."""
    return [
        [truncate_id(n.id, no_trunc), n.spec.annotations.name, n.spec.driver or "overlay", "swarm"]
        for n in sorted(networks, key=lambda n: n.spec.annotations.name)
    ]


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME")],
    *,
    driver: Annotated[
        str, typer.Option("-d", "--driver", help="Driver: overlay (the only one).")
    ] = "overlay",
    subnet: Annotated[
        str, typer.Option(help="Subnet in CIDR form; default: a free one of the pool.")
    ] = "",
    gateway: Annotated[str, typer.Option(help="Gateway of the subnet (default: its first).")] = "",
    attachable: Annotated[
        bool, typer.Option("--attachable", help="Let standalone containers join.")
    ] = False,
    internal: Annotated[
        bool, typer.Option("--internal", help="No traffic leaves the network.")
    ] = False,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="Network label (key=value).")
    ] = None,
) -> None:
    """Create an overlay network that spans every node; prints its id."""
    spec = specs_pb2.NetworkSpec(driver=driver, attachable=attachable, internal=internal)
    spec.annotations.name = name
    spec.annotations.labels.update(dict(cli.flag_values(parse_label, label, "--label")))
    spec.ipam.subnet = subnet
    spec.ipam.gateway = gateway
    network = cli.get_client(ctx).create_network(spec)
    typer.echo(network.id)


@app.command("ls")
def list_networks(
    ctx: typer.Context,
    *,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only display IDs.")] = False,
    no_trunc: NoTruncOpt = False,
    fmt: FormatOpt = None,
    filter_: FilterOpt = None,
) -> None:
    """List networks (filters: id, name, label)."""
    out_format = cli.output_format(fmt)
    grouped = cli.filters(filter_, NETWORK_FILTERS)
    filters = control_pb2.ListNetworksRequest.Filters(
        names=grouped.get("name", []), id_prefixes=grouped.get("id", [])
    )
    filters.labels.update(dict(cli.flag_values(parse_label, grouped.get("label"), "--filter")))
    networks = cli.get_client(ctx).list_networks(filters)
    if quiet:
        for row in network_rows(networks, no_trunc):
            typer.echo(row[0])
    elif out_format == "json":
        ordered: list[objects_pb2.Network] = sorted(networks, key=lambda n: n.spec.annotations.name)
        print_json(ordered)
    else:
        print_table(NETWORK_HEADERS, network_rows(networks, no_trunc))


app.command("list", hidden=True)(list_networks)


@app.command("inspect")
def inspect(ctx: typer.Context, networks: NetworksArg) -> None:
    """Display detailed information on one or more networks (a JSON array)."""
    found, ok = cli.fetch_each(networks, cli.get_client(ctx).get_network)
    print_json(found)
    if not ok:
        raise typer.Exit(1)


@app.command("rm")
def remove(ctx: typer.Context, networks: NetworksArg) -> None:
    """Remove one or more networks (refused while a service uses one)."""
    client = cli.get_client(ctx)

    def remove_one(ref: str) -> None:
        client.remove_network(ref)
        typer.echo(ref)

    _, ok = cli.fetch_each(networks, remove_one)
    if not ok:
        raise typer.Exit(1)


app.command("remove", hidden=True)(remove)


@app.command("prune")
def prune(
    ctx: typer.Context,
    force: Annotated[bool, typer.Option("-f", "--force", help="Do not prompt.")] = False,
) -> None:
    """Remove every network no service uses (the ingress network stays)."""
    if not force and not typer.confirm(
        "WARNING! This will remove all networks not used by at least one service.\n"
        "Are you sure you want to continue?"
    ):
        raise typer.Exit(0)
    removed = cli.get_client(ctx).prune_networks()
    if removed:
        typer.echo("Deleted Networks:")
        for name in removed:
            typer.echo(name)
