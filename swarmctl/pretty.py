"""`service inspect --pretty`: a service as aligned `Key: value` lines, like Docker's; and
the cluster settings `cluster update` prints."""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping

from common.api import objects_pb2, specs_pb2, types_pb2
from common.timeutil import duration_seconds, format_duration, human_ago, timestamp_seconds
from swarmctl.parsing import (
    endpoint_mode_name,
    failure_action_name,
    format_bytes,
    format_nano_cpus,
    format_platform,
    placement_strategy_name,
    protocol_name,
    publish_mode_name,
    restart_condition_name,
    update_order_name,
)

_WIDTH = 16
_DONE_STATES = (
    objects_pb2.UpdateStatus.UPDATE_STATE_COMPLETED,
    objects_pb2.UpdateStatus.UPDATE_STATE_ROLLBACK_COMPLETED,
)


def _kv(key: str, value: object, indent: int = 0) -> str:
    label = " " * indent + key + ":"
    return f"{label.ljust(_WIDTH - 1)} {value}"


def _duration(d: object) -> str:
    seconds = duration_seconds(d)  # type: ignore[arg-type]
    return format_duration(seconds)


def service(
    svc: objects_pb2.Service,
    now: float | None = None,
    network_names: Mapping[str, str] | None = None,
) -> str:
    """The human-readable description of one service (`now` for how long ago things were,
    `network_names` the names of the networks by id; an unknown one shows its id)."""
    spec = svc.spec
    lines = [_kv("ID", svc.id), _kv("Name", spec.annotations.name)]
    if spec.annotations.labels:
        lines.append("Labels:")
        lines.extend(f" {k}={v}" for k, v in sorted(spec.annotations.labels.items()))
    lines.extend(_mode(spec))
    lines.extend(update_status(svc.update_status, time.time() if now is None else now))
    lines.extend(_placement(spec.task.placement))
    lines.extend(_resources(spec.task.resources))
    lines.extend(_restart(spec.task.restart))
    if spec.HasField("update"):
        lines.extend(_update_config("UpdateConfig", "Update order", spec.update))
    if spec.HasField("rollback"):
        lines.extend(_update_config("RollbackConfig", "Rollback order", spec.rollback))
    lines.extend(_container(spec.task.container))
    lines.extend(_endpoint(svc, network_names or {}))
    return "\n".join(lines)


def published_ports(svc: objects_pb2.Service) -> list[types_pb2.PortConfig]:
    """The service's ports as published: those of its spec, each with the number the
    allocator picked where the spec asks for any (a published port of 0 in ingress
    mode), once it has (service.endpoint); Docker shows the same from its Endpoint."""
    picked = {
        (p.target_port, p.protocol, p.publish_mode): p.published_port
        for p in svc.endpoint.ports
        if p.published_port
    }
    out = []
    for port in svc.spec.endpoint.ports:
        shown = types_pb2.PortConfig()
        shown.CopyFrom(port)
        if not shown.published_port:
            key = (port.target_port, port.protocol, port.publish_mode)
            shown.published_port = picked.get(key, 0)
        out.append(shown)
    return out


def _endpoint(svc: objects_pb2.Service, network_names: Mapping[str, str]) -> list[str]:
    """Docker's Networks, Endpoint Mode and Ports lines, and the virtual IPs the
    allocator gave the service (which Docker shows only in the JSON)."""
    spec = svc.spec
    lines = []
    if spec.task.networks:
        names = [network_names.get(n.target, n.target) for n in spec.task.networks]
        lines.append(_kv("Networks", " ".join(names)))
        for attachment in spec.task.networks:
            if attachment.aliases:
                name = network_names.get(attachment.target, attachment.target)
                lines.append(_kv(f"Aliases on {name}", ", ".join(attachment.aliases), 1))
    lines.append(_kv("Endpoint Mode", endpoint_mode_name(spec.endpoint.mode)))
    ports = published_ports(svc)
    if ports:
        lines.append("Ports:")
        for port in ports:
            lines.append(f" PublishedPort = {port.published_port}")
            lines.append(f"  Protocol = {protocol_name(port.protocol)}")
            lines.append(f"  TargetPort = {port.target_port}")
            lines.append(f"  PublishMode = {publish_mode_name(port.publish_mode)}")
    if svc.endpoint.virtual_ips:
        lines.append("Virtual IPs:")
        for vip in svc.endpoint.virtual_ips:
            lines.append(_kv(network_names.get(vip.network_id, vip.network_id), vip.addr, 1))
    return lines


def update_state_name(state: int) -> str:
    """Docker's name of an update state: updating, paused, rollback_completed..."""
    name: str = objects_pb2.UpdateStatus.UpdateState.Name(state)  # type: ignore[arg-type]
    return name.removeprefix("UPDATE_STATE_").lower()


def update_status(status: objects_pb2.UpdateStatus, now: float) -> list[str]:
    """Docker's UpdateStatus block: State, Started, Completed (once done) and Message."""
    if not status.state:
        return []
    lines = ["UpdateStatus:", _kv("State", update_state_name(status.state), 1)]
    started = timestamp_seconds(status.started_at)
    if started:
        lines.append(_kv("Started", _ago(now - started), 1))
    completed = timestamp_seconds(status.completed_at)
    if completed and status.state in _DONE_STATES:
        lines.append(_kv("Completed", _ago(now - completed), 1))
    lines.append(_kv("Message", status.message, 1))
    return lines


def _ago(seconds: float) -> str:
    return f"{human_ago(max(0.0, seconds)).lower()} ago"


def _update_config(title: str, order_label: str, cfg: specs_pb2.UpdateConfig) -> list[str]:
    """Docker's UpdateConfig / RollbackConfig blocks."""
    lines = [f"{title}:", _kv("Parallelism", cfg.parallelism, 1)]
    if duration_seconds(cfg.delay):
        lines.append(_kv("Delay", _duration(cfg.delay), 1))
    lines.append(_kv("On failure", failure_action_name(cfg.failure_action), 1))
    if duration_seconds(cfg.monitor):
        lines.append(_kv("Monitoring Period", _duration(cfg.monitor), 1))
    lines.append(_kv("Max failure ratio", f"{cfg.max_failure_ratio:g}", 1))
    lines.append(_kv(order_label, update_order_name(cfg.order), 1))
    return lines


def _mode(spec: specs_pb2.ServiceSpec) -> list[str]:
    mode = spec.WhichOneof("mode")
    if mode == "replicated":
        return [_kv("Service Mode", "Replicated"), _kv("Replicas", spec.replicated.replicas, 1)]
    if mode == "replicated_job":
        return [
            _kv("Service Mode", "Replicated Job"),
            _kv("Max Concurrent", spec.replicated_job.max_concurrent, 1),
            _kv("Completions", spec.replicated_job.total_completions, 1),
        ]
    if mode == "global_job":
        return [_kv("Service Mode", "Global Job")]
    return [_kv("Service Mode", "Global")]


def _placement(placement: specs_pb2.Placement) -> list[str]:
    lines = ["Placement:"]
    if placement.constraints:
        lines.append(_kv("Constraints", ", ".join(placement.constraints), 1))
    if placement.preferences:
        lines.append(" Preferences:")
        lines.extend(f"  Spread: {p.spread.spread_descriptor}" for p in placement.preferences)
    if placement.max_replicas:
        lines.append(_kv("Max Replicas", placement.max_replicas, 1))
    if placement.platforms:
        platforms = ", ".join(format_platform(p) for p in placement.platforms)
        lines.append(_kv("Platforms", platforms, 1))
    if placement.strategy:
        lines.append(_kv("Strategy", placement_strategy_name(placement.strategy), 1))
    return lines if len(lines) > 1 else []


def _resources(resources: types_pb2.ResourceRequirements) -> list[str]:
    lines = ["Resources:"]
    for title, res in (("Reservations", resources.reservations), ("Limits", resources.limits)):
        if res.nano_cpus or res.memory_bytes:
            lines.append(f" {title}:")
            if res.nano_cpus:
                lines.append(_kv("CPU", format_nano_cpus(res.nano_cpus), 2))
            if res.memory_bytes:
                lines.append(_kv("Memory", format_bytes(res.memory_bytes), 2))
    return lines if len(lines) > 1 else []


def cluster_settings(cluster: objects_pb2.Cluster) -> str:
    """The settings `cluster update` changes, as `docker info` shows the swarm's."""
    spec = cluster.spec
    period = spec.dispatcher.heartbeat_period
    heartbeat = _duration(period) if spec.dispatcher.HasField("heartbeat_period") else "default"
    ca = spec.ca_config
    expiry = _duration(ca.node_cert_expiry) if ca.HasField("node_cert_expiry") else "default"
    return "\n".join(
        [
            _kv("ID", cluster.id),
            "Orchestration:",
            f" Task History Retention Limit: {spec.orchestration.task_history_retention_limit}",
            f" Auto Rebalance: {str(spec.orchestration.auto_rebalance).lower()}",
            "Dispatcher:",
            f" Heartbeat Period: {heartbeat}",
            "CA Configuration:",
            f" Expiry Duration: {expiry}",
        ]
    )


def _restart(policy: specs_pb2.RestartPolicy) -> list[str]:
    lines = [
        "RestartPolicy:",
        _kv("Condition", restart_condition_name(policy.condition), 1),
        _kv("Delay", _duration(policy.delay), 1),
        _kv("Max Attempts", policy.max_attempts, 1),
    ]
    if policy.HasField("window"):
        lines.append(_kv("Window", _duration(policy.window), 1))
    return lines


def _container(container: specs_pb2.ContainerSpec) -> list[str]:
    lines = ["ContainerSpec:", _kv("Image", container.image, 1)]
    if container.command:
        lines.append(_kv("Command", shlex.join(container.command), 1))
    if container.args:
        lines.append(_kv("Args", shlex.join(container.args), 1))
    if container.env:
        lines.append(_kv("Env", " ".join(container.env), 1))
    if container.dir:
        lines.append(_kv("Dir", container.dir, 1))
    if container.user:
        lines.append(_kv("User", container.user, 1))
    if container.hostname:
        lines.append(_kv("Hostname", container.hostname, 1))
    if container.HasField("stop_grace_period"):
        lines.append(_kv("StopGracePeriod", _duration(container.stop_grace_period), 1))
    if container.labels:
        lines.append(" Labels:")
        lines.extend(f"  {k}={v}" for k, v in sorted(container.labels.items()))
    if container.HasField("healthcheck"):
        lines.extend(_healthcheck(container.healthcheck))
    return lines


def _healthcheck(health: specs_pb2.HealthConfig) -> list[str]:
    test = list(health.test)
    if test[:1] == ["NONE"]:
        return [_kv("Healthcheck", "none (disabled)", 1)]
    lines = [" Healthcheck:"]
    if test[:1] == ["CMD-SHELL"]:
        lines.append(_kv("Command", " ".join(test[1:]), 2))
    elif test[:1] == ["CMD"]:
        lines.append(_kv("Command", shlex.join(test[1:]), 2))
    else:
        lines.append(_kv("Command", "(the image's)", 2))
    for label, value in (
        ("Interval", health.interval),
        ("Timeout", health.timeout),
        ("Start Period", health.start_period),
    ):
        if duration_seconds(value):
            lines.append(_kv(label, _duration(value), 2))
    if health.retries:
        lines.append(_kv("Retries", health.retries, 2))
    return lines
