"""ServiceSpecs from `service create` flags, and the edits of `service update`.

The options of both commands are dataclasses of parsed values. The groups of flags the
two commands share (resources, --update-*/--rollback-*, --health-*) are built by one
`from_flags` constructor each, which reports a bad value as a usage error naming its
flag. `build_spec` and `apply_update` are pure functions over the options, so the spec a
command sends can be tested without a manager.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import typer
from google.protobuf.duration_pb2 import Duration

from common.api import specs_pb2, types_pb2
from common.defaults import (
    RESTART_DELAY,
    UPDATE_DELAY,
    UPDATE_MONITOR,
    UPDATE_PARALLELISM,
    restart_condition,
)
from common.timeutil import duration
from swarmctl.cli import optional_flag
from swarmctl.errors import SwarmctlError
from swarmctl.parsing import (
    env_key,
    parse_duration_value,
    parse_failure_action,
    parse_failure_ratio,
    parse_health_retries,
    parse_memory_bytes,
    parse_nano_cpus,
    parse_parallelism,
    parse_rollback_failure_action,
    parse_update_order,
)

PortKey = tuple[int, types_pb2.PortProtocol.ValueType]


@dataclass
class Resources:
    """`--reserve-*` and `--limit-*`: CPU in nano_cpus, memory in bytes; None is not given."""

    reserve_cpu: int | None = None
    reserve_memory: int | None = None
    limit_cpu: int | None = None
    limit_memory: int | None = None

    @classmethod
    def from_flags(
        cls,
        reserve_cpu: str | None,
        reserve_memory: str | None,
        limit_cpu: str | None,
        limit_memory: str | None,
    ) -> Resources:
        return cls(
            reserve_cpu=optional_flag(parse_nano_cpus, reserve_cpu, "--reserve-cpu"),
            reserve_memory=optional_flag(parse_memory_bytes, reserve_memory, "--reserve-memory"),
            limit_cpu=optional_flag(parse_nano_cpus, limit_cpu, "--limit-cpu"),
            limit_memory=optional_flag(parse_memory_bytes, limit_memory, "--limit-memory"),
        )

    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())

    def apply(self, resources: types_pb2.ResourceRequirements) -> None:
        """Set the given values; the others stay as they are."""
        if self.reserve_cpu is not None:
            resources.reservations.nano_cpus = self.reserve_cpu
        if self.reserve_memory is not None:
            resources.reservations.memory_bytes = self.reserve_memory
        if self.limit_cpu is not None:
            resources.limits.nano_cpus = self.limit_cpu
        if self.limit_memory is not None:
            resources.limits.memory_bytes = self.limit_memory


@dataclass
class UpdateConfigOptions:
    """`--update-*` (or `--rollback-*`): None is not given."""

    parallelism: int | None = None
    delay: Duration | None = None
    failure_action: specs_pb2.UpdateFailureAction.ValueType | None = None
    monitor: Duration | None = None
    max_failure_ratio: float | None = None
    order: specs_pb2.UpdateOrder.ValueType | None = None

    @classmethod
    def from_flags(
        cls,
        prefix: str,
        parallelism: str | None,
        delay: str | None,
        failure_action: str | None,
        monitor: str | None,
        max_failure_ratio: str | None,
        order: str | None,
    ) -> UpdateConfigOptions:
        """The `--update-*` (prefix "update") or `--rollback-*` (prefix "rollback") flags."""
        action = parse_failure_action if prefix == "update" else parse_rollback_failure_action
        return cls(
            parallelism=optional_flag(parse_parallelism, parallelism, f"--{prefix}-parallelism"),
            delay=optional_flag(parse_duration_value, delay, f"--{prefix}-delay"),
            failure_action=optional_flag(action, failure_action, f"--{prefix}-failure-action"),
            monitor=optional_flag(parse_duration_value, monitor, f"--{prefix}-monitor"),
            max_failure_ratio=optional_flag(
                parse_failure_ratio, max_failure_ratio, f"--{prefix}-max-failure-ratio"
            ),
            order=optional_flag(parse_update_order, order, f"--{prefix}-order"),
        )

    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())

    def apply(self, cfg: specs_pb2.UpdateConfig) -> None:
        """Set the given values; the others stay as they are."""
        if self.parallelism is not None:
            cfg.parallelism = self.parallelism
        if self.delay is not None:
            cfg.delay.CopyFrom(self.delay)
        if self.failure_action is not None:
            cfg.failure_action = self.failure_action
        if self.monitor is not None:
            cfg.monitor.CopyFrom(self.monitor)
        if self.max_failure_ratio is not None:
            cfg.max_failure_ratio = self.max_failure_ratio
        if self.order is not None:
            cfg.order = self.order


def default_update_config() -> specs_pb2.UpdateConfig:
    """Docker's: one task at a time, no delay, pause on failure, 5s monitor, stop-first."""
    return specs_pb2.UpdateConfig(
        parallelism=UPDATE_PARALLELISM,
        delay=duration(UPDATE_DELAY),
        failure_action=specs_pb2.UPDATE_FAILURE_ACTION_PAUSE,
        monitor=duration(UPDATE_MONITOR),
        max_failure_ratio=0.0,
        order=specs_pb2.UPDATE_ORDER_STOP_FIRST,
    )


HEALTH_NONE = "NONE"
HEALTH_SHELL = "CMD-SHELL"


@dataclass
class HealthOptions:
    """`--health-*` and `--no-healthcheck`: None (False) is not given."""

    cmd: str | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    retries: int | None = None
    start_period: Duration | None = None
    disable: bool = False

    @classmethod
    def from_flags(
        cls,
        cmd: str | None,
        interval: str | None,
        timeout: str | None,
        retries: str | None,
        start_period: str | None,
        disable: bool,
    ) -> HealthOptions:
        """The `--health-*` flags and `--no-healthcheck`, which go with none of them."""
        opts = cls(
            cmd=cmd,
            interval=optional_flag(parse_duration_value, interval, "--health-interval"),
            timeout=optional_flag(parse_duration_value, timeout, "--health-timeout"),
            retries=optional_flag(parse_health_retries, retries, "--health-retries"),
            start_period=optional_flag(parse_duration_value, start_period, "--health-start-period"),
            disable=disable,
        )
        conflict = opts.conflict()
        if conflict is not None:
            raise typer.BadParameter(conflict, param_hint="'--no-healthcheck'")
        return opts

    def settings_given(self) -> bool:
        return any(
            v is not None
            for v in (self.cmd, self.interval, self.timeout, self.retries, self.start_period)
        )

    def given(self) -> bool:
        return self.disable or self.settings_given()

    def conflict(self) -> str | None:
        """Docker's rule: --no-healthcheck goes with no --health-* flag."""
        if self.disable and self.settings_given():
            return "--no-healthcheck conflicts with --health-* options"
        return None

    def apply(self, container: specs_pb2.ContainerSpec) -> None:
        """Edit the container's health check as Docker's `service update` does.

        --no-healthcheck replaces it with ["NONE"]; otherwise the given settings change
        the existing check (a disabled one becomes the image's again, unless a command
        is given), and an empty --health-cmd goes back to the image's command.
        """
        if not self.given():
            return
        conflict = self.conflict()
        if conflict is not None:
            raise SwarmctlError(conflict)
        if self.disable:
            container.healthcheck.CopyFrom(specs_pb2.HealthConfig(test=[HEALTH_NONE]))
            return
        health = container.healthcheck
        health.SetInParent()
        if list(health.test[:1]) == [HEALTH_NONE]:
            del health.test[:]
        if self.interval is not None:
            health.interval.CopyFrom(self.interval)
        if self.timeout is not None:
            health.timeout.CopyFrom(self.timeout)
        if self.start_period is not None:
            health.start_period.CopyFrom(self.start_period)
        if self.retries is not None:
            health.retries = self.retries
        if self.cmd is not None:
            del health.test[:]
            if self.cmd:
                health.test.extend([HEALTH_SHELL, self.cmd])


@dataclass
class CreateOptions:
    """What `service create` was asked for, parsed."""

    image: str
    args: list[str] = field(default_factory=list)
    name: str = ""
    # The ServiceSpec mode field: replicated, global, replicated_job or global_job.
    mode: str = "replicated"
    # Replicas, or a replicated job's total completions; None is the default (1).
    replicas: int | None = None
    # A replicated job's concurrency; None is the default (its total completions).
    max_concurrent: int | None = None
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    container_labels: dict[str, str] = field(default_factory=dict)
    ports: list[types_pb2.PortConfig] = field(default_factory=list)
    # --network: targets as typed (names or ids); the manager resolves them to ids.
    networks: list[specs_pb2.NetworkAttachmentConfig] = field(default_factory=list)
    # --endpoint-mode; None is vip.
    endpoint_mode: specs_pb2.ResolutionMode.ValueType | None = None
    # None is the mode's default: any for services, on-failure for jobs (as Docker).
    restart_condition: specs_pb2.RestartCondition.ValueType | None = None
    restart_delay: Duration = field(default_factory=lambda: duration(RESTART_DELAY))
    restart_max_attempts: int = 0
    restart_window: Duration | None = None
    stop_grace_period: Duration | None = None
    entrypoint: list[str] | None = None
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    constraints: list[str] = field(default_factory=list)
    # Spread descriptors of the placement preferences, in order.
    preferences: list[str] = field(default_factory=list)
    max_replicas: int = 0
    platforms: list[types_pb2.Platform] = field(default_factory=list)
    strategy: specs_pb2.PlacementStrategy.ValueType | None = None
    resources: Resources = field(default_factory=Resources)
    update_config: UpdateConfigOptions = field(default_factory=UpdateConfigOptions)
    rollback_config: UpdateConfigOptions = field(default_factory=UpdateConfigOptions)
    health: HealthOptions = field(default_factory=HealthOptions)


def mode_conflict(
    mode: str, *, replicas: bool, max_concurrent: bool, max_replicas: bool
) -> tuple[str, str] | None:
    """The flag that does not go with `mode` and why (Docker's rules), or None.

    `replicas`, `max_concurrent` and `max_replicas` say whether each flag was given.
    """
    if replicas and mode not in ("replicated", "replicated_job"):
        return "--replicas", "replicas can only be used with replicated or replicated-job mode"
    if max_replicas and mode not in ("replicated", "replicated_job"):
        return (
            "--replicas-max-per-node",
            "replicas-max-per-node can only be used with replicated or replicated-job mode",
        )
    if max_concurrent and mode != "replicated_job":
        return "--max-concurrent", "max-concurrent can only be used with replicated-job mode"
    return None


def _set_mode(spec: specs_pb2.ServiceSpec, opts: CreateOptions) -> None:
    if opts.mode == "replicated":
        spec.replicated.replicas = 1 if opts.replicas is None else opts.replicas
    elif opts.mode == "replicated_job":
        total = 1 if opts.replicas is None else opts.replicas
        spec.replicated_job.total_completions = total
        spec.replicated_job.max_concurrent = (
            total if opts.max_concurrent is None else opts.max_concurrent
        )
    elif opts.mode in ("global", "global_job"):
        # `global` is a Python keyword, so the generated field is only reachable by name.
        getattr(spec, opts.mode).SetInParent()
    else:
        raise SwarmctlError(f"unknown service mode {opts.mode!r}")


def build_spec(opts: CreateOptions) -> specs_pb2.ServiceSpec:
    """The ServiceSpec to create: explicit restart policy, mode and update settings."""
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
        condition=restart_condition(opts.mode)
        if opts.restart_condition is None
        else opts.restart_condition,
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
    spec.task.networks.extend(opts.networks)
    if opts.endpoint_mode is not None:
        spec.endpoint.mode = opts.endpoint_mode
    placement = spec.task.placement
    placement.constraints.extend(opts.constraints)
    for descriptor in opts.preferences:
        placement.preferences.add().spread.spread_descriptor = descriptor
    placement.max_replicas = opts.max_replicas
    placement.platforms.extend(opts.platforms)
    if opts.strategy is not None:
        placement.strategy = opts.strategy
    if opts.resources.given():
        opts.resources.apply(spec.task.resources)
    # Explicit settings, Docker's defaults where not given (an explicit monitor also
    # keeps the manager from reading parallelism 0, "all at once", as unset).
    spec.update.CopyFrom(default_update_config())
    opts.update_config.apply(spec.update)
    spec.rollback.CopyFrom(default_update_config())
    opts.rollback_config.apply(spec.rollback)
    opts.health.apply(spec.task.container)
    _set_mode(spec, opts)
    return spec


# The fields of UpdateOptions that are groups of flags, each with its own given().
_OPTION_GROUPS = ("resources", "update_config", "rollback_config", "health")


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
    # --network-add / --network-rm: the networks' ids once resolve_network_refs has run
    # (stored specs hold ids), as typed before.
    network_add: list[specs_pb2.NetworkAttachmentConfig] = field(default_factory=list)
    network_rm: list[str] = field(default_factory=list)
    endpoint_mode: specs_pb2.ResolutionMode.ValueType | None = None
    restart_condition: specs_pb2.RestartCondition.ValueType | None = None
    restart_delay: Duration | None = None
    restart_max_attempts: int | None = None
    restart_window: Duration | None = None
    stop_grace_period: Duration | None = None
    constraint_add: list[str] = field(default_factory=list)
    constraint_rm: list[str] = field(default_factory=list)
    placement_pref_add: list[str] = field(default_factory=list)
    placement_pref_rm: list[str] = field(default_factory=list)
    resources: Resources = field(default_factory=Resources)
    max_replicas: int | None = None
    strategy: specs_pb2.PlacementStrategy.ValueType | None = None
    platform_add: list[types_pb2.Platform] = field(default_factory=list)
    platform_rm: list[types_pb2.Platform] = field(default_factory=list)
    # The platforms the new image is built for, as its registry says (replace the
    # service's platforms when not empty, as Docker does on an image change).
    image_platforms: list[types_pb2.Platform] = field(default_factory=list)
    max_concurrent: int | None = None
    update_config: UpdateConfigOptions = field(default_factory=UpdateConfigOptions)
    rollback_config: UpdateConfigOptions = field(default_factory=UpdateConfigOptions)
    health: HealthOptions = field(default_factory=HealthOptions)
    force: bool = False
    # Network id -> the name or prefix the user typed for it, for messages.
    network_refs: dict[str, str] = field(default_factory=dict)

    def changes_spec(self) -> bool:
        """Whether any option edits the spec (--force aside)."""
        return any(getattr(self, name).given() for name in _OPTION_GROUPS) or any(
            value is not None and value is not False and value not in ([], {})
            for name, value in vars(self).items()
            if name not in ("force", "network_refs") and name not in _OPTION_GROUPS
        )


def resolve_network_refs(opts: UpdateOptions, network_id: Callable[[str], str]) -> None:
    """Turn the networks of --network-add/--network-rm into ids (`network_id` asks the
    manager, which refuses an unknown one), as Docker's CLI does before it edits the
    spec: a stored spec names its networks by id, so only ids compare."""
    for attachment in opts.network_add:
        typed = attachment.target
        attachment.target = network_id(typed)
        opts.network_refs.setdefault(attachment.target, typed)
    resolved = []
    for typed in opts.network_rm:
        net_id = network_id(typed)
        opts.network_refs.setdefault(net_id, typed)
        resolved.append(net_id)
    opts.network_rm = resolved


def set_replicas(spec: specs_pb2.ServiceSpec, replicas: int, service_name: str) -> None:
    """Replicas of a replicated service, or total completions of a replicated job."""
    mode = spec.WhichOneof("mode") or ""
    if mode == "replicated":
        spec.replicated.replicas = replicas
    elif mode == "replicated_job":
        spec.replicated_job.total_completions = replicas
    else:
        raise SwarmctlError(
            f"service {service_name} is in {mode.replace('_', '-')} mode: replicas can only "
            "be used with replicated or replicated-job mode"
        )


def set_max_concurrent(spec: specs_pb2.ServiceSpec, count: int, service_name: str) -> None:
    mode = spec.WhichOneof("mode") or ""
    if mode != "replicated_job":
        raise SwarmctlError(
            f"service {service_name} is in {mode.replace('_', '-')} mode: max-concurrent can "
            "only be used with replicated-job mode"
        )
    spec.replicated_job.max_concurrent = count


def _update_constraints(constraints: list[str], add: list[str], remove: list[str]) -> list[str]:
    """--constraint-add (skipping one already there), then --constraint-rm (exact text)."""
    out = list(constraints)
    out.extend(c for c in dict.fromkeys(add) if c not in out)
    gone = set(remove)
    return [c for c in out if c not in gone]


def _update_preferences(descriptors: list[str], add: list[str], remove: list[str]) -> list[str]:
    """Docker's order: --placement-pref-rm, then --placement-pref-add appended at the end.

    Order matters (each preference is one level of the spread), so removing and adding
    the same preference moves it last; adding one that is already there does nothing.
    """
    gone = set(remove)
    out = [d for d in descriptors if d not in gone]
    out.extend(d for d in dict.fromkeys(add) if d not in out)
    return out


def _platform_key(platform: types_pb2.Platform) -> tuple[str, str]:
    return platform.os.lower(), platform.architecture.lower()


def _update_platforms(
    platforms: list[types_pb2.Platform],
    add: list[types_pb2.Platform],
    remove: list[types_pb2.Platform],
) -> list[types_pb2.Platform]:
    """--platform-add (skipping one already there), then --platform-rm."""
    out = list(platforms)
    for platform in add:
        if all(_platform_key(p) != _platform_key(platform) for p in out):
            out.append(platform)
    gone = {_platform_key(p) for p in remove}
    return [p for p in out if _platform_key(p) not in gone]


def _apply_placement(task: specs_pb2.TaskSpec, opts: UpdateOptions) -> None:
    placement = task.placement
    if opts.constraint_add or opts.constraint_rm:
        constraints = _update_constraints(
            list(placement.constraints), opts.constraint_add, opts.constraint_rm
        )
        del placement.constraints[:]
        placement.constraints.extend(constraints)
    if opts.placement_pref_add or opts.placement_pref_rm:
        descriptors = _update_preferences(
            [p.spread.spread_descriptor for p in placement.preferences],
            opts.placement_pref_add,
            opts.placement_pref_rm,
        )
        del placement.preferences[:]
        for descriptor in descriptors:
            placement.preferences.add().spread.spread_descriptor = descriptor
    if opts.image_platforms:
        del placement.platforms[:]
        placement.platforms.extend(opts.image_platforms)
    if opts.platform_add or opts.platform_rm:
        platforms = _update_platforms(
            list(placement.platforms), opts.platform_add, opts.platform_rm
        )
        del placement.platforms[:]
        placement.platforms.extend(platforms)
    if opts.max_replicas is not None:
        placement.max_replicas = opts.max_replicas
    if opts.strategy is not None:
        placement.strategy = opts.strategy
    if opts.resources.given():
        opts.resources.apply(task.resources)


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


def _update_networks(
    networks: list[specs_pb2.NetworkAttachmentConfig],
    add: list[specs_pb2.NetworkAttachmentConfig],
    remove: list[str],
    refs: dict[str, str],
) -> list[specs_pb2.NetworkAttachmentConfig]:
    """Docker's order: --network-rm (a network not attached is no error), then
    --network-add, refusing a network the service is attached to already (remove and
    add it in one update to change its aliases)."""
    gone = set(remove)
    out = [n for n in networks if n.target not in gone]
    for attachment in add:
        if any(n.target == attachment.target for n in out):
            typed = refs.get(attachment.target, attachment.target)
            raise SwarmctlError(
                f"service is already attached to network {typed}: to change its aliases, "
                f"give --network-rm {typed} with the --network-add"
            )
        out.append(attachment)
    return out


def apply_update(
    spec: specs_pb2.ServiceSpec, opts: UpdateOptions, service_name: str = ""
) -> specs_pb2.ServiceSpec:
    """A copy of `spec` with the update applied."""
    new = specs_pb2.ServiceSpec()
    new.CopyFrom(spec)
    name = service_name or spec.annotations.name
    _apply_container(new.task.container, opts)
    if opts.label_add or opts.label_rm:
        labels = dict(new.annotations.labels)
        _update_labels(labels, opts.label_add, opts.label_rm)
        new.annotations.labels.clear()
        new.annotations.labels.update(labels)
    if opts.publish_add or opts.publish_rm:
        ports = _update_ports(list(new.endpoint.ports), opts.publish_add, opts.publish_rm)
        del new.endpoint.ports[:]
        new.endpoint.ports.extend(ports)
    if opts.endpoint_mode is not None:
        new.endpoint.mode = opts.endpoint_mode
    if opts.network_add or opts.network_rm:
        networks = _update_networks(
            list(new.task.networks), opts.network_add, opts.network_rm, opts.network_refs
        )
        del new.task.networks[:]
        new.task.networks.extend(networks)
    if opts.replicas is not None:
        set_replicas(new, opts.replicas, name)
    if opts.max_concurrent is not None:
        set_max_concurrent(new, opts.max_concurrent, name)
    _apply_placement(new.task, opts)
    _apply_restart(new.task.restart, opts)
    opts.health.apply(new.task.container)
    opts.update_config.apply(new.update)
    opts.rollback_config.apply(new.rollback)
    if opts.force:
        new.task.force_update += 1
    return new


def _apply_container(container: specs_pb2.ContainerSpec, opts: UpdateOptions) -> None:
    """The container's settings: image, command, environment, labels and the rest."""
    for flag, attr in (("workdir", "dir"), ("user", "user"), ("hostname", "hostname")):
        value = getattr(opts, flag)
        if value is not None:
            setattr(container, attr, value)
    if opts.image is not None:
        container.image = opts.image
    if opts.args is not None:
        del container.args[:]
        container.args.extend(opts.args)
    if opts.entrypoint is not None:
        del container.command[:]
        container.command.extend(opts.entrypoint)
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


def _apply_restart(restart: specs_pb2.RestartPolicy, opts: UpdateOptions) -> None:
    if opts.restart_condition is not None:
        restart.condition = opts.restart_condition
    if opts.restart_delay is not None:
        restart.delay.CopyFrom(opts.restart_delay)
    if opts.restart_max_attempts is not None:
        restart.max_attempts = opts.restart_max_attempts
    if opts.restart_window is not None:
        restart.window.CopyFrom(opts.restart_window)
