"""`service inspect --pretty`: a service as aligned `Key: value` lines, like Docker's; and
the cluster settings `cluster update` prints."""

from __future__ import annotations

import shlex

from common.api import objects_pb2, specs_pb2, types_pb2
from common.timeutil import duration_seconds, format_duration
from swarmctl.output import enum_word
from swarmctl.parsing import (
    format_bytes,
    format_nano_cpus,
    format_platform,
    placement_strategy_name,
    protocol_name,
    restart_condition_name,
)

_WIDTH = 16


def _kv(key: str, value: object, indent: int = 0) -> str:
    label = " " * indent + key + ":"
    return f"{label.ljust(_WIDTH - 1)} {value}"


def _duration(d: object) -> str:
    seconds = duration_seconds(d)  # type: ignore[arg-type]
    return format_duration(seconds)


def service(svc: objects_pb2.Service) -> str:
    """The human-readable description of one service."""
    spec = svc.spec
    lines = [_kv("ID", svc.id), _kv("Name", spec.annotations.name)]
    if spec.annotations.labels:
        lines.append("Labels:")
        lines.extend(f" {k}={v}" for k, v in sorted(spec.annotations.labels.items()))
    lines.extend(_mode(spec))
    if svc.HasField("update_status") and svc.update_status.state:
        status = svc.update_status
        lines.append("UpdateStatus:")
        lines.append(
            _kv("State", enum_word(status.UpdateState.Name(status.state), "UPDATE_STATE_"), 1)
        )
        if status.message:
            lines.append(_kv("Message", status.message, 1))
    lines.extend(_placement(spec.task.placement))
    lines.extend(_resources(spec.task.resources))
    lines.extend(_restart(spec.task.restart))
    lines.extend(_container(spec.task.container))
    if spec.endpoint.ports:
        lines.append("Ports:")
        for port in spec.endpoint.ports:
            lines.append(f" PublishedPort = {port.published_port}")
            lines.append(f"  Protocol = {protocol_name(port.protocol)}")
            lines.append(f"  TargetPort = {port.target_port}")
            lines.append(f"  PublishMode = {_publish_mode(port.publish_mode)}")
    return "\n".join(lines)


def _publish_mode(mode: types_pb2.PublishMode.ValueType) -> str:
    return types_pb2.PublishMode.Name(mode).removeprefix("PUBLISH_MODE_").lower()


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
    return "\n".join(
        [
            _kv("ID", cluster.id),
            "Orchestration:",
            f" Task History Retention Limit: {spec.orchestration.task_history_retention_limit}",
            f" Auto Rebalance: {str(spec.orchestration.auto_rebalance).lower()}",
            "Dispatcher:",
            f" Heartbeat Period: {heartbeat}",
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
    return lines
