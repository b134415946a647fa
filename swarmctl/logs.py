"""`swarmctl service logs SERVICE|TASK`: the lines a service's tasks (or one task) wrote,
gathered from every node, as `docker service logs` shows them.

    web.1.3f9c0e1a2b4d@node-1    | listening on :80
    web.2.8a7b6c5d4e3f@node-2    | listening on :80

Each line is prefixed `<service>.<slot>.<task id>@<node>` (`--no-task-ids` drops the
task id, `--raw` the whole prefix, `-t` puts the time in front); what a task wrote to
stderr goes to stderr. The manager streams the lines as the agents send them (ServiceLogs);
task and node ids are turned into names with ListTasks and ListNodes, looked up again
for a task or node that shows up later (`-f` follows tasks that start after it began).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Protocol

import typer

from common.api import control_pb2, logs_pb2, objects_pb2
from common.limits import INT64_MAX
from common.timeutil import timestamp_seconds
from swarmctl import cli
from swarmctl.client import ControlClient
from swarmctl.errors import EXIT_INTERRUPTED, NotFound, SwarmctlError
from swarmctl.output import rfc3339_nano, truncate_id
from swarmctl.parsing import parse_count, parse_timestamp
from swarmctl.task import task_name

# Docker's separator between the prefix and the line.
SEPARATOR = "    | "
ALL = "all"


class NameSource(Protocol):
    """What the names need of the client."""

    def list_tasks(
        self, filters: control_pb2.ListTasksRequest.Filters | None = None
    ) -> list[objects_pb2.Task]: ...

    def list_nodes(
        self, filters: control_pb2.ListNodesRequest.Filters | None = None
    ) -> list[objects_pb2.Node]: ...

    def get_task(self, ref: str) -> objects_pb2.Task: ...


def parse_tail(text: str) -> int | None:
    """`-n/--tail`: a number of lines from the end of each task's log, or `all` (None)."""
    if text.strip().lower() == ALL:
        return None
    return parse_count(text, "tail", INT64_MAX)


@dataclass
class Prefixes:
    """The `web.1.3f9c0e1a2b4d@node-1` prefixes of log lines, from task and node ids.

    Names are looked up once and kept; a task or node not known yet (a task that
    started after the logs began) is looked up again, once.
    """

    client: NameSource
    service_ids: list[str]
    task_ids: bool = True
    no_trunc: bool = False
    resolve: bool = True
    # Docker pads the prefixes of one-digit slots when a service has 10 or more.
    slot_width: int = 1
    tasks: dict[str, objects_pb2.Task] = field(default_factory=dict)
    hostnames: dict[str, str] = field(default_factory=dict)
    _cache: dict[tuple[str, str], str] = field(default_factory=dict)
    _missed: set[str] = field(default_factory=set)

    def load(self, tasks: Iterable[objects_pb2.Task] = ()) -> None:
        """Learn the tasks of the services (and `tasks`), and the nodes."""
        for task in tasks:
            self.tasks[task.id] = task
        if self.service_ids:
            filters = control_pb2.ListTasksRequest.Filters(service_ids=self.service_ids)
            self.tasks.update((t.id, t) for t in self.client.list_tasks(filters))
        if self.resolve:
            self._load_nodes()

    def _load_nodes(self) -> None:
        self.hostnames.update(
            (n.id, n.description.hostname or n.id) for n in self.client.list_nodes()
        )

    def _task(self, context: logs_pb2.LogContext) -> objects_pb2.Task | None:
        task = self.tasks.get(context.task_id)
        if task is not None or context.task_id in self._missed:
            return task
        self._missed.add(context.task_id)
        try:
            if context.service_id:
                filters = control_pb2.ListTasksRequest.Filters(service_ids=[context.service_id])
                self.tasks.update((t.id, t) for t in self.client.list_tasks(filters))
            if context.task_id not in self.tasks:
                found = self.client.get_task(context.task_id)
                self.tasks[found.id] = found
        except SwarmctlError:
            return None  # gone already: the ids will do
        return self.tasks.get(context.task_id)

    def _hostname(self, node_id: str) -> str:
        if not self.resolve:
            return node_id
        if node_id not in self.hostnames and node_id not in self._missed:
            self._missed.add(node_id)
            with contextlib.suppress(SwarmctlError):
                self._load_nodes()
        return self.hostnames.get(node_id, node_id)

    def prefix(self, context: logs_pb2.LogContext) -> str:
        key = (context.task_id, context.node_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        task = self._task(context)
        padding = 0
        if task is None:
            name = truncate_id(context.task_id, self.no_trunc)
        elif not self.resolve:
            name = f"{task.service_id}.{task.slot}" if task.slot else task.service_id
        else:
            name = task_name(task)
            if task.slot:
                padding = max(0, self.slot_width - len(str(task.slot)))
        if task is not None and self.task_ids:
            name += "." + truncate_id(task.id, self.no_trunc)
        node = self._hostname(context.node_id or (task.node_id if task else ""))
        text = f"{name}@{node}" + " " * padding
        if task is not None:
            self._cache[key] = text
        return text


def format_line(
    message: logs_pb2.LogMessage,
    prefix: str,
    *,
    timestamps: bool = False,
    raw: bool = False,
) -> str:
    """One line as `docker service logs` prints it: `[TIME ]PREFIX    | TEXT`."""
    text = message.data.decode("utf-8", errors="replace").rstrip("\n")
    parts = []
    if timestamps:
        parts.append(rfc3339_nano(message.timestamp) + " ")
    if not raw:
        parts.append(prefix + SEPARATOR)
    parts.append(text)
    return "".join(parts)


def slot_width(services: Iterable[objects_pb2.Service]) -> int:
    """The digits of the highest slot of replicated services (1 otherwise)."""
    replicas = [s.spec.replicated.replicas for s in services if s.spec.HasField("replicated")]
    return len(str(max(replicas, default=1)))


@dataclass
class Targets:
    """What `service logs` was pointed at: services, or one task."""

    services: list[objects_pb2.Service] = field(default_factory=list)
    tasks: list[objects_pb2.Task] = field(default_factory=list)


def resolve_target(client: ControlClient, ref: str) -> Targets:
    """A service by id, prefix or name; failing that a task by id, prefix or name (web.1)."""
    try:
        return Targets(services=[client.get_service(ref)])
    except NotFound:
        pass
    try:
        return Targets(tasks=[client.get_task(ref)])
    except NotFound:
        raise SwarmctlError(f"no such service or task: {ref}") from None


def log_options(
    *, follow: bool, tail: int | None, since: float | None, now: float
) -> tuple[logs_pb2.LogOptions, float | None]:
    """The LogOptions to send, and the time before which lines are dropped here.

    The manager reads tail 0 as "everything", so `--tail 0` asks for the lines from
    now on instead (none at all without --follow). Engines count --since in whole
    seconds, so the exact cut is made here.
    """
    options = logs_pb2.LogOptions(follow=follow, tail=-1 if tail is None else tail)
    cut = since
    if tail == 0:
        cut = max(now, since or 0.0)
        options.tail = -1
    if cut is not None:
        options.since.FromNanoseconds(round(cut * 1e9))
    return options, cut


def print_logs(
    batches: Iterable[control_pb2.ServiceLogsMessage],
    prefixes: Prefixes,
    *,
    timestamps: bool,
    raw: bool,
    since: float | None = None,
) -> None:
    """Each line to stdout or stderr, as the task wrote it."""
    for batch in batches:
        for message in batch.messages:
            if since is not None and timestamp_seconds(message.timestamp) < since:
                continue
            prefix = "" if raw else prefixes.prefix(message.context)
            line = format_line(message, prefix, timestamps=timestamps, raw=raw)
            typer.echo(line, err=message.stream == logs_pb2.LOG_STREAM_STDERR)


def service_logs(
    ctx: typer.Context,
    *,
    target: Annotated[
        str,
        typer.Argument(
            metavar="SERVICE", help="A service, or a task (an id, a prefix, or a name like web.1)."
        ),
    ],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Follow log output.")] = False,
    tail: Annotated[
        str,
        typer.Option(
            "-n",
            "--tail",
            metavar="N",
            help='Number of lines to show from the end of each task\'s log, or "all".',
        ),
    ] = ALL,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="Show lines since a time (2026-11-28T01:02:03Z) or for a duration (42m).",
        ),
    ] = None,
    timestamps: Annotated[
        bool, typer.Option("-t", "--timestamps", help="Show timestamps.")
    ] = False,
    no_task_ids: Annotated[
        bool, typer.Option("--no-task-ids", help="Do not include task IDs in the output.")
    ] = False,
    no_trunc: Annotated[bool, typer.Option("--no-trunc", help="Do not truncate output.")] = False,
    no_resolve: Annotated[
        bool, typer.Option("--no-resolve", help="Do not map IDs to names in the output.")
    ] = False,
    raw: Annotated[
        bool, typer.Option("--raw", help="Do not neatly format logs (no prefixes).")
    ] = False,
) -> None:
    """Fetch the logs of a service or a task."""
    tail_lines = cli.flag_value(parse_tail, tail, "--tail")
    since_time = None if since is None else cli.flag_value(parse_timestamp, since, "--since")
    client = cli.get_client(ctx)
    targets = resolve_target(client, target)
    options, cut = log_options(follow=follow, tail=tail_lines, since=since_time, now=time.time())
    if tail_lines == 0 and not follow:
        return
    prefixes = Prefixes(
        client,
        [s.id for s in targets.services],
        task_ids=not no_task_ids,
        no_trunc=no_trunc,
        resolve=not no_resolve,
        slot_width=slot_width(targets.services),
    )
    if not raw:
        prefixes.load(targets.tasks)
    batches = client.service_logs(
        service_ids=[s.id for s in targets.services],
        task_ids=[t.id for t in targets.tasks],
        options=options,
    )
    try:
        print_logs(batches, prefixes, timestamps=timestamps, raw=raw, since=cut)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
