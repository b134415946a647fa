"""`swarmctl node ls|inspect|update|promote|demote|rm|ps`, as `docker node`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer

from common.api import control_pb2, objects_pb2, specs_pb2, types_pb2
from swarmctl import cli
from swarmctl.client import ControlClient
from swarmctl.errors import SwarmctlError
from swarmctl.output import enum_word, natural_key, print_json, print_table
from swarmctl.parsing import (
    parse_availability,
    parse_label,
    parse_label_key,
    parse_role,
)
from swarmctl.task import FilterOpt, FormatOpt, NoTruncOpt, print_tasks, task_filters

NODE_HEADERS = ("ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION")
NODE_FILTERS = ("id", "label", "node.label", "name", "role", "availability")
NODE_PS_FILTERS = ("desired-state", "id", "name", "label")

app = cli.new_typer("Manage nodes.")

NodesArg = Annotated[
    list[str], typer.Argument(metavar="NODE", help="Node ids, id prefixes or hostnames.")
]


def node_status(node: objects_pb2.Node) -> str:
    """Ready, Down, Unknown or Disconnected; "Ready (engine down)" for a connected node
    whose agent reports that its container engine does not answer (it gets no new
    tasks; `node inspect` has the engine's error in status.engine_error)."""
    word = enum_word(types_pb2.NodeState.Name(node.status.state), "NODE_STATE_")
    if node.status.engine_error and node.status.state == types_pb2.NODE_STATE_READY:
        return f"{word} (engine down)"
    return word


def node_availability(node: objects_pb2.Node) -> str:
    """Active, Pause or Drain."""
    return enum_word(types_pb2.NodeAvailability.Name(node.spec.availability), "NODE_AVAILABILITY_")


def manager_status(node: objects_pb2.Node) -> str:
    """Leader, Reachable or Unreachable for a manager; empty for a worker."""
    if node.role != types_pb2.NODE_ROLE_MANAGER and not node.HasField("manager_status"):
        return ""
    if node.manager_status.leader:
        return "Leader"
    return enum_word(
        objects_pb2.Reachability.Name(node.manager_status.reachability), "REACHABILITY_"
    )


def node_rows(nodes: Iterable[objects_pb2.Node]) -> list[list[str]]:
    """The rows of `node ls`, sorted by hostname. Node ids are shown whole, as Docker does."""
    return [
        [
            node.id,
            node.description.hostname,
            node_status(node),
            node_availability(node),
            manager_status(node),
            node.description.engine.engine_version,
        ]
        for node in sorted(nodes, key=lambda n: natural_key(n.description.hostname))
    ]


def node_filters(values: list[str] | None) -> control_pb2.ListNodesRequest.Filters:
    grouped = cli.filters(values, NODE_FILTERS)
    out = control_pb2.ListNodesRequest.Filters(
        names=grouped.get("name", []),
        id_prefixes=grouped.get("id", []),
        roles=cli.flag_values(parse_role, grouped.get("role"), "--filter role"),
        availabilities=cli.flag_values(
            parse_availability, grouped.get("availability"), "--filter availability"
        ),
    )
    for text in grouped.get("label", []) + grouped.get("node.label", []):
        key, _, value = text.partition("=")
        out.labels[key] = value
    return out


@app.command("ls")
def list_nodes(
    ctx: typer.Context,
    *,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only display IDs.")] = False,
    fmt: FormatOpt = None,
    filter_: FilterOpt = None,
) -> None:
    """List nodes (filters: id, label, name, role, availability)."""
    out_format = cli.output_format(fmt)
    nodes = cli.get_client(ctx).list_nodes(node_filters(filter_))
    if quiet:
        for row in node_rows(nodes):
            typer.echo(row[0])
    elif out_format == "json":
        ordered: list[objects_pb2.Node] = sorted(
            nodes, key=lambda n: natural_key(n.description.hostname)
        )
        print_json(ordered)
    else:
        print_table(NODE_HEADERS, node_rows(nodes))


app.command("list", hidden=True)(list_nodes)


@app.command("inspect")
def inspect(ctx: typer.Context, nodes: NodesArg) -> None:
    """Display detailed information on one or more nodes (a JSON array)."""
    found, ok = cli.fetch_each(nodes, cli.get_client(ctx).get_node)
    print_json(found)
    if not ok:
        raise typer.Exit(1)


def _edit(
    client: ControlClient,
    ref: str,
    *,
    availability: types_pb2.NodeAvailability.ValueType | None = None,
    role: types_pb2.NodeRole.ValueType | None = None,
    label_add: dict[str, str] | None = None,
    label_rm: list[str] | None = None,
) -> tuple[objects_pb2.Node, objects_pb2.Node]:
    """GetNode, change its spec, UpdateNode with the version read. Returns (before, after)."""
    node = client.get_node(ref)
    spec = specs_pb2.NodeSpec()
    spec.CopyFrom(node.spec)
    if availability is not None:
        spec.availability = availability
    if role is not None:
        spec.desired_role = role
    for key in label_rm or ():
        if key not in spec.annotations.labels:
            raise SwarmctlError(f"key {key} doesn't exist in node's labels")
        del spec.annotations.labels[key]
    spec.annotations.labels.update(label_add or {})
    updated = client.update_node(node.id, node.meta.version, spec)
    return node, updated


@app.command("update")
def update(
    ctx: typer.Context,
    *,
    node_ref: Annotated[str, typer.Argument(metavar="NODE", help="The node.")],
    availability: Annotated[
        str | None,
        typer.Option("--availability", metavar="STATE", help="active, pause or drain."),
    ] = None,
    role: Annotated[
        str | None, typer.Option("--role", metavar="ROLE", help="worker or manager.")
    ] = None,
    label_add: Annotated[
        list[str] | None,
        typer.Option("--label-add", metavar="K=V", help="Add or update a node label."),
    ] = None,
    label_rm: Annotated[
        list[str] | None, typer.Option("--label-rm", metavar="KEY", help="Remove a node label.")
    ] = None,
) -> None:
    """Update a node's availability, role or labels."""
    _edit(
        cli.get_client(ctx),
        node_ref,
        availability=cli.optional_flag(parse_availability, availability, "--availability"),
        role=cli.optional_flag(parse_role, role, "--role"),
        label_add=dict(cli.flag_values(parse_label, label_add, "--label-add")),
        label_rm=cli.flag_values(parse_label_key, label_rm, "--label-rm"),
    )
    typer.echo(node_ref)


def _change_role(ctx: typer.Context, nodes: list[str], role: types_pb2.NodeRole.ValueType) -> None:
    client = cli.get_client(ctx)
    word = "manager" if role == types_pb2.NODE_ROLE_MANAGER else "worker"
    verb = "promoted to" if role == types_pb2.NODE_ROLE_MANAGER else "demoted in"

    def change(ref: str) -> None:
        node = client.get_node(ref)
        if node.spec.desired_role == role:
            typer.echo(f"Node {ref} is already a {word}.")
            return
        _edit(client, ref, role=role)
        if role == types_pb2.NODE_ROLE_MANAGER:
            typer.echo(f"Node {ref} {verb} a manager in the swarm.")
        else:
            typer.echo(f"Manager {ref} {verb} the swarm.")

    _, ok = cli.fetch_each(nodes, change)
    if not ok:
        raise typer.Exit(1)


@app.command("promote")
def promote(ctx: typer.Context, nodes: NodesArg) -> None:
    """Promote one or more nodes to manager."""
    _change_role(ctx, nodes, types_pb2.NODE_ROLE_MANAGER)


@app.command("demote")
def demote(ctx: typer.Context, nodes: NodesArg) -> None:
    """Demote one or more nodes from manager to worker."""
    _change_role(ctx, nodes, types_pb2.NODE_ROLE_WORKER)


@app.command("rm")
def remove(
    ctx: typer.Context,
    *,
    nodes: NodesArg,
    force: Annotated[
        bool, typer.Option("-f", "--force", help="Remove a node even if it is ready.")
    ] = False,
) -> None:
    """Remove one or more nodes from the cluster."""
    client = cli.get_client(ctx)

    def remove_one(ref: str) -> None:
        client.remove_node(ref, force=force)
        typer.echo(ref)

    _, ok = cli.fetch_each(nodes, remove_one)
    if not ok:
        raise typer.Exit(1)


app.command("remove", hidden=True)(remove)


@app.command("ps")
def ps(
    ctx: typer.Context,
    *,
    nodes: NodesArg,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only display task IDs.")] = False,
    fmt: FormatOpt = None,
    filter_: FilterOpt = None,
    no_trunc: NoTruncOpt = False,
) -> None:
    """List the tasks on one or more nodes (filters: desired-state, id, name, label)."""
    cli.output_format(fmt)
    filters = task_filters(filter_, NODE_PS_FILTERS)
    client = cli.get_client(ctx)
    found, ok = cli.fetch_each(nodes, client.get_node)
    if found:
        filters.node_ids.extend(n.id for n in found)
        print_tasks(client, client.list_tasks(filters), quiet=quiet, fmt=fmt, no_trunc=no_trunc)
    if not ok:
        raise typer.Exit(1)
