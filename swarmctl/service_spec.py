"""ServiceSpecs from `service create` flags, and the edits of `service update`.

Pure functions over parsed values (see swarmctl.parsing), so the spec a command sends
can be tested without a manager.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.duration_pb2 import Duration

from common.api import specs_pb2, types_pb2
from common.timeutil import duration
from swarmctl.errors import SwarmctlError
from swarmctl.parsing import env_key

DEFAULT_RESTART_DELAY = 5.0

PortKey = tuple[int, types_pb2.PortProtocol.ValueType]


@dataclass
class CreateOptions:
    """What `service create` was asked for, parsed."""

    image: str
    args: list[str] = field(default_factory=list)
    name: str = ""
    global_mode: bool = False
    replicas: int = 1
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    container_labels: dict[str, str] = field(default_factory=dict)
    ports: list[types_pb2.PortConfig] = field(default_factory=list)
    restart_condition: specs_pb2.RestartCondition.ValueType = specs_pb2.RESTART_CONDITION_ANY
    restart_delay: Duration = field(default_factory=lambda: duration(DEFAULT_RESTART_DELAY))
    restart_max_attempts: int = 0
    restart_window: Duration | None = None
    stop_grace_period: Duration | None = None
    entrypoint: list[str] | None = None
    workdir: str = ""
    user: str = ""
    hostname: str = ""


def build_spec(opts: CreateOptions) -> specs_pb2.ServiceSpec:
    """The ServiceSpec to create: explicit restart policy and mode, host-mode ports."""
    container = specs_pb2.ContainerSpec(
        image=opts.image,
        args=opts.args,
        env=opts.env,
        labels=opts.container_labels,
        dir=opts.workdir,
        user=opts.user,
        hostname=opts.hostname,
    )
    if opts.entrypoint:
        container.command.extend(opts.entrypoint)
    if opts.stop_grace_period is not None:
        container.stop_grace_period.CopyFrom(opts.stop_grace_period)
    restart = specs_pb2.RestartPolicy(
        condition=opts.restart_condition,
        delay=opts.restart_delay,
        max_attempts=opts.restart_max_attempts,
    )
    if opts.restart_window is not None:
        restart.window.CopyFrom(opts.restart_window)
    spec = specs_pb2.ServiceSpec(
        annotations=types_pb2.Annotations(name=opts.name, labels=opts.labels),
        task=specs_pb2.TaskSpec(container=container, restart=restart),
        endpoint=specs_pb2.EndpointSpec(ports=opts.ports),
    )
    if opts.global_mode:
        # `global` is a Python keyword, so the generated field is only reachable by name.
        getattr(spec, "global").SetInParent()
    else:
        spec.replicated.replicas = opts.replicas
    return spec


@dataclass
class UpdateOptions:
    """What `service update` was asked to change; None/empty leaves a field as it is."""

    image: str | None = None
    args: list[str] | None = None
    entrypoint: list[str] | None = None
    workdir: str | None = None
    user: str | None = None
    hostname: str | None = None
    env_add: list[str] = field(default_factory=list)
    env_rm: list[str] = field(default_factory=list)
    replicas: int | None = None
    label_add: dict[str, str] = field(default_factory=dict)
    label_rm: list[str] = field(default_factory=list)
    container_label_add: dict[str, str] = field(default_factory=dict)
    container_label_rm: list[str] = field(default_factory=list)
    publish_add: list[types_pb2.PortConfig] = field(default_factory=list)
    publish_rm: list[PortKey] = field(default_factory=list)
    restart_condition: specs_pb2.RestartCondition.ValueType | None = None
    restart_delay: Duration | None = None
    restart_max_attempts: int | None = None
    restart_window: Duration | None = None
    stop_grace_period: Duration | None = None
    force: bool = False

    def changes_spec(self) -> bool:
        """Whether any option edits the spec (--force aside)."""
        return any(
            value is not None and value is not False and value not in ([], {})
            for name, value in vars(self).items()
            if name != "force"
        )


def set_replicas(spec: specs_pb2.ServiceSpec, replicas: int, service_name: str) -> None:
    if spec.WhichOneof("mode") != "replicated":
        raise SwarmctlError(
            f"service {service_name} is not in replicated mode: replicas can only be set "
            "on a replicated service"
        )
    spec.replicated.replicas = replicas


def _update_env(env: list[str], add: list[str], remove: list[str]) -> list[str]:
    """Docker's order: --env-add (replacing a variable in place), then --env-rm."""
    out = list(env)
    for entry in add:
        key = env_key(entry)
        index = next((i for i, e in enumerate(out) if env_key(e) == key), None)
        if index is None:
            out.append(entry)
        else:
            out[index] = entry
    gone = set(remove)
    return [e for e in out if env_key(e) not in gone]


def _update_labels(labels: dict[str, str], add: dict[str, str], remove: list[str]) -> None:
    """Docker's order: --label-rm, then --label-add."""
    for key in remove:
        labels.pop(key, None)
    labels.update(add)


def _update_ports(
    ports: list[types_pb2.PortConfig],
    add: list[types_pb2.PortConfig],
    remove: list[PortKey],
) -> list[types_pb2.PortConfig]:
    """--publish-rm by target port and protocol, then --publish-add.

    An added port replaces one published on the same node port and protocol.
    """
    gone = set(remove)
    out = [p for p in ports if (p.target_port, p.protocol) not in gone]
    for port in add:
        if any(p == port for p in out):
            continue
        if port.published_port:
            out = [
                p
                for p in out
                if (p.published_port, p.protocol) != (port.published_port, port.protocol)
            ]
        out.append(port)
    return out


def apply_update(
    spec: specs_pb2.ServiceSpec, opts: UpdateOptions, service_name: str = ""
) -> specs_pb2.ServiceSpec:
    """A copy of `spec` with the update applied."""
    new = specs_pb2.ServiceSpec()
    new.CopyFrom(spec)
    name = service_name or spec.annotations.name
    container = new.task.container
    if opts.image is not None:
        container.image = opts.image
    if opts.args is not None:
        del container.args[:]
        container.args.extend(opts.args)
    if opts.entrypoint is not None:
        del container.command[:]
        container.command.extend(opts.entrypoint)
    if opts.workdir is not None:
        container.dir = opts.workdir
    if opts.user is not None:
        container.user = opts.user
    if opts.hostname is not None:
        container.hostname = opts.hostname
    if opts.stop_grace_period is not None:
        container.stop_grace_period.CopyFrom(opts.stop_grace_period)
    if opts.env_add or opts.env_rm:
        env = _update_env(list(container.env), opts.env_add, opts.env_rm)
        del container.env[:]
        container.env.extend(env)
    if opts.container_label_add or opts.container_label_rm:
        labels = dict(container.labels)
        _update_labels(labels, opts.container_label_add, opts.container_label_rm)
        container.labels.clear()
        container.labels.update(labels)
    if opts.label_add or opts.label_rm:
        labels = dict(new.annotations.labels)
        _update_labels(labels, opts.label_add, opts.label_rm)
        new.annotations.labels.clear()
        new.annotations.labels.update(labels)
    if opts.publish_add or opts.publish_rm:
        ports = _update_ports(list(new.endpoint.ports), opts.publish_add, opts.publish_rm)
        del new.endpoint.ports[:]
        new.endpoint.ports.extend(ports)
    if opts.replicas is not None:
        set_replicas(new, opts.replicas, name)
    restart = new.task.restart
    if opts.restart_condition is not None:
        restart.condition = opts.restart_condition
    if opts.restart_delay is not None:
        restart.delay.CopyFrom(opts.restart_delay)
    if opts.restart_max_attempts is not None:
        restart.max_attempts = opts.restart_max_attempts
    if opts.restart_window is not None:
        restart.window.CopyFrom(opts.restart_window)
    if opts.force:
        new.task.force_update += 1
    return new
