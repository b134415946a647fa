"""`swarmctl service create|ls|ps|inspect|scale|update|rollback|rm`, as `docker service`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated

import typer

from common.api import control_pb2, objects_pb2, specs_pb2
from common.timeutil import parse_duration
from swarmctl import cli, pretty
from swarmctl.client import ControlClient
from swarmctl.errors import ManagerUnreachable, SwarmctlError
from swarmctl.output import (
    format_ports,
    natural_key,
    print_json,
    print_table,
    short_image,
    truncate_id,
)
from swarmctl.parsing import (
    parse_command,
    parse_count,
    parse_duration_value,
    parse_env,
    parse_env_key,
    parse_label,
    parse_label_key,
    parse_mode,
    parse_port_ref,
    parse_publish,
    parse_replicas,
    parse_restart_condition,
    parse_scale,
)
from swarmctl.progress import wait_for_convergence
from swarmctl.service_spec import (
    CreateOptions,
    UpdateOptions,
    apply_update,
    build_spec,
    set_replicas,
)
from swarmctl.task import (
    FilterOpt,
    FormatOpt,
    NoTruncOpt,
    print_tasks,
    task_filters,
)

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


def service_mode(spec: specs_pb2.ServiceSpec) -> str:
    return _MODE_NAMES.get(spec.WhichOneof("mode") or "", "")


def replicas_text(
    service: objects_pb2.Service, counts: control_pb2.ServiceStatusCounts | None
) -> str:
    """`3/3` (running/desired), as `docker service ls` shows it."""
    spec = service.spec
    mode = spec.WhichOneof("mode")
    running = counts.running if counts else 0
    desired = counts.desired if counts else 0
    if counts is None and mode == "replicated":
        desired = spec.replicated.replicas
    text = f"{running}/{desired}"
    if mode == "replicated_job":
        completed = counts.completed if counts else 0
        text += f" ({completed}/{spec.replicated_job.total_completions} completed)"
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
                format_ports(svc.spec.endpoint.ports),
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
        str, typer.Option("--mode", metavar="MODE", help="replicated or global.")
    ] = "replicated",
    replicas: Annotated[
        str | None, typer.Option("--replicas", metavar="N", help="Number of tasks (default 1).")
    ] = None,
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
            help="Publish a port on the task's node: [PUBLISHED:]TARGET[/PROTOCOL] or "
            "mode=host,target=80,published=8080,protocol=tcp.",
        ),
    ] = None,
    restart_condition: Annotated[
        str,
        typer.Option("--restart-condition", metavar="COND", help="none, on-failure or any."),
    ] = "any",
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
    detach: DetachOpt = False,
    quiet: ProgressQuietOpt = False,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
) -> None:
    """Create a new service.

    Everything after IMAGE is the container's command and arguments:
    `swarmctl service create busybox sh -c 'echo hi'`.
    """
    global_mode = cli.flag_value(parse_mode, mode, "--mode")
    if global_mode and replicas is not None:
        raise typer.BadParameter(
            "replicas can only be used with replicated mode", param_hint="'--replicas'"
        )
    opts = CreateOptions(
        image=image,
        args=list(command or ()),
        name=name,
        global_mode=global_mode,
        replicas=1 if replicas is None else cli.flag_value(parse_replicas, replicas, "--replicas"),
        env=cli.flag_values(parse_env, env, "--env"),
        labels=dict(cli.flag_values(parse_label, label, "--label")),
        container_labels=dict(cli.flag_values(parse_label, container_label, "--container-label")),
        ports=[p for ps in cli.flag_values(parse_publish, publish, "--publish") for p in ps],
        restart_condition=cli.flag_value(
            parse_restart_condition, restart_condition, "--restart-condition"
        ),
        restart_delay=cli.flag_value(parse_duration_value, restart_delay, "--restart-delay"),
        restart_max_attempts=0
        if restart_max_attempts is None
        else cli.flag_value(_attempts, restart_max_attempts, "--restart-max-attempts"),
        restart_window=None
        if restart_window is None
        else cli.flag_value(parse_duration_value, restart_window, "--restart-window"),
        stop_grace_period=None
        if stop_grace_period is None
        else cli.flag_value(parse_duration_value, stop_grace_period, "--stop-grace-period"),
        entrypoint=None
        if entrypoint is None
        else cli.flag_value(parse_command, entrypoint, "--entrypoint"),
        workdir=workdir,
        user=user,
        hostname=hostname,
    )
    wait = _timeout(timeout)
    service = cli.get_client(ctx).create_service(build_spec(opts))
    typer.echo(service.id)
    if not detach:
        _follow(ctx, service, timeout=wait, quiet=quiet)


def _attempts(text: str) -> int:
    return parse_count(text, "restart max attempts")


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
    modes = set(grouped.get("mode", []))
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
    found, ok = cli.fetch_each(services, cli.get_client(ctx).get_service)
    if pretty_:
        typer.echo("\n\n".join(pretty.service(s) for s in found))
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
        args=None if args is None else cli.flag_value(parse_command, args, "--args"),
        entrypoint=None
        if entrypoint is None
        else cli.flag_value(parse_command, entrypoint, "--entrypoint"),
        workdir=workdir,
        user=user,
        hostname=hostname,
        env_add=cli.flag_values(parse_env, env_add, "--env-add"),
        env_rm=cli.flag_values(parse_env_key, env_rm, "--env-rm"),
        replicas=None
        if replicas is None
        else cli.flag_value(parse_replicas, replicas, "--replicas"),
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
        restart_condition=None
        if restart_condition is None
        else cli.flag_value(parse_restart_condition, restart_condition, "--restart-condition"),
        restart_delay=None
        if restart_delay is None
        else cli.flag_value(parse_duration_value, restart_delay, "--restart-delay"),
        restart_max_attempts=None
        if restart_max_attempts is None
        else cli.flag_value(_attempts, restart_max_attempts, "--restart-max-attempts"),
        restart_window=None
        if restart_window is None
        else cli.flag_value(parse_duration_value, restart_window, "--restart-window"),
        stop_grace_period=None
        if stop_grace_period is None
        else cli.flag_value(parse_duration_value, stop_grace_period, "--stop-grace-period"),
        force=force,
    )
    if rollback and (opts.changes_spec() or force):
        raise typer.BadParameter(
            "--rollback cannot be combined with flags that change the service",
            param_hint="'--rollback'",
        )
    wait = _timeout(timeout)
    client = cli.get_client(ctx)
    service = client.get_service(service_ref)
    if rollback:
        updated = _rollback(client, service)
    else:
        spec = apply_update(service.spec, opts, service.spec.annotations.name or service_ref)
        updated = client.update_service(service.id, service.meta.version, spec)
    typer.echo(service_ref)
    if not detach:
        _follow(ctx, updated if updated.id else service, timeout=wait, quiet=quiet)


def _rollback(client: ControlClient, service: objects_pb2.Service) -> objects_pb2.Service:
    if not service.HasField("previous_spec"):
        raise SwarmctlError(
            f"service {service.spec.annotations.name or service.id} does not have a previous spec"
        )
    return client.update_service(service.id, service.meta.version, service.spec, rollback=True)


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
