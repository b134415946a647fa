"""`swarmctl cluster inspect|update`: the cluster object (its id and settings)."""

from __future__ import annotations

from typing import Annotated

import typer
from google.protobuf.duration_pb2 import Duration

from common.api import specs_pb2
from common.limits import INT64_MAX
from swarmctl import cli, pretty
from swarmctl.output import print_json
from swarmctl.parsing import (
    FlagValueError,
    parse_bool,
    parse_count,
    parse_positive_duration,
)

app = cli.new_typer("Manage the cluster.")


@app.command("inspect")
def inspect(ctx: typer.Context) -> None:
    """Display the cluster's id and settings (a JSON array of one object)."""
    print_json([cli.get_client(ctx).get_cluster()])


def _history_limit(text: str) -> int:
    return parse_count(text, "task history limit", INT64_MAX)


MIN_CERT_EXPIRY = 60.0  # the manager refuses less too


def _cert_expiry(text: str) -> Duration:
    value = parse_positive_duration(text)
    if value.seconds + value.nanos / 1e9 < MIN_CERT_EXPIRY:
        raise FlagValueError(f"invalid certificate expiry {text!r}: use at least 1m")
    return value


@app.command("update")
def update(
    ctx: typer.Context,
    *,
    task_history_limit: Annotated[
        str | None,
        typer.Option(
            "--task-history-limit",
            metavar="N",
            help="Tasks kept per slot, the running one included.",
        ),
    ] = None,
    heartbeat_period: Annotated[
        str | None,
        typer.Option(
            "--heartbeat-period",
            metavar="DURATION",
            help="How often agents report to the managers, e.g. 5s.",
        ),
    ] = None,
    auto_rebalance: Annotated[
        str | None,
        typer.Option(
            "--auto-rebalance",
            metavar="BOOL",
            help="(swarmlet extension) true: rebalance replicated services when a node "
            "joins or becomes active again; false: leave tasks where they are.",
        ),
    ] = None,
    cert_expiry: Annotated[
        str | None,
        typer.Option(
            "--cert-expiry",
            metavar="DURATION",
            help="Lifetime of node certificates issued from now on (at least 1m), e.g. "
            "2160h. Existing certificates get it when they renew.",
        ),
    ] = None,
) -> None:
    """Update the cluster's settings, then print them."""
    if (
        task_history_limit is None
        and heartbeat_period is None
        and auto_rebalance is None
        and cert_expiry is None
    ):
        ctx.fail(
            "nothing to update: give --task-history-limit, --heartbeat-period, "
            "--auto-rebalance or --cert-expiry"
        )
    limit = cli.optional_flag(_history_limit, task_history_limit, "--task-history-limit")
    period = cli.optional_flag(parse_positive_duration, heartbeat_period, "--heartbeat-period")
    rebalance = cli.optional_flag(parse_bool, auto_rebalance, "--auto-rebalance")
    expiry = cli.optional_flag(_cert_expiry, cert_expiry, "--cert-expiry")
    client = cli.get_client(ctx)
    cluster = client.get_cluster()
    spec = specs_pb2.ClusterSpec()
    spec.CopyFrom(cluster.spec)
    if limit is not None:
        spec.orchestration.task_history_retention_limit = limit
    if period is not None:
        spec.dispatcher.heartbeat_period.CopyFrom(period)
    if rebalance is not None:
        spec.orchestration.auto_rebalance = rebalance
    if expiry is not None:
        spec.ca_config.node_cert_expiry.CopyFrom(expiry)
    updated = client.update_cluster(cluster.meta.version, spec)
    typer.echo(pretty.cluster_settings(updated))


@app.callback()
def _cluster() -> None:
    """Manage the cluster."""
