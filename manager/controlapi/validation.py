"""Checking specs before they are stored, and filling in the defaults.

Every error names the field, the value, and what would be accepted. A stored spec is
always complete: defaults are written into it, never assumed later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from google.protobuf.duration_pb2 import Duration

from common.api import objects_pb2, specs_pb2, types_pb2
from common.limits import MAX_DURATION_NANOS, MAX_PORT, MAX_REPLICAS
from common.modes import GLOBAL_MODES, MODES
from common.timeutil import duration_seconds
from manager.controlapi.names import random_name
from manager.domain import constraints
from manager.domain.specs import with_defaults
from manager.grpc_errors import InvalidArgumentError

# SwarmKit's rule for service names: a DNS label.
# (Written so that it cannot backtrack exponentially on a long bad name.)
_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[a-zA-Z0-9])*$")
_NAME_MAX = 63
# A Docker image reference: [domain[:port]/]path[:tag][@digest].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    rf"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?"
    rf"{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
_ENV_KEY = re.compile(r"^[^=\s][^=]*$")
_LABEL_KEY = re.compile(r"^\S+$")

# A stored service holds its spec and the previous one, and each of its tasks a copy:
# bounded, so that every object stays far below what etcd takes in one request
# (1.5 MiB by default).
MAX_SPEC_BYTES = 128 * 1024


def validate_name(name: str, what: str = "service") -> None:
    if len(name) > _NAME_MAX or not _NAME.match(name):
        raise InvalidArgumentError(
            f"invalid {what} name {name!r}: use 1-{_NAME_MAX} letters, digits, '-' and '_', "
            "starting and ending with a letter or digit (a DNS label)"
        )


def validate_image(image: str) -> None:
    if not image:
        raise InvalidArgumentError("no image given: a service needs an image to run")
    if not _IMAGE.match(image):
        repo = image.split("@", maxsplit=1)[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
        hint = " (repository names must be lower case)" if repo != repo.lower() else ""
        raise InvalidArgumentError(f"invalid image reference {image!r}{hint}")


def _check_labels(labels: Mapping[str, str], where: str) -> None:
    for key in labels:
        if not _LABEL_KEY.match(key):
            raise InvalidArgumentError(
                f"invalid {where} label key {key!r}: it must be non-empty and have no spaces"
            )


def _check_enum(value: int, enum: object, what: str, accepted: str) -> None:
    """Refuse a number the enum does not name (proto3 enums are open: protobuf keeps any
    int32 a client sends, so an unknown one reaches us and would be stored)."""
    if value not in enum.values():  # type: ignore[attr-defined]
        raise InvalidArgumentError(f"invalid {what} {value}: use {accepted}")


_MAX_NANOS_FIELD = 999_999_999


def check_duration(d: Duration, field: str, *, allow_zero: bool = True) -> None:
    """Refuse a Duration that is malformed (nanos out of range, or of the other sign than
    the seconds), negative, or longer than Docker's durations go."""
    if not -_MAX_NANOS_FIELD <= d.nanos <= _MAX_NANOS_FIELD or (
        d.seconds and d.nanos and (d.seconds < 0) != (d.nanos < 0)
    ):
        raise InvalidArgumentError(
            f"invalid {field} ({d.seconds} s and {d.nanos} ns): not a valid duration (nanos "
            "from -999999999 to 999999999, with the sign of the seconds)"
        )
    seconds = duration_seconds(d)
    if seconds < 0 or (not allow_zero and seconds == 0):
        raise InvalidArgumentError(f"invalid {field} {seconds}s: it must not be negative")
    if d.seconds * 10**9 + d.nanos > MAX_DURATION_NANOS:
        raise InvalidArgumentError(
            f"invalid {field} {d.seconds}s: at most {MAX_DURATION_NANOS // 10**9}s (about 292 "
            "years, as Docker's durations)"
        )


def validate_service_spec(spec: specs_pb2.ServiceSpec) -> None:
    """Raise InvalidArgumentError for the first thing wrong with `spec`."""
    size = spec.ByteSize()
    if size > MAX_SPEC_BYTES:
        raise InvalidArgumentError(
            f"the service spec is too large ({size} bytes; at most {MAX_SPEC_BYTES} are "
            "accepted): keep big data out of environment variables, labels and arguments"
        )
    validate_name(spec.annotations.name)
    _check_labels(spec.annotations.labels, "service")
    _validate_container(spec.task.container)
    _validate_restart(spec.task.restart)
    _validate_mode(spec)
    _validate_endpoint(spec.endpoint)
    _validate_networks(spec.task.networks)
    _validate_placement(spec.task)
    _validate_rollout(spec.update, "update")
    _validate_rollout(spec.rollback, "rollback")


def _validate_container(container: specs_pb2.ContainerSpec) -> None:
    validate_image(container.image)
    for entry in container.env:
        key = entry.partition("=")[0]
        if not _ENV_KEY.match(key):
            raise InvalidArgumentError(f"invalid environment variable {entry!r}: use KEY=VALUE")
    _check_labels(container.labels, "container")
    if container.HasField("stop_grace_period"):
        check_duration(container.stop_grace_period, "stop grace period")
    if container.HasField("healthcheck"):
        health = container.healthcheck
        for part in ("interval", "timeout", "start_period"):
            if health.HasField(part):
                check_duration(getattr(health, part), f"health check {part.replace('_', ' ')}")
        if health.retries < 0:
            raise InvalidArgumentError(
                f"invalid health check retries {health.retries}: it must not be negative"
            )


def _validate_restart(restart: specs_pb2.RestartPolicy) -> None:
    if restart.condition not in specs_pb2.RestartCondition.values():
        raise InvalidArgumentError(
            f"invalid restart condition {restart.condition}: use none, on-failure or any"
        )
    for name in ("delay", "window"):
        if restart.HasField(name):
            check_duration(getattr(restart, name), f"restart {name}")


def _validate_mode(spec: specs_pb2.ServiceSpec) -> None:
    mode = spec.WhichOneof("mode")
    if mode is not None and mode not in MODES:
        raise InvalidArgumentError(
            f"unknown service mode {mode!r}: use replicated, global, replicated-job or global-job"
        )
    counts = {
        "replicas": spec.replicated.replicas,
        "total completions": spec.replicated_job.total_completions,
        "max concurrent": spec.replicated_job.max_concurrent,
    }
    for what, count in counts.items():
        if count > MAX_REPLICAS:
            raise InvalidArgumentError(
                f"invalid {what} value {count}: at most {MAX_REPLICAS} tasks per service"
            )
    if mode in GLOBAL_MODES and spec.task.placement.max_replicas:
        raise InvalidArgumentError(
            "--replicas-max-per-node does not apply to global services (one task per node)"
        )


def _validate_rollout(cfg: specs_pb2.UpdateConfig, name: str) -> None:
    """The update (or rollback) settings."""
    for d in ("delay", "monitor"):
        if cfg.HasField(d):
            check_duration(getattr(cfg, d), f"{name} {d}")
    _check_enum(
        cfg.failure_action,
        specs_pb2.UpdateFailureAction,
        f"{name} failure action",
        "pause, continue or rollback",
    )
    _check_enum(cfg.order, specs_pb2.UpdateOrder, f"{name} order", "stop-first or start-first")
    if not 0 <= cfg.max_failure_ratio <= 1:
        raise InvalidArgumentError(
            f"invalid {name} max failure ratio {cfg.max_failure_ratio}: use a number from 0 to 1"
        )


def _validate_placement(task: specs_pb2.TaskSpec) -> None:
    placement = task.placement
    for expr in placement.constraints:
        try:
            constraints.parse(expr)
        except constraints.ConstraintError as exc:
            raise InvalidArgumentError(str(exc)) from None
    for pref in placement.preferences:
        try:
            constraints.check_spread_descriptor(pref.spread.spread_descriptor)
        except constraints.ConstraintError as exc:
            raise InvalidArgumentError(str(exc)) from None
    if placement.strategy not in specs_pb2.PlacementStrategy.values():
        raise InvalidArgumentError(
            f"invalid placement strategy {placement.strategy}: use spread or binpack"
        )
    for p in placement.platforms:
        if not p.os and not p.architecture:
            raise InvalidArgumentError("invalid platform: give an OS, an architecture or both")
    for kind in ("limits", "reservations"):
        res = getattr(task.resources, kind)
        if res.nano_cpus < 0 or res.memory_bytes < 0:
            raise InvalidArgumentError(
                f"invalid resource {kind}: CPU and memory must not be negative"
            )
    limits, reservations = task.resources.limits, task.resources.reservations
    if limits.memory_bytes and reservations.memory_bytes > limits.memory_bytes:
        raise InvalidArgumentError(
            "memory reservation is larger than the memory limit: reserve at most the limit"
        )
    if limits.memory_bytes and limits.memory_bytes < 6 * 1024 * 1024:
        raise InvalidArgumentError(
            "memory limit below 6MiB: the engine refuses containers that small"
        )


_DNSRR_WITH_INGRESS = (
    "port published with ingress mode can't be used with dnsrr mode: publish it with "
    "mode=host, or use --endpoint-mode vip"
)


def _validate_endpoint(endpoint: specs_pb2.EndpointSpec) -> None:
    _check_enum(endpoint.mode, specs_pb2.ResolutionMode, "endpoint mode", "vip or dnsrr")
    seen: set[tuple[int, int]] = set()
    for port in endpoint.ports:
        _check_enum(port.protocol, types_pb2.PortProtocol, "port protocol", "tcp, udp or sctp")
        _check_enum(port.publish_mode, types_pb2.PublishMode, "publish mode", "ingress or host")
        proto = types_pb2.PortProtocol.Name(port.protocol).removeprefix("PORT_PROTOCOL_").lower()
        ingress = port.publish_mode == types_pb2.PUBLISH_MODE_INGRESS
        if not 1 <= port.target_port <= MAX_PORT:
            raise InvalidArgumentError(
                f"invalid target port {port.target_port}: use a port from 1 to {MAX_PORT}"
            )
        if port.published_port > MAX_PORT:
            picker = "the cluster pick one from 30000-32767" if ingress else "the engine pick one"
            raise InvalidArgumentError(
                f"invalid published port {port.published_port}: use a port from 1 to "
                f"{MAX_PORT}, or 0 to let {picker}"
            )
        # Docker's rule: in dnsrr mode there is no virtual IP for the routing mesh to
        # balance over, so a port can only be published on the task's own node.
        if ingress and endpoint.mode == specs_pb2.RESOLUTION_MODE_DNSRR:
            raise InvalidArgumentError(f"port {port.target_port}/{proto}: {_DNSRR_WITH_INGRESS}")
        if port.published_port:
            key = (port.published_port, port.protocol)
            if key in seen:
                raise InvalidArgumentError(
                    f"published port {port.published_port}/{proto} is given twice"
                )
            seen.add(key)


# What other tasks resolve a network alias as: a DNS name.
_ALIAS = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$")


def _validate_networks(networks: Sequence[specs_pb2.NetworkAttachmentConfig]) -> None:
    """The attachments' form; manager.controlapi.service_networks checks them against
    the cluster's networks."""
    for attachment in networks:
        if not attachment.target.strip():
            raise InvalidArgumentError(
                "a network attachment names no network: give its name or id "
                "(--network NAME or --network name=NAME,alias=ALIAS)"
            )
        for alias in attachment.aliases:
            if not _ALIAS.match(alias):
                raise InvalidArgumentError(
                    f"invalid alias {alias!r} on network {attachment.target!r}: an alias is a "
                    "DNS name (letters, digits, '-', '_' and '.', at most 253 characters, "
                    "starting and ending with a letter or digit)"
                )


def complete_service_spec(spec: specs_pb2.ServiceSpec) -> specs_pb2.ServiceSpec:
    """A copy of `spec` with every default written in (manager.domain.specs), and a
    random name if it has none."""
    out = with_defaults(spec)
    if not out.annotations.name:
        out.annotations.name = random_name()
    return out


def check_service_update(old: objects_pb2.Service, new: specs_pb2.ServiceSpec) -> None:
    """What an update may not change."""
    if new.annotations.name != old.spec.annotations.name:
        raise InvalidArgumentError(
            f"renaming services is not supported (from {old.spec.annotations.name!r} to "
            f"{new.annotations.name!r}): create a new service instead"
        )
    if new.WhichOneof("mode") != old.spec.WhichOneof("mode"):
        raise InvalidArgumentError(
            f"changing the mode of service {old.spec.annotations.name!r} is not supported "
            f"({old.spec.WhichOneof('mode')} to {new.WhichOneof('mode')}): create a new service"
        )
