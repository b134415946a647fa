"""`swarmctl events`: changes to services, tasks and nodes as they happen, as `docker
events` prints them.

    2026-11-28T01:02:03.000000000Z service create 3f9c0e1a2b4d... (name=web)
    2026-11-28T01:02:03.120000000Z task update 8a7b6c5d4e3f... (name=web.1, state=running,
        desired=running, node=...)

It runs until Ctrl-C, or for `--until` (a duration from now, or a time). `--since`
first replays the changes the manager still remembers from then on (a duration there
is how long ago). `--format json` prints one JSON
object a line, shaped like Docker's (Type, Action, Actor.ID, Actor.Attributes, time).
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any

import typer

from common.api import control_pb2
from common.timeutil import timestamp_seconds
from swarmctl import cli
from swarmctl.errors import EXIT_INTERRUPTED
from swarmctl.output import rfc3339_nano
from swarmctl.parsing import FlagValueError, is_duration, parse_timestamp, parse_until

EVENT_FILTERS = ("type", "event")
EVENT_TYPES = ("service", "task", "node")
EVENT_ACTIONS = ("create", "update", "remove")
# A deadline for --until in the past: long enough to replay what --since asks for.
REPLAY_SECONDS = 1.0

# `key=value` pairs of an event's detail; `err=` is the last one and takes the rest.
_DETAIL_KEY = re.compile(r"(?:^|\s)([a-z_]+)=")


def detail_attributes(detail: str) -> list[tuple[str, str]]:
    """`state=running desired=running err=task: exit (1)` as ordered (key, value) pairs."""
    matches = list(_DETAIL_KEY.finditer(detail))
    out: list[tuple[str, str]] = []
    for i, match in enumerate(matches):
        key = match.group(1)
        if key == "err":
            out.append((key, detail[match.end() :].strip()))
            break
        end = matches[i + 1].start() if i + 1 < len(matches) else len(detail)
        out.append((key, detail[match.end() : end].strip()))
    if not matches and detail.strip():
        out.append(("detail", detail.strip()))
    return out


def event_attributes(event: control_pb2.EventMessage) -> list[tuple[str, str]]:
    attrs = [("name", event.name)] if event.name else []
    return attrs + detail_attributes(event.detail)


def event_line(event: control_pb2.EventMessage) -> str:
    """`<time> <type> <action> <id> (name=..., key=value, ...)`, as `docker events`."""
    attrs = ", ".join(f"{k}={v}" for k, v in event_attributes(event))
    line = f"{rfc3339_nano(event.time)} {event.type} {event.action} {event.id}"
    return f"{line} ({attrs})" if attrs else line


def event_json(event: control_pb2.EventMessage) -> str:
    """One line of JSON in the shape of Docker's events."""
    nanos = event.time.seconds * 1_000_000_000 + event.time.nanos
    data: dict[str, Any] = {
        "Type": event.type,
        "Action": event.action,
        "Actor": {"ID": event.id, "Attributes": dict(event_attributes(event))},
        "scope": "swarm",
        "time": event.time.seconds,
        "timeNano": nanos,
    }
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def check_event_filters(grouped: dict[str, list[str]]) -> None:
    """Known values of `type=` and `event=` (FlagValueError otherwise)."""
    for key, known in (("type", EVENT_TYPES), ("event", EVENT_ACTIONS)):
        for value in grouped.get(key, []):
            if value not in known:
                raise FlagValueError(
                    f"invalid filter '{key}={value}': use {key}={', '.join(known)}"
                )


def events(
    ctx: typer.Context,
    *,
    filter_: Annotated[
        list[str] | None,
        typer.Option(
            "-f",
            "--filter",
            metavar="KEY=VALUE",
            help="type=service|task|node, event=create|update|remove (repeatable).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="TIME",
            help="Also show the changes since a time (RFC 3339) or for a duration (10m) "
            "that the manager still remembers.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="TIME",
            help="Stop after a duration (5s), or at a time (RFC 3339); default: at Ctrl-C.",
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", metavar="FORMAT", help="table (default: lines) or json."),
    ] = None,
) -> None:
    """Get real time events from the manager (services, tasks and nodes)."""
    out_format = cli.output_format(fmt)
    grouped = cli.filters(filter_, EVENT_FILTERS)
    try:
        check_event_filters(grouped)
    except FlagValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'-f' / '--filter'") from None
    now = time.time()
    since_time = None if since is None else cli.flag_value(parse_timestamp, since, "--since")
    timeout = None
    until_time = None  # a time given: later events (replayed ones) are not shown
    if until is not None:
        end = cli.flag_value(lambda text: parse_until(text, now), until, "--until")
        if not is_duration(until):
            until_time = end
        timeout = max(end - now, REPLAY_SECONDS if since_time is not None else 0.0)
    actions = set(grouped.get("event", []))
    client = cli.get_client(ctx)
    stream = client.watch_events(
        types=sorted(set(grouped.get("type", []))), since=since_time, timeout=timeout
    )
    try:
        for event in stream:
            if actions and event.action not in actions:
                continue
            if until_time is not None and timestamp_seconds(event.time) > until_time:
                continue
            typer.echo(event_json(event) if out_format == "json" else event_line(event))
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
