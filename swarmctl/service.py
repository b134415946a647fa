"""`swarmctl service create|ls|ps|inspect|logs|scale|update|rollback|rm`, as `docker
service`, and `service rebalance` (a swarmlet extension).

Flags marked "(swarmlet extension)" in --help have no Docker counterpart:
--placement-strategy, --platform, --dry-run and `service rebalance`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from common.api import control_pb2, objects_pb2, specs_pb2
from common.timeutil import parse_duration
from swarmctl import cli, pretty
from swarmctl.client import ControlClient
from swarmctl.errors import ManagerUnreachable, SwarmctlError
from swarmctl.logs import service_logs
from swarmctl.output import (
    OutputFormat,
    format_ports,
    natural_key,
    print_json,
    print_table,
    short_image,
    truncate_id,
)
from swarmctl.parsing import (
    parse_command,
    parse_constraint,
    parse_duration_value,
    parse_endpoint_mode,
    parse_env,
    parse_env_key,
    parse_label,
    parse_label_key,
    parse_max_concurrent,
    parse_max_replicas,
    parse_mode,
    parse_network,
    parse_placement_pref,
    parse_placement_strategy,
    parse_platform,
    parse_port_ref,
    parse_publish,
    parse_replicas,
    parse_restart_attempts,
    parse_restart_condition,
    parse_scale,
)
from swarmctl.preview import print_preview
from swarmctl.progress import wait_for_convergence
from swarmctl.rebalance import (
    COUNT_HEADERS,
    Requested,
    count_rows,
    request_rebalance,
    service_tasks,
    tasks_per_node,
    wait_for_rebalance,
)
from swarmctl.registry import image_platforms
from swarmctl.service_spec import (
    CreateOptions,
    HealthOptions,
    Resources,
    UpdateConfigOptions,
    UpdateOptions,
    apply_update,
    build_spec,
    mode_conflict,
    resolve_network_refs,
    set_replicas,
)
from swarmctl.task import (
    FilterOpt,
    FormatOpt,
    NoTruncOpt,
    print_tasks,
    task_filters,
)

T = TypeVar("T")

SERVICE_HEADERS = ("ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS")
SERVICE_FILTERS = ("id", "label", "mode", "name")
PS_FILTERS = ("desired-state", "id", "name", "node", "label")
DEFAULT_TIMEOUT = "60s"
_MODE_NAMES = {
    "replicated": "replicated",
    "global": "global",
    "replicated_job": "replicated job",
    "global_job": "global job",
}

app = cli.new_typer("Manage services.")

DetachOpt = Annotated[
    bool,
    typer.Option("-d", "--detach", help="Exit immediately instead of waiting to converge."),
]
ProgressQuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Suppress progress output.")]
TimeoutOpt = Annotated[
    str,
    typer.Option(
        "--timeout", metavar="DURATION", help="How long to wait for the service to converge."
    ),
]
ReserveCpuOpt = Annotated[
    str | None, typer.Option("--reserve-cpu", metavar="CPUS", help="Reserve CPUs, e.g. 0.5.")
]
LimitCpuOpt = Annotated[
    str | None, typer.Option("--limit-cpu", metavar="CPUS", help="Limit CPUs, e.g. 1.5.")
]
ReserveMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--reserve-memory", metavar="BYTES", help="Reserve memory, e.g. 512M (b, k, m, g)."
    ),
]
LimitMemoryOpt = Annotated[
    str | None,
    typer.Option("--limit-memory", metavar="BYTES", help="Limit memory, e.g. 1G (b, k, m, g)."),
]
MaxReplicasOpt = Annotated[
    str | None,
    typer.Option(
        "--replicas-max-per-node",
        metavar="N",
        help="Maximum number of tasks per node (0: unlimited).",
    ),
]
MaxConcurrentOpt = Annotated[
    str | None,
    typer.Option(
        "--max-concurrent",
        metavar="N",
        help="Number of job tasks to run at once (replicated-job; default: --replicas).",
    ),
]
EndpointModeOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint-mode",
        metavar="MODE",
        help="Endpoint mode: vip (a virtual IP per network, the default) or dnsrr (the "
        "name resolves to the tasks' addresses).",
    ),
]
StrategyOpt = Annotated[
    str | None,
    typer.Option(
        "--placement-strategy",
        metavar="STRATEGY",
        help="(swarmlet extension) spread (default: even the load out) or binpack (fill "
        "the fullest node that fits first).",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="(swarmlet extension) Show where the tasks would be placed and why nodes "
        "were turned down; change nothing.",
    ),
]
NoResolveImageOpt = Annotated[
    bool,
    typer.Option(
        "--no-resolve-image",
        help="Do not query the registry for the image's platforms (by default the tasks "
        "are kept to nodes of the platforms the image is built for).",
    ),
]
PreviewFormatOpt = Annotated[
    str | None,
    typer.Option("--format", metavar="FORMAT", help="With --dry-run: table (default) or json."),
]


def _opt(flag: str, metavar: str, help_text: str) -> Any:
    return typer.Option(flag, metavar=metavar, help=help_text)


UpdateParallelismOpt = Annotated[
    str | None,
    _opt("--update-parallelism", "N", "Tasks updated at once (0: all at once; default 1)."),
]
UpdateDelayOpt = Annotated[
    str | None,
    _opt("--update-delay", "DURATION", "Delay between updates of batches (default 0s)."),
]
UpdateFailureActionOpt = Annotated[
    str | None,
    _opt(
        "--update-failure-action",
        "ACTION",
        "Action on update failure: pause, continue or rollback (default pause).",
    ),
]
UpdateMonitorOpt = Annotated[
    str | None,
    _opt(
        "--update-monitor",
        "DURATION",
        "How long to watch each updated task for failure (default 5s).",
    ),
]
UpdateMaxFailureRatioOpt = Annotated[
    str | None,
    _opt(
        "--update-max-failure-ratio",
        "RATIO",
        "Share of tasks that may fail during an update, 0 to 1 (default 0).",
    ),
]
UpdateOrderOpt = Annotated[
    str | None,
    _opt(
        "--update-order",
        "ORDER",
        "stop-first (default) or start-first: start the new task before stopping the old.",
    ),
]
RollbackParallelismOpt = Annotated[
    str | None,
    _opt("--rollback-parallelism", "N", "Tasks rolled back at once (0: all at once; default 1)."),
]
RollbackDelayOpt = Annotated[
    str | None,
    _opt("--rollback-delay", "DURATION", "Delay between rollbacks of batches (default 0s)."),
]
RollbackFailureActionOpt = Annotated[
    str | None,
    _opt(
        "--rollback-failure-action",
        "ACTION",
        "Action on rollback failure: pause or continue (default pause).",
    ),
]
RollbackMonitorOpt = Annotated[
    str | None,
    _opt(
        "--rollback-monitor",
        "DURATION",
        "How long to watch each rolled back task for failure (default 5s).",
    ),
]
RollbackMaxFailureRatioOpt = Annotated[
    str | None,
    _opt(
        "--rollback-max-failure-ratio",
        "RATIO",
        "Share of tasks that may fail during a rollback, 0 to 1 (default 0).",
    ),
]
RollbackOrderOpt = Annotated[
    str | None,
    _opt("--rollback-order", "ORDER", "stop-first (default) or start-first."),
]
HealthCmdOpt = Annotated[
    str | None, _opt("--health-cmd", "CMD", "Command to run to check health (in a shell).")
]
HealthIntervalOpt = Annotated[
    str | None, _opt("--health-interval", "DURATION", "Time between running the check.")
]
HealthTimeoutOpt = Annotated[
    str | None, _opt("--health-timeout", "DURATION", "Maximum time to allow one check to run.")
]
HealthRetriesOpt = Annotated[
    str | None,
    _opt("--health-retries", "N", "Consecutive failures needed to report unhealthy."),
]
HealthStartPeriodOpt = Annotated[
    str | None,
    _opt(
        "--health-start-period",
        "DURATION",
        "Start period for the container to initialize before failed checks count.",
    ),
]
NoHealthcheckOpt = Annotated[
    bool,
    typer.Option("--no-healthcheck", help="Disable any container-specified HEALTHCHECK."),
]


def service_mode(spec: specs_pb2.ServiceSpec) -> str:
    return _MODE_NAMES.get(spec.WhichOneof("mode") or "", "")


def replicas_text(
    service: objects_pb2.Service, counts: control_pb2.ServiceStatusCounts | None
) -> str:
    """`3/3` (running/desired), as `docker service ls` shows it.

    A job adds its completions: `0/5 (5/5 completed)`.
    """
    spec = service.spec
    mode = spec.WhichOneof("mode")
    running = counts.running if counts else 0
    desired = counts.desired if counts else 0
    if counts is None and mode == "replicated":
        desired = spec.replicated.replicas
    text = f"{running}/{desired}"
    if counts is None and mode == "replicated_job":
        desired = spec.replicated_job.total_completions
        text = f"{running}/{desired}"
    if mode == "replicated_job":
        completed = counts.completed if counts else 0
        text += f" ({completed}/{spec.replicated_job.total_completions} completed)"
    elif mode == "global_job":
        # The manager counts a global job's completed tasks into its desired ones.
        completed = counts.completed if counts else 0
        text += f" ({completed}/{desired} completed)"
    if spec.task.placement.max_replicas and mode in ("replicated", "global"):
        text += f" (max {spec.task.placement.max_replicas} per node)"
    return text


def service_rows(
    services: Iterable[objects_pb2.Service],
    statuses: Mapping[str, control_pb2.ServiceStatusCounts],
    *,
    no_trunc: bool = False,
) -> list[list[str]]:
    """The rows of `service ls`, sorted by name."""
    rows = []
    for svc in sorted(services, key=lambda s: natural_key(s.spec.annotations.name)):
        rows.append(
            [
                truncate_id(svc.id, no_trunc),
                svc.spec.annotations.name,
                service_mode(svc.spec),
                replicas_text(svc, statuses.get(svc.id)),
                short_image(svc.spec.task.container.image, no_trunc),
                format_ports(pretty.published_ports(svc)),
            ]
        )
    return rows


def _timeout(value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--timeout'") from None


def _follow(
    ctx: typer.Context, service: objects_pb2.Service, *, timeout: float, quiet: bool
) -> None:
    wait_for_convergence(cli.get_client(ctx), service, timeout=timeout, quiet=quiet)


def _preview_format(fmt: str | None, dry_run: bool) -> OutputFormat:
    out_format = cli.output_format(fmt)
    if fmt is not None and not dry_run:
        raise typer.BadParameter(
            "--format can only be used with --dry-run", param_hint="'--format'"
        )
    return out_format


@app.command("create", context_settings={"allow_interspersed_args": False})
def create(
    ctx: typer.Context,
    *,
    image: Annotated[str, typer.Argument(metavar="IMAGE", help="The image to run.")],
    command: Annotated[
        list[str] | None,
        typer.Argument(metavar="COMMAND", help="The container's command."),
    ] = None,
    name: Annotated[str, typer.Option("--name", metavar="NAME", help="Service name.")] = "",
    mode: Annotated[
        str,
        typer.Option(
            "--mode", metavar="MODE", help="replicated, global, replicated-job or global-job."
        ),
    ] = "replicated",
    replicas: Annotated[
        str | None,
        typer.Option(
            "--replicas",
            metavar="N",
            help="Number of tasks, or of completions of a replicated job (default 1).",
        ),
    ] = None,
    max_concurrent: MaxConcurrentOpt = None,
    env: Annotated[
        list[str] | None,
        typer.Option("-e", "--env", metavar="KEY=VALUE", help="Set an environment variable."),
    ] = None,
    label: Annotated[
        list[str] | None, typer.Option("-l", "--label", metavar="K=V", help="Service label.")
    ] = None,
    container_label: Annotated[
        list[str] | None,
        typer.Option("--container-label", metavar="K=V", help="Container label."),
    ] = None,
    publish: Annotated[
        list[str] | None,
        typer.Option(
            "-p",
            "--publish",
            metavar="PORT",
            help="Publish a port: [PUBLISHED:]TARGET[/PROTOCOL] or "
            "mode=ingress|host,target=80,published=8080,protocol=tcp (ingress: on every "
            "node, through the routing mesh; host: on the node running each task).",
        ),
    ] = None,
    network: Annotated[
        list[str] | None,
        typer.Option(
            "--network",
            metavar="NETWORK",
            help="Network attachment: NAME or name=NAME,alias=ALIAS (repeatable).",
        ),
    ] = None,
    endpoint_mode: EndpointModeOpt = None,
    restart_condition: Annotated[
        str | None,
        typer.Option(
            "--restart-condition",
            metavar="COND",
            help="none, on-failure or any (default any; on-failure for jobs).",
        ),
    ] = None,
    restart_delay: Annotated[
        str, typer.Option("--restart-delay", metavar="DURATION", help="Delay between restarts.")
    ] = "5s",
    restart_max_attempts: Annotated[
        str | None,
        typer.Option("--restart-max-attempts", metavar="N", help="Maximum restarts (0: any)."),
    ] = None,
    restart_window: Annotated[
        str | None,
        typer.Option(
            "--restart-window", metavar="DURATION", help="Window of the restart attempts."
        ),
    ] = None,
    stop_grace_period: Annotated[
        str | None,
        typer.Option(
            "--stop-grace-period", metavar="DURATION", help="Time to wait before killing."
        ),
    ] = None,
    entrypoint: Annotated[
        str | None,
        typer.Option("--entrypoint", metavar="CMD", help="Override the image's entrypoint."),
    ] = None,
    workdir: Annotated[
        str, typer.Option("-w", "--workdir", metavar="DIR", help="Working directory.")
    ] = "",
    user: Annotated[
        str, typer.Option("-u", "--user", metavar="USER", help="Username or UID[:GID].")
    ] = "",
    hostname: Annotated[
        str, typer.Option("--hostname", metavar="NAME", help="Container hostname.")
    ] = "",
    constraint: Annotated[
        list[str] | None,
        typer.Option(
            "--constraint",
            metavar="EXPR",
            help="Placement constraint, e.g. node.labels.zone==east (repeatable).",
        ),
    ] = None,
    placement_pref: Annotated[
        list[str] | None,
        typer.Option(
            "--placement-pref",
            metavar="PREF",
            help="Placement preference spread=node.labels.KEY (repeatable; the first "
            "one is the top level of the spread).",
        ),
    ] = None,
    reserve_cpu: ReserveCpuOpt = None,
    reserve_memory: ReserveMemoryOpt = None,
    limit_cpu: LimitCpuOpt = None,
    limit_memory: LimitMemoryOpt = None,
    replicas_max_per_node: MaxReplicasOpt = None,
    placement_strategy: StrategyOpt = None,
    platform: Annotated[
        list[str] | None,
        typer.Option(
            "--platform",
            metavar="OS[/ARCH]",
            help="(swarmlet extension) Run only on nodes of this platform, e.g. linux/amd64 "
            "(repeatable: any of them).",
        ),
    ] = None,
    update_parallelism: UpdateParallelismOpt = None,
    update_delay: UpdateDelayOpt = None,
    update_failure_action: UpdateFailureActionOpt = None,
    update_monitor: UpdateMonitorOpt = None,
    update_max_failure_ratio: UpdateMaxFailureRatioOpt = None,
    update_order: UpdateOrderOpt = None,
    rollback_parallelism: RollbackParallelismOpt = None,
    rollback_delay: RollbackDelayOpt = None,
    rollback_failure_action: RollbackFailureActionOpt = None,
    rollback_monitor: RollbackMonitorOpt = None,
    rollback_max_failure_ratio: RollbackMaxFailureRatioOpt = None,
    rollback_order: RollbackOrderOpt = None,
    health_cmd: HealthCmdOpt = None,
    health_interval: HealthIntervalOpt = None,
    health_timeout: HealthTimeoutOpt = None,
    health_retries: HealthRetriesOpt = None,
    health_start_period: HealthStartPeriodOpt = None,
    no_healthcheck: NoHealthcheckOpt = False,
    no_resolve_image: NoResolveImageOpt = False,
    dry_run: DryRunOpt = False,
    fmt: PreviewFormatOpt = None,
    detach: DetachOpt = False,
    quiet: ProgressQuietOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Create a new service.

    Everything after IMAGE is the container's command and arguments:
    `swarmctl service create busybox sh -c 'echo hi'`.
    """
    mode_field = cli.flag_value(parse_mode, mode, "--mode")
    max_replicas = (
        cli.optional_flag(parse_max_replicas, replicas_max_per_node, "--replicas-max-per-node") or 0
    )
    conflict = mode_conflict(
        mode_field,
        replicas=replicas is not None,
        max_concurrent=max_concurrent is not None,
        max_replicas=max_replicas > 0,
    )
    if conflict is not None:
        flag, message = conflict
        raise typer.BadParameter(message, param_hint=f"'{flag}'")
    out_format = _preview_format(fmt, dry_run)
    opts = CreateOptions(
        image=image,
        args=list(command or ()),
        name=name,
        mode=mode_field,
        replicas=cli.optional_flag(parse_replicas, replicas, "--replicas"),
        max_concurrent=cli.optional_flag(parse_max_concurrent, max_concurrent, "--max-concurrent"),
        env=cli.flag_values(parse_env, env, "--env"),
        labels=dict(cli.flag_values(parse_label, label, "--label")),
        container_labels=dict(cli.flag_values(parse_label, container_label, "--container-label")),
        ports=[p for ps in cli.flag_values(parse_publish, publish, "--publish") for p in ps],
        networks=cli.flag_values(parse_network, network, "--network"),
        endpoint_mode=cli.optional_flag(parse_endpoint_mode, endpoint_mode, "--endpoint-mode"),
        restart_condition=cli.optional_flag(
            parse_restart_condition, restart_condition, "--restart-condition"
        ),
        restart_delay=cli.flag_value(parse_duration_value, restart_delay, "--restart-delay"),
        restart_max_attempts=cli.optional_flag(
            parse_restart_attempts, restart_max_attempts, "--restart-max-attempts"
        )
        or 0,
        restart_window=cli.optional_flag(parse_duration_value, restart_window, "--restart-window"),
        stop_grace_period=cli.optional_flag(
            parse_duration_value, stop_grace_period, "--stop-grace-period"
        ),
        entrypoint=cli.optional_flag(parse_command, entrypoint, "--entrypoint"),
        workdir=workdir,
        user=user,
        hostname=hostname,
        constraints=cli.flag_values(parse_constraint, constraint, "--constraint"),
        preferences=cli.flag_values(parse_placement_pref, placement_pref, "--placement-pref"),
        max_replicas=max_replicas,
        platforms=cli.flag_values(parse_platform, platform, "--platform"),
        strategy=cli.optional_flag(
            parse_placement_strategy, placement_strategy, "--placement-strategy"
        ),
        resources=Resources.from_flags(reserve_cpu, reserve_memory, limit_cpu, limit_memory),
        update_config=UpdateConfigOptions.from_flags(
            "update",
            update_parallelism,
            update_delay,
            update_failure_action,
            update_monitor,
            update_max_failure_ratio,
            update_order,
        ),
        rollback_config=UpdateConfigOptions.from_flags(
            "rollback",
            rollback_parallelism,
            rollback_delay,
            rollback_failure_action,
            rollback_monitor,
            rollback_max_failure_ratio,
            rollback_order,
        ),
        health=HealthOptions.from_flags(
            health_cmd,
            health_interval,
            health_timeout,
            health_retries,
            health_start_period,
            no_healthcheck,
        ),
    )
    wait = _timeout(timeout)
    client = cli.get_client(ctx)
    if not opts.platforms and not no_resolve_image:
        opts.platforms = image_platforms(image, debug=cli.settings(ctx).debug)
    if dry_run:
        print_preview(client.preview_create(build_spec(opts)), out_format)
        return
    service = client.create_service(build_spec(opts))
    typer.echo(service.id)
    if not detach:
        _follow(ctx, service, timeout=wait, quiet=quiet)


@app.command("ls")
def list_services(
    ctx: typer.Context,
    *,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only display IDs.")] = False,
    fmt: FormatOpt = None,
    filter_: FilterOpt = None,
    no_trunc: NoTruncOpt = False,
) -> None:
    """List services (filters: id, label, mode, name)."""
    out_format = cli.output_format(fmt)
    grouped = cli.filters(filter_, SERVICE_FILTERS)
    filters = control_pb2.ListServicesRequest.Filters(
        name_prefixes=grouped.get("name", []), id_prefixes=grouped.get("id", [])
    )
    for text in grouped.get("label", []):
        key, _, value = text.partition("=")
        filters.labels[key] = value
    modes = {m.replace("-", " ") for m in grouped.get("mode", [])}
    for m in modes - set(_MODE_NAMES.values()):
        raise typer.BadParameter(
            f"invalid mode {m!r}: use replicated, global, replicated job or global job",
            param_hint="'-f' / '--filter'",
        )
    resp = cli.get_client(ctx).list_services(filters)
    services = [s for s in resp.services if not modes or service_mode(s.spec) in modes]
    if quiet:
        for row in service_rows(services, resp.statuses, no_trunc=no_trunc):
            typer.echo(row[0])
    elif out_format == "json":
        ordered: list[objects_pb2.Service] = sorted(
            services, key=lambda s: natural_key(s.spec.annotations.name)
        )
        print_json(ordered)
    else:
        print_table(SERVICE_HEADERS, service_rows(services, resp.statuses, no_trunc=no_trunc))


app.command("list", hidden=True)(list_services)


@app.command("ps")
def ps(
    ctx: typer.Context,
    *,
    services: Annotated[list[str], typer.Argument(metavar="SERVICE", help="Services.")],
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only display task IDs.")] = False,
    fmt: FormatOpt = None,
    filter_: FilterOpt = None,
    no_trunc: NoTruncOpt = False,
) -> None:
    """List the tasks of one or more services (filters: desired-state, id, name, node, label)."""
    cli.output_format(fmt)
    filters = task_filters(filter_, PS_FILTERS)
    client = cli.get_client(ctx)
    found, ok = cli.fetch_each(services, client.get_service)
    if found:
        filters.service_ids.extend(s.id for s in found)
        tasks = client.list_tasks(filters)
        print_tasks(client, tasks, quiet=quiet, fmt=fmt, no_trunc=no_trunc)
    if not ok:
        raise typer.Exit(1)


@app.command("inspect")
def inspect(
    ctx: typer.Context,
    *,
    services: Annotated[list[str], typer.Argument(metavar="SERVICE", help="Services.")],
    pretty_: Annotated[
        bool, typer.Option("--pretty", help="Print the information in a human friendly format.")
    ] = False,
) -> None:
    """Display detailed information on one or more services (a JSON array)."""
    client = cli.get_client(ctx)
    found, ok = cli.fetch_each(services, client.get_service)
    if pretty_:
        names: dict[str, str] = {}
        if any(s.spec.task.networks or s.endpoint.virtual_ips for s in found):
            names = {n.id: n.spec.annotations.name for n in client.list_networks()}
        typer.echo("\n\n".join(pretty.service(s, network_names=names) for s in found))
    else:
        print_json(found)
    if not ok:
        raise typer.Exit(1)


@app.command("scale")
def scale(
    ctx: typer.Context,
    *,
    specs: Annotated[
        list[str], typer.Argument(metavar="SERVICE=REPLICAS", help="Services and counts.")
    ],
    detach: DetachOpt = False,
    quiet: ProgressQuietOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Scale one or more replicated services."""
    pairs = cli.flag_values(parse_scale, specs, "SERVICE=REPLICAS")
    wait = _timeout(timeout)
    client = cli.get_client(ctx)
    ok = True
    scaled: list[objects_pb2.Service] = []
    for ref, count in pairs:
        try:
            service = client.get_service(ref)
            spec = specs_pb2.ServiceSpec()
            spec.CopyFrom(service.spec)
            set_replicas(spec, count, service.spec.annotations.name or ref)
            updated = client.update_service(service.id, service.meta.version, spec)
        except ManagerUnreachable:
            raise
        except SwarmctlError as exc:
            cli.report_error(exc.message)
            ok = False
            continue
        typer.echo(f"{ref} scaled to {count}")
        scaled.append(updated if updated.id else service)
    if not detach:
        for service in scaled:
            try:
                _follow(ctx, service, timeout=wait, quiet=quiet)
            except ManagerUnreachable:
                raise
            except SwarmctlError as exc:
                cli.report_error(exc.message)
                ok = False
    if not ok:
        raise typer.Exit(1)


@app.command("update")
def update(
    ctx: typer.Context,
    *,
    service_ref: Annotated[str, typer.Argument(metavar="SERVICE", help="The service.")],
    image: Annotated[
        str | None, typer.Option("--image", metavar="IMAGE", help="Service image.")
    ] = None,
    args: Annotated[
        str | None, typer.Option("--args", metavar="COMMAND", help="Service command args.")
    ] = None,
    entrypoint: Annotated[
        str | None, typer.Option("--entrypoint", metavar="CMD", help="Override entrypoint.")
    ] = None,
    workdir: Annotated[
        str | None, typer.Option("-w", "--workdir", metavar="DIR", help="Working directory.")
    ] = None,
    user: Annotated[
        str | None, typer.Option("-u", "--user", metavar="USER", help="Username or UID[:GID].")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", metavar="NAME", help="Container hostname.")
    ] = None,
    env_add: Annotated[
        list[str] | None,
        typer.Option("--env-add", metavar="KEY=VALUE", help="Add or update a variable."),
    ] = None,
    env_rm: Annotated[
        list[str] | None, typer.Option("--env-rm", metavar="KEY", help="Remove a variable.")
    ] = None,
    replicas: Annotated[
        str | None, typer.Option("--replicas", metavar="N", help="Number of tasks.")
    ] = None,
    label_add: Annotated[
        list[str] | None,
        typer.Option("--label-add", metavar="K=V", help="Add or update a service label."),
    ] = None,
    label_rm: Annotated[
        list[str] | None,
        typer.Option("--label-rm", metavar="KEY", help="Remove a service label."),
    ] = None,
    container_label_add: Annotated[
        list[str] | None,
        typer.Option("--container-label-add", metavar="K=V", help="Add a container label."),
    ] = None,
    container_label_rm: Annotated[
        list[str] | None,
        typer.Option("--container-label-rm", metavar="KEY", help="Remove a container label."),
    ] = None,
    publish_add: Annotated[
        list[str] | None,
        typer.Option("--publish-add", metavar="PORT", help="Add or update a published port."),
    ] = None,
    publish_rm: Annotated[
        list[str] | None,
        typer.Option(
            "--publish-rm", metavar="PORT", help="Remove a published port by TARGET[/PROTOCOL]."
        ),
    ] = None,
    network_add: Annotated[
        list[str] | None,
        typer.Option(
            "--network-add",
            metavar="NETWORK",
            help="Add a network: NAME or name=NAME,alias=ALIAS (a rolling update).",
        ),
    ] = None,
    network_rm: Annotated[
        list[str] | None,
        typer.Option("--network-rm", metavar="NETWORK", help="Remove a network."),
    ] = None,
    endpoint_mode: EndpointModeOpt = None,
    restart_condition: Annotated[
        str | None,
        typer.Option("--restart-condition", metavar="COND", help="none, on-failure or any."),
    ] = None,
    restart_delay: Annotated[
        str | None,
        typer.Option("--restart-delay", metavar="DURATION", help="Delay between restarts."),
    ] = None,
    restart_max_attempts: Annotated[
        str | None,
        typer.Option("--restart-max-attempts", metavar="N", help="Maximum restarts (0: any)."),
    ] = None,
    restart_window: Annotated[
        str | None,
        typer.Option("--restart-window", metavar="DURATION", help="Window of the attempts."),
    ] = None,
    stop_grace_period: Annotated[
        str | None,
        typer.Option("--stop-grace-period", metavar="DURATION", help="Wait before killing."),
    ] = None,
    constraint_add: Annotated[
        list[str] | None,
        typer.Option("--constraint-add", metavar="EXPR", help="Add a placement constraint."),
    ] = None,
    constraint_rm: Annotated[
        list[str] | None,
        typer.Option("--constraint-rm", metavar="EXPR", help="Remove a placement constraint."),
    ] = None,
    placement_pref_add: Annotated[
        list[str] | None,
        typer.Option(
            "--placement-pref-add",
            metavar="PREF",
            help="Add a placement preference spread=node.labels.KEY (as the last level).",
        ),
    ] = None,
    placement_pref_rm: Annotated[
        list[str] | None,
        typer.Option("--placement-pref-rm", metavar="PREF", help="Remove a placement preference."),
    ] = None,
    reserve_cpu: ReserveCpuOpt = None,
    reserve_memory: ReserveMemoryOpt = None,
    limit_cpu: LimitCpuOpt = None,
    limit_memory: LimitMemoryOpt = None,
    replicas_max_per_node: MaxReplicasOpt = None,
    max_concurrent: MaxConcurrentOpt = None,
    placement_strategy: StrategyOpt = None,
    platform_add: Annotated[
        list[str] | None,
        typer.Option(
            "--platform-add",
            metavar="OS[/ARCH]",
            help="(swarmlet extension) Add a platform the tasks may run on.",
        ),
    ] = None,
    platform_rm: Annotated[
        list[str] | None,
        typer.Option(
            "--platform-rm", metavar="OS[/ARCH]", help="(swarmlet extension) Remove a platform."
        ),
    ] = None,
    update_parallelism: UpdateParallelismOpt = None,
    update_delay: UpdateDelayOpt = None,
    update_failure_action: UpdateFailureActionOpt = None,
    update_monitor: UpdateMonitorOpt = None,
    update_max_failure_ratio: UpdateMaxFailureRatioOpt = None,
    update_order: UpdateOrderOpt = None,
    rollback_parallelism: RollbackParallelismOpt = None,
    rollback_delay: RollbackDelayOpt = None,
    rollback_failure_action: RollbackFailureActionOpt = None,
    rollback_monitor: RollbackMonitorOpt = None,
    rollback_max_failure_ratio: RollbackMaxFailureRatioOpt = None,
    rollback_order: RollbackOrderOpt = None,
    health_cmd: HealthCmdOpt = None,
    health_interval: HealthIntervalOpt = None,
    health_timeout: HealthTimeoutOpt = None,
    health_retries: HealthRetriesOpt = None,
    health_start_period: HealthStartPeriodOpt = None,
    no_healthcheck: NoHealthcheckOpt = False,
    no_resolve_image: NoResolveImageOpt = False,
    dry_run: DryRunOpt = False,
    fmt: PreviewFormatOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redeploy the tasks even if nothing changed.")
    ] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Roll back to the previous specification.")
    ] = False,
    detach: DetachOpt = False,
    quiet: ProgressQuietOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Update a service."""
    opts = UpdateOptions(
        image=image,
        args=cli.optional_flag(parse_command, args, "--args"),
        entrypoint=cli.optional_flag(parse_command, entrypoint, "--entrypoint"),
        workdir=workdir,
        user=user,
        hostname=hostname,
        env_add=cli.flag_values(parse_env, env_add, "--env-add"),
        env_rm=cli.flag_values(parse_env_key, env_rm, "--env-rm"),
        replicas=cli.optional_flag(parse_replicas, replicas, "--replicas"),
        label_add=dict(cli.flag_values(parse_label, label_add, "--label-add")),
        label_rm=cli.flag_values(parse_label_key, label_rm, "--label-rm"),
        container_label_add=dict(
            cli.flag_values(parse_label, container_label_add, "--container-label-add")
        ),
        container_label_rm=cli.flag_values(
            parse_label_key, container_label_rm, "--container-label-rm"
        ),
        publish_add=[
            p for ps in cli.flag_values(parse_publish, publish_add, "--publish-add") for p in ps
        ],
        publish_rm=cli.flag_values(parse_port_ref, publish_rm, "--publish-rm"),
        network_add=cli.flag_values(parse_network, network_add, "--network-add"),
        network_rm=[n.strip() for n in network_rm or ()],
        endpoint_mode=cli.optional_flag(parse_endpoint_mode, endpoint_mode, "--endpoint-mode"),
        restart_condition=cli.optional_flag(
            parse_restart_condition, restart_condition, "--restart-condition"
        ),
        restart_delay=cli.optional_flag(parse_duration_value, restart_delay, "--restart-delay"),
        restart_max_attempts=cli.optional_flag(
            parse_restart_attempts, restart_max_attempts, "--restart-max-attempts"
        ),
        restart_window=cli.optional_flag(parse_duration_value, restart_window, "--restart-window"),
        stop_grace_period=cli.optional_flag(
            parse_duration_value, stop_grace_period, "--stop-grace-period"
        ),
        constraint_add=cli.flag_values(parse_constraint, constraint_add, "--constraint-add"),
        constraint_rm=cli.flag_values(parse_constraint, constraint_rm, "--constraint-rm"),
        placement_pref_add=cli.flag_values(
            parse_placement_pref, placement_pref_add, "--placement-pref-add"
        ),
        placement_pref_rm=cli.flag_values(
            parse_placement_pref, placement_pref_rm, "--placement-pref-rm"
        ),
        resources=Resources.from_flags(reserve_cpu, reserve_memory, limit_cpu, limit_memory),
        max_replicas=cli.optional_flag(
            parse_max_replicas, replicas_max_per_node, "--replicas-max-per-node"
        ),
        strategy=cli.optional_flag(
            parse_placement_strategy, placement_strategy, "--placement-strategy"
        ),
        platform_add=cli.flag_values(parse_platform, platform_add, "--platform-add"),
        platform_rm=cli.flag_values(parse_platform, platform_rm, "--platform-rm"),
        max_concurrent=cli.optional_flag(parse_max_concurrent, max_concurrent, "--max-concurrent"),
        update_config=UpdateConfigOptions.from_flags(
            "update",
            update_parallelism,
            update_delay,
            update_failure_action,
            update_monitor,
            update_max_failure_ratio,
            update_order,
        ),
        rollback_config=UpdateConfigOptions.from_flags(
            "rollback",
            rollback_parallelism,
            rollback_delay,
            rollback_failure_action,
            rollback_monitor,
            rollback_max_failure_ratio,
            rollback_order,
        ),
        health=HealthOptions.from_flags(
            health_cmd,
            health_interval,
            health_timeout,
            health_retries,
            health_start_period,
            no_healthcheck,
        ),
        force=force,
    )
    if rollback and (opts.changes_spec() or force):
        raise typer.BadParameter(
            "--rollback cannot be combined with flags that change the service",
            param_hint="'--rollback'",
        )
    out_format = _preview_format(fmt, dry_run)
    wait = _timeout(timeout)
    client = cli.get_client(ctx)
    service = client.get_service(service_ref)
    resolve_network_refs(opts, lambda ref: client.get_network(ref).id)
    if (
        opts.image is not None
        and opts.image != service.spec.task.container.image
        and not (opts.platform_add or opts.platform_rm or no_resolve_image or rollback)
    ):
        opts.image_platforms = image_platforms(opts.image, debug=cli.settings(ctx).debug)
    if dry_run:
        _preview_update(client, service, opts, rollback=rollback, fmt=out_format)
        return
    if rollback:
        updated = _rollback(client, service)
    else:
        spec = apply_update(service.spec, opts, service.spec.annotations.name or service_ref)
        updated = client.update_service(service.id, service.meta.version, spec)
    typer.echo(service_ref)
    if not detach:
        _follow(ctx, updated if updated.id else service, timeout=wait, quiet=quiet)


def _check_previous_spec(service: objects_pb2.Service) -> None:
    if not service.HasField("previous_spec"):
        raise SwarmctlError(
            f"service {service.spec.annotations.name or service.id} does not have a previous spec"
        )


def _rollback(client: ControlClient, service: objects_pb2.Service) -> objects_pb2.Service:
    _check_previous_spec(service)
    return client.update_service(service.id, service.meta.version, service.spec, rollback=True)


def _preview_update(
    client: ControlClient,
    service: objects_pb2.Service,
    opts: UpdateOptions,
    *,
    rollback: bool,
    fmt: OutputFormat,
) -> None:
    """`service update --dry-run`: where the updated (or rolled back) service's tasks go."""
    if rollback:
        _check_previous_spec(service)
        spec = service.spec
    else:
        spec = apply_update(service.spec, opts, service.spec.annotations.name or service.id)
    preview = client.preview_update(service.id, service.meta.version, spec, rollback=rollback)
    print_preview(preview, fmt)


@app.command("rollback")
def rollback_service(
    ctx: typer.Context,
    *,
    service_ref: Annotated[str, typer.Argument(metavar="SERVICE", help="The service.")],
    detach: DetachOpt = False,
    quiet: ProgressQuietOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Revert a service to its previous specification."""
    wait = _timeout(timeout)
    client = cli.get_client(ctx)
    service = client.get_service(service_ref)
    updated = _rollback(client, service)
    typer.echo(service_ref)
    if not detach:
        _follow(ctx, updated if updated.id else service, timeout=wait, quiet=quiet)


@app.command("rebalance")
def rebalance(
    ctx: typer.Context,
    *,
    services: Annotated[list[str], typer.Argument(metavar="SERVICE", help="Services.")],
    detach: Annotated[
        bool,
        typer.Option("-d", "--detach", help="Exit immediately instead of waiting for the moves."),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("-q", "--quiet", help="Do not show the tasks per node.")
    ] = False,
    timeout: Annotated[
        str,
        typer.Option(
            "--timeout", metavar="DURATION", help="How long to wait for the rebalance to finish."
        ),
    ] = DEFAULT_TIMEOUT,
) -> None:
    """Even out the tasks of replicated services over their nodes (swarmlet extension).

    Docker Swarm leaves running tasks where they are when nodes join (moby#24103). This
    asks the manager to move them, one at a time and start-first so that none is lost,
    until each service is spread as the scheduler would place it now; then it shows how
    many tasks each node had before and has after.
    """
    wait = _timeout(timeout)
    client = cli.get_client(ctx)

    def request(ref: str) -> Requested:
        requested = request_rebalance(client, ref)
        typer.echo(ref)
        return requested

    requested, ok = cli.fetch_each(services, request)
    if detach:
        if not ok:
            raise typer.Exit(1)
        return
    for req in requested:
        try:
            done = wait_for_rebalance(client, req, timeout=wait)
            if not quiet:
                after = tasks_per_node(service_tasks(client, done.id))
                if len(services) > 1:
                    typer.echo(f"{req.name}:")
                print_table(COUNT_HEADERS, count_rows(req.before, after, client.list_nodes()))
        except ManagerUnreachable:
            raise
        except SwarmctlError as exc:
            cli.report_error(exc.message)
            ok = False
    if not ok:
        raise typer.Exit(1)


@app.command("rm")
def remove(
    ctx: typer.Context,
    *,
    services: Annotated[list[str], typer.Argument(metavar="SERVICE", help="Services.")],
) -> None:
    """Remove one or more services."""
    client = cli.get_client(ctx)

    def remove_one(ref: str) -> str:
        client.remove_service(ref)
        typer.echo(ref)
        return ref

    _, ok = cli.fetch_each(services, remove_one)
    if not ok:
        raise typer.Exit(1)


app.command("remove", hidden=True)(remove)
app.command("logs")(service_logs)
