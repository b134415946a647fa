"""`swarmctl join-token worker|manager [-q] [--rotate]`: how a new node joins, as
`docker swarm join-token` shows it."""

from __future__ import annotations

from typing import Annotated

import typer

from swarmctl import cli

ROLES = ("worker", "manager")


def join_token(
    ctx: typer.Context,
    role: Annotated[str, typer.Argument(metavar="worker|manager", help="Which token.")],
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only display the token.")] = False,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Replace the token: the old one stops working.")
    ] = False,
) -> None:
    """Show (or rotate) the token a new node joins the cluster with."""
    if role not in ROLES:
        ctx.fail(f"invalid role {role!r}: use worker or manager")
    client = cli.get_client(ctx)
    cluster = client.rotate_join_token(role) if rotate else client.get_cluster()
    token = getattr(cluster.root_ca.join_tokens, role)
    if quiet:
        typer.echo(token)
        return
    if rotate:
        typer.echo(f"Successfully rotated {role} join token.\n")
    addrs = client.manager_addrs() or ["<manager-host>:4242"]
    # The token goes in the environment, not on the command line, where every user of
    # the new host could read it in `ps`.
    if role == "worker":
        typer.echo("To add a worker to this cluster, run the following command on the new host:")
        typer.echo(f"\n    SWARMLET_JOIN_TOKEN={token} swarm-agent --manager {addrs[0]}\n")
        typer.echo("(or put the token in a file of mode 0600 and give --join-token-file PATH)")
    else:
        typer.echo("To add a manager to this cluster, run the following command on the new host:")
        typer.echo(
            f"\n    SWARMLET_JOIN_TOKEN={token} swarm-manager "
            "--etcd <the cluster's etcd endpoints>\n"
        )
