"""`swarmctl cluster inspect`: the cluster object (its id and settings) as JSON."""

from __future__ import annotations

import typer

from swarmctl import cli
from swarmctl.output import print_json

app = cli.new_typer("Manage the cluster.")


@app.command("inspect")
def inspect(ctx: typer.Context) -> None:
    """Display the cluster's id and settings (a JSON array of one object)."""
    print_json([cli.get_client(ctx).get_cluster()])


@app.callback()
def _cluster() -> None:
    """Manage the cluster."""
