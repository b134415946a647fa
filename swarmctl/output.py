"""Output: Docker-style tables, JSON of API objects, and the small formatters they share.

Tables are laid out like the Docker CLI's tabwriter (minimum cell width 10, padding 3,
spaces only): plain text, no box drawing, never truncated or wrapped to the terminal's
width, so that `swarmctl service ls | grep web` sees whole lines.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.cells import cell_len

from common.api import types_pb2
from swarmctl.parsing import protocol_name

OutputFormat = Literal["table", "json"]

ID_LENGTH = 12
# tabwriter.NewWriter(out, 10, 1, 3, ' ', 0), as docker/cli's formatter uses.
MIN_WIDTH = 10
PADDING = 3

_DIGITS = re.compile(r"(\d+)")


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Rows under headers, each column as wide as its widest cell plus 3 (at least 10).

    The last column is not padded and trailing spaces are stripped. Returns the lines
    joined with newlines, without a final newline.
    """
    table = [list(headers), *(list(r) for r in rows)]
    columns = max(len(r) for r in table)
    for row in table:
        row.extend([""] * (columns - len(row)))
    widths = [
        max(MIN_WIDTH, max(cell_len(row[i]) for row in table) + PADDING) for i in range(columns - 1)
    ]
    lines = []
    for row in table:
        parts = [cell + " " * (widths[i] - cell_len(cell)) for i, cell in enumerate(row[:-1])]
        parts.append(row[-1])
        lines.append("".join(parts).rstrip())
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    typer.echo(render_table(headers, rows))


def message_dict(message: Message) -> dict[str, Any]:
    """An API object as JSON-ready data: proto field names, defaults included."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def render_json(messages: Iterable[Message]) -> str:
    """A JSON array of the objects, indented like `docker inspect`."""
    return json.dumps([message_dict(m) for m in messages], indent=4, ensure_ascii=False)


def print_json(messages: Iterable[Message]) -> None:
    typer.echo(render_json(messages))


def truncate_id(object_id: str, no_trunc: bool = False) -> str:
    return object_id if no_trunc else object_id[:ID_LENGTH]


def ellipsis(text: str, width: int) -> str:
    """`text` cut to `width` characters, the last one an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[: width - 1] + "…"


def short_image(image: str, no_trunc: bool = False) -> str:
    """The image without its `@sha256:...` digest, unless --no-trunc."""
    if no_trunc:
        return image
    return image.split("@", 1)[0]


def capitalize(word: str) -> str:
    """A state name with a capital, as Docker's PrettyPrint: running -> Running."""
    return word[:1].upper() + word[1:]


def enum_word(enum_name: str, prefix: str) -> str:
    """An enum value name as a word: NODE_STATE_READY, prefix NODE_STATE_ -> Ready."""
    return capitalize(enum_name.removeprefix(prefix).lower().replace("_", "-"))


def format_port(port: types_pb2.PortConfig) -> str:
    """`*:8080->80/tcp`, as `docker service ls/ps` shows a published port."""
    return f"*:{port.published_port}->{port.target_port}/{protocol_name(port.protocol)}"


def format_ports(ports: Iterable[types_pb2.PortConfig]) -> str:
    return ",".join(format_port(p) for p in ports)


def natural_key(text: str) -> list[Any]:
    """Sort key under which "web.2" comes before "web.10"."""
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(text)]


def check_format(value: str | None) -> OutputFormat:
    """The --format value: "table" (default) or "json"; ValueError otherwise."""
    if value is None or value.strip().lower() in ("", "table"):
        return "table"
    if value.strip().lower() == "json":
        return "json"
    raise ValueError(f"unsupported format {value!r}: use table or json")


def rfc3339_nano(ts: Timestamp) -> str:
    """A time as Docker prints log and event times (RFC3339NanoFixed, in UTC):
    2026-11-28T01:02:03.000000000Z."""
    when = datetime.datetime.fromtimestamp(ts.seconds, datetime.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{ts.nanos:09d}Z"
