"""`swarmctl task ls|inspect`, and the task table that `service ps` and `node ps` share.

The table has `docker service ps`'s columns: ID NAME IMAGE NODE DESIRED STATE CURRENT
STATE ERROR PORTS. Tasks of one slot (of a global service: of one node) are grouped,
newest first, the older ones named ` \\_ <service>.<slot>` under it. A job's task that
finished shows `Complete 5 seconds ago`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated

import typer

from common import states
from common.api import control_pb2, objects_pb2
from common.timeutil import human_ago, timestamp_seconds
from swarmctl import cli
from swarmctl.client import ControlClient
from swarmctl.output import (
    capitalize,
    ellipsis,
    format_port,
    natural_key,
    print_json,
    print_table,
    short_image,
    truncate_id,
)
from swarmctl.parsing import parse_desired_state

TASK_HEADERS = (
    "ID",
    "NAME",
    "IMAGE",
    "NODE",
    "DESIRED STATE",
    "CURRENT STATE",
    "ERROR",
    "PORTS",
)
# Docker's maxErrLength: an error longer than this is cut unless --no-trunc.
MAX_ERROR_LENGTH = 30
TASK_FILTERS = ("desired-state", "id", "name", "node", "service", "label")
HISTORY_INDENT = " \\_ "

app = cli.new_typer("Manage tasks.")

QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Only display task IDs.")]
FormatOpt = Annotated[
    str | None, typer.Option("--format", metavar="FORMAT", help="table (default) or json.")
]
FilterOpt = Annotated[
    list[str] | None,
    typer.Option("-f", "--filter", metavar="KEY=VALUE", help="Filter output (repeatable)."),
]
NoTruncOpt = Annotated[bool, typer.Option("--no-trunc", help="Do not truncate output.")]


def task_name(task: objects_pb2.Task, service_names: Mapping[str, str] | None = None) -> str:
    """`<service>.<slot>`, or `<service>.<node id>` for a global service's (or global
    job's) task: the name the manager gave it, so that a slot's or a node's tasks group.
    """
    if task.annotations.name:
        return task.annotations.name
    service = task.service_name or (service_names or {}).get(task.service_id) or task.service_id
    return f"{service}.{task.slot}" if task.slot else f"{service}.{task.node_id}"


def _created(task: objects_pb2.Task) -> float:
    return timestamp_seconds(task.meta.created_at) or timestamp_seconds(task.status.timestamp)


def sort_tasks(
    tasks: Iterable[objects_pb2.Task], service_names: Mapping[str, str] | None = None
) -> list[objects_pb2.Task]:
    """By name (web.2 before web.10), and within one slot the newest first."""
    by_age = sorted(tasks, key=_created, reverse=True)
    return sorted(by_age, key=lambda t: natural_key(task_name(t, service_names)))


def current_state(task: objects_pb2.Task, now: float) -> str:
    """`Running 8 seconds ago`: the observed state and how long ago it was reached."""
    name = capitalize(states.state_name(task.status.state))
    since = timestamp_seconds(task.status.timestamp)
    if not since:
        return name
    return f"{name} {human_ago(max(0.0, now - since)).lower()} ago"


def task_error(task: objects_pb2.Task, no_trunc: bool = False) -> str:
    """The task's error (or why the manager shut it down: "node down"), quoted, cut to
    30 characters unless --no-trunc."""
    err = " ".join((task.status.err or task.shutdown_reason).split())
    if not err:
        return ""
    return f'"{err if no_trunc else ellipsis(err, MAX_ERROR_LENGTH)}"'


def task_rows(
    tasks: Iterable[objects_pb2.Task],
    node_names: Mapping[str, str],
    *,
    now: float,
    no_trunc: bool = False,
    service_names: Mapping[str, str] | None = None,
) -> list[list[str]]:
    """The rows of a `service ps` table, sorted, older tasks of a slot indented."""
    rows: list[list[str]] = []
    previous = None
    for task in sort_tasks(tasks, service_names):
        name = task_name(task, service_names)
        shown = HISTORY_INDENT + name if name == previous else name
        previous = name
        node = node_names.get(task.node_id, task.node_id) if task.node_id else ""
        rows.append(
            [
                truncate_id(task.id, no_trunc),
                shown,
                short_image(task.spec.container.image, no_trunc),
                node,
                capitalize(states.state_name(task.desired_state)),
                current_state(task, now),
                task_error(task, no_trunc),
                ",".join(format_port(p) for p in task.status.port_status.ports),
            ]
        )
    return rows


def node_hostnames(client: ControlClient, tasks: Sequence[objects_pb2.Task]) -> dict[str, str]:
    """Node id -> hostname, from one ListNodes (none if no task is on a node)."""
    if not any(t.node_id for t in tasks):
        return {}
    return {n.id: n.description.hostname or n.id for n in client.list_nodes()}


def print_tasks(
    client: ControlClient,
    tasks: Sequence[objects_pb2.Task],
    *,
    quiet: bool,
    fmt: str | None,
    no_trunc: bool,
) -> None:
    """Print tasks as `docker service ps` does: a table, their ids (-q), or JSON."""
    out_format = cli.output_format(fmt)
    if quiet:
        for task in sort_tasks(tasks):
            typer.echo(truncate_id(task.id, no_trunc))
        return
    if out_format == "json":
        print_json(sort_tasks(tasks))
        return
    rows = task_rows(tasks, node_hostnames(client, tasks), now=time.time(), no_trunc=no_trunc)
    print_table(TASK_HEADERS, rows)


def task_filters(
    values: list[str] | None, allowed: Sequence[str] = TASK_FILTERS
) -> control_pb2.ListTasksRequest.Filters:
    """`-f` flags as ListTasks filters: desired-state, id, name, node, service, label."""
    grouped = cli.filters(values, allowed)
    out = control_pb2.ListTasksRequest.Filters(
        names=grouped.get("name", []),
        id_prefixes=grouped.get("id", []),
        node_ids=grouped.get("node", []),
        service_ids=grouped.get("service", []),
        desired_states=cli.flag_values(
            parse_desired_state, grouped.get("desired-state"), "--filter desired-state"
        ),
    )
    for label in grouped.get("label", []):
        key, _, value = label.partition("=")
        out.labels[key] = value
    return out


@app.command("ls")
def list_tasks(
    ctx: typer.Context,
    *,
    quiet: QuietOpt = False,
    fmt: FormatOpt = None,
    filter_: FilterOpt = None,
    no_trunc: NoTruncOpt = False,
) -> None:
    """List tasks of all services (filters: desired-state, id, name, node, service, label)."""
    client = cli.get_client(ctx)
    cli.output_format(fmt)
    tasks = client.list_tasks(task_filters(filter_))
    print_tasks(client, tasks, quiet=quiet, fmt=fmt, no_trunc=no_trunc)


app.command("list", hidden=True)(list_tasks)


@app.command("inspect")
def inspect_tasks(
    ctx: typer.Context,
    *,
    tasks: Annotated[list[str], typer.Argument(metavar="TASK", help="Task ids or prefixes.")],
) -> None:
    """Display detailed information on one or more tasks, as a JSON array."""
    client = cli.get_client(ctx)
    found, ok = cli.fetch_each(tasks, client.get_task)
    print_json(found)
    if not ok:
        raise typer.Exit(1)
