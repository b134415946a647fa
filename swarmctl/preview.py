"""The placement preview of `service create/update --dry-run` (a swarmlet extension).

The manager runs its scheduler over the tasks the spec would have, stores nothing, and
answers where each would go and why nodes were turned down:

    SLOT      NODE
    1         node-1
    2         not placed: no suitable node (max replicas per node on 2 nodes)
    node node-2 (3f9c0e1a2b4d): max replicas per node (1) reached

A global service's tasks are per node, so its table is NODE ID -> NODE instead.
"""

from __future__ import annotations

import json

import typer

from common.api import control_pb2
from swarmctl.output import OutputFormat, message_dict, natural_key, render_table, truncate_id

SLOT_HEADERS = ("SLOT", "NODE")
NODE_HEADERS = ("NODE ID", "NODE")


def _hostnames(preview: control_pb2.PlacementPreview) -> dict[str, str]:
    names = {r.node_id: r.node_hostname for r in preview.rejections if r.node_hostname}
    names.update({p.node_id: p.node_hostname for p in preview.placements if p.node_hostname})
    return names


def _where(placement: control_pb2.PlacementPreview.Placement, hostnames: dict[str, str]) -> str:
    if placement.explanation or not placement.node_id:
        return f"not placed: {placement.explanation or 'no suitable node'}"
    return hostnames.get(placement.node_id) or placement.node_id


def preview_table(
    preview: control_pb2.PlacementPreview,
) -> tuple[tuple[str, str], list[list[str]]]:
    """The headers and rows: per slot (replicated, jobs) or per node (global)."""
    hostnames = _hostnames(preview)
    placements = list(preview.placements)
    if any(p.slot for p in placements):
        placements.sort(key=lambda p: p.slot)
        return SLOT_HEADERS, [[str(p.slot), _where(p, hostnames)] for p in placements]
    placements.sort(key=lambda p: natural_key(hostnames.get(p.node_id) or p.node_id))
    return NODE_HEADERS, [[truncate_id(p.node_id), _where(p, hostnames)] for p in placements]


def rejection_lines(preview: control_pb2.PlacementPreview) -> list[str]:
    """`node <hostname> (<id12>): <reason>`, one per node the scheduler turned down."""
    rejections = sorted(preview.rejections, key=lambda r: natural_key(r.node_hostname or r.node_id))
    return [
        f"node {r.node_hostname or r.node_id} ({truncate_id(r.node_id)}): {r.reason}"
        for r in rejections
    ]


def render_preview(preview: control_pb2.PlacementPreview) -> str:
    headers, rows = preview_table(preview)
    return "\n".join([render_table(headers, rows), *rejection_lines(preview)])


def print_preview(preview: control_pb2.PlacementPreview, fmt: OutputFormat) -> None:
    if fmt == "json":
        typer.echo(json.dumps(message_dict(preview), indent=4, ensure_ascii=False))
    else:
        typer.echo(render_preview(preview))
