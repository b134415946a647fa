"""Parsing of flag values: ports, env, labels, durations, counts, filters, resources,
placement, update/rollback settings and times (`--since`).

Each parser takes the text the user typed and returns API values, or raises
`FlagValueError` whose message names the value and says what is expected. The command
modules add the flag's name (see `swarmctl.cli.flag_value`), so a user sees e.g.
`Invalid value for '--replicas': invalid replicas value -1: must be 0 or more`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shlex
import time
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from google.protobuf.duration_pb2 import Duration

from common import states
from common.api import specs_pb2, types_pb2
from common.limits import (
    INT32_MAX,
    MAX_MEMORY_BYTES,
    MAX_NANO_CPUS,
    MAX_PORT,
    MAX_REPLICAS,
    UINT64_MAX,
)
from common.timeutil import duration, parse_duration

_PROTOCOLS = {
    "tcp": types_pb2.PORT_PROTOCOL_TCP,
    "udp": types_pb2.PORT_PROTOCOL_UDP,
    "sctp": types_pb2.PORT_PROTOCOL_SCTP,
}
_RESTART_CONDITIONS = {
    "none": specs_pb2.RESTART_CONDITION_NONE,
    "on-failure": specs_pb2.RESTART_CONDITION_ON_FAILURE,
    "any": specs_pb2.RESTART_CONDITION_ANY,
}
_AVAILABILITIES = {
    "active": types_pb2.NODE_AVAILABILITY_ACTIVE,
    "pause": types_pb2.NODE_AVAILABILITY_PAUSE,
    "drain": types_pb2.NODE_AVAILABILITY_DRAIN,
}
_ROLES = {"worker": types_pb2.NODE_ROLE_WORKER, "manager": types_pb2.NODE_ROLE_MANAGER}
# `--mode` values and the ServiceSpec `mode` oneof field each one sets.
MODES = {
    "replicated": "replicated",
    "global": "global",
    "replicated-job": "replicated_job",
    "global-job": "global_job",
}
_STRATEGIES = {
    "spread": specs_pb2.PLACEMENT_STRATEGY_SPREAD,
    "binpack": specs_pb2.PLACEMENT_STRATEGY_BINPACK,
}
# strconv.ParseBool's spellings, as Docker's boolean flags take them.
_TRUE = ("1", "t", "true")
_FALSE = ("0", "f", "false")
NANO = 1_000_000_000
# Decimal exponents beyond which a CPU count is surely too large or too precise.
_MAX_CPU_DIGITS = 30
# Docker's RAMInBytes (go-units): an optional unit k, m, g, t or p, in 1024 multiples,
# optionally followed by "i" and/or "b"; a bare number (or "b") is bytes.
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp]?)(i?)(b?)$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_ENV_KEY = re.compile(r"^[^=\s]+$")
_PORT_RANGE = re.compile(r"^([0-9]+)(?:-([0-9]+))?$")
# A count as typed: ASCII digits (int() would also take "1_000" and other scripts'
# digits), at most a sign, and a bounded length (int() refuses over 4300 digits).
_COUNT = re.compile(r"^[-+]?[0-9]{1,100}$")


class FlagValueError(ValueError):
    """A flag value that does not parse; the message names it and says what is expected."""


def protocol_name(protocol: int) -> str:
    """The protocol as Docker writes it: tcp, udp or sctp."""
    for name, value in _PROTOCOLS.items():
        if value == protocol:
            return name
    return str(protocol)


def restart_condition_name(condition: int) -> str:
    """The restart condition as the flag takes it: none, on-failure or any."""
    for name, value in _RESTART_CONDITIONS.items():
        if value == condition:
            return name
    return str(condition)


def parse_count(text: str, what: str, maximum: int, why: str = "") -> int:
    """A whole number from 0 to `maximum`: `invalid <what> value -1: must be 0 or more`
    otherwise. `why` says where the maximum comes from ("tasks per service")."""
    value = text.strip()
    if not _COUNT.match(value):
        raise FlagValueError(f"invalid {what} value {text!r}: must be a whole number, 0 or more")
    number = int(value)
    if number < 0:
        raise FlagValueError(f"invalid {what} value {number}: must be 0 or more")
    if number > maximum:
        raise FlagValueError(
            f"invalid {what} value {value}: must be at most {maximum}{f' ({why})' if why else ''}"
        )
    return number


def parse_replicas(text: str) -> int:
    return parse_count(text, "replicas", MAX_REPLICAS, "tasks per service")


def parse_max_replicas(text: str) -> int:
    """`--replicas-max-per-node`: 0 is no limit."""
    return parse_count(text, "replicas-max-per-node", UINT64_MAX)


def parse_max_concurrent(text: str) -> int:
    """`--max-concurrent`: a replicated job's tasks at once."""
    return parse_count(text, "max-concurrent", MAX_REPLICAS, "tasks per service")


def parse_restart_attempts(text: str) -> int:
    """`--restart-max-attempts`: 0 is no limit."""
    return parse_count(text, "restart max attempts", UINT64_MAX)


def parse_parallelism(text: str) -> int:
    """`--update-parallelism`, `--rollback-parallelism`: 0 is all at once."""
    return parse_count(text, "parallelism", UINT64_MAX)


def parse_constraint(text: str) -> str:
    """A constraint as given: the manager checks it (and explains what is wrong)."""
    if not text.strip():
        raise FlagValueError("invalid constraint '': expected KEY==VALUE or KEY!=VALUE")
    return text


def parse_duration_value(text: str) -> Duration:
    """A Go-style duration such as "5s", "300ms" or "1m30s" (a bare number is seconds)."""
    try:
        return duration(parse_duration(text))
    except ValueError as exc:
        raise FlagValueError(str(exc)) from None


def parse_env(text: str, environ: Mapping[str, str] | None = None) -> str:
    """`KEY=VALUE` as given; a bare `KEY` takes its value from this shell's environment."""
    key, sep, _ = text.partition("=")
    if not key or not _ENV_KEY.match(key):
        raise FlagValueError(
            f"invalid environment variable {text!r}: expected KEY=VALUE with a non-empty "
            "KEY and no spaces in it"
        )
    if sep:
        return text
    env = os.environ if environ is None else environ
    if key in env:
        return f"{key}={env[key]}"
    raise FlagValueError(
        f"invalid environment variable {text!r}: expected KEY=VALUE "
        f"({key} alone takes its value from your environment, where it is not set)"
    )


def env_key(entry: str) -> str:
    """The KEY of a `KEY=VALUE` entry."""
    return entry.partition("=")[0]


def parse_env_key(text: str) -> str:
    """A variable name to remove (`--env-rm KEY`)."""
    key = text.strip()
    if not key or "=" in key:
        raise FlagValueError(f"invalid environment variable name {text!r}: expected KEY")
    return key


def parse_label(text: str) -> tuple[str, str]:
    """`key=value`, or `key` alone for an empty value."""
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise FlagValueError(f"invalid label {text!r}: expected key=value with a non-empty key")
    return key, value


def parse_label_key(text: str) -> str:
    """A label key to remove (`--label-rm key`)."""
    key = text.strip()
    if not key or "=" in key:
        raise FlagValueError(f"invalid label key {text!r}: expected a key, without =value")
    return key


def parse_restart_condition(text: str) -> specs_pb2.RestartCondition.ValueType:
    try:
        return _RESTART_CONDITIONS[text.strip().lower()]
    except KeyError:
        raise FlagValueError(
            f"invalid restart condition {text!r}: use none, on-failure or any"
        ) from None


def parse_availability(text: str) -> types_pb2.NodeAvailability.ValueType:
    try:
        return _AVAILABILITIES[text.strip().lower()]
    except KeyError:
        raise FlagValueError(f"invalid availability {text!r}: use active, pause or drain") from None


def parse_role(text: str) -> types_pb2.NodeRole.ValueType:
    try:
        return _ROLES[text.strip().lower()]
    except KeyError:
        raise FlagValueError(f"invalid role {text!r}: use worker or manager") from None


def parse_protocol(text: str, whole: str) -> types_pb2.PortProtocol.ValueType:
    try:
        return _PROTOCOLS[text.strip().lower()]
    except KeyError:
        raise FlagValueError(
            f"invalid port {whole!r}: unknown protocol {text!r}; use tcp, udp or sctp"
        ) from None


def _port_number(text: str, whole: str, what: str, *, allow_zero: bool) -> int:
    if not (text.isascii() and text.isdigit()):
        raise FlagValueError(f"invalid port {whole!r}: {what} port {text!r} is not a number")
    number = int(text)
    low = 0 if allow_zero else 1
    if not low <= number <= MAX_PORT:
        raise FlagValueError(
            f"invalid port {whole!r}: {what} port {number} is out of range ({low}-{MAX_PORT})"
        )
    return number


def _port_range(text: str, whole: str, what: str, *, allow_zero: bool) -> list[int]:
    match = _PORT_RANGE.match(text.strip())
    if not match:
        raise FlagValueError(
            f"invalid port {whole!r}: {what} port {text!r} is not a number "
            "or a range like 8000-8010"
        )
    first = _port_number(match.group(1), whole, what, allow_zero=allow_zero)
    if match.group(2) is None:
        return [first]
    last = _port_number(match.group(2), whole, what, allow_zero=allow_zero)
    if last < first:
        raise FlagValueError(f"invalid port {whole!r}: {what} port range {text!r} is reversed")
    return list(range(first, last + 1))


_SHORT_SYNTAX = "[PUBLISHED:]TARGET[/PROTOCOL]"
_LONG_SYNTAX = "mode=ingress|host,target=80,published=8080,protocol=tcp"
# The publish mode of the short syntax (`-p 8080:80`) and of a long form without mode=.
# Docker's default is ingress (the routing mesh); swarmlet keeps host until its mesh is
# wired, and switching is this one line.
DEFAULT_PUBLISH_MODE: types_pb2.PublishMode.ValueType = types_pb2.PUBLISH_MODE_HOST
_PUBLISH_MODES = {
    "ingress": types_pb2.PUBLISH_MODE_INGRESS,
    "host": types_pb2.PUBLISH_MODE_HOST,
}


def parse_publish(text: str) -> list[types_pb2.PortConfig]:
    """One `--publish` value as PortConfigs (a range gives several).

    Short syntax `published:target[/protocol]` or `target[/protocol]` (published port 0:
    one is picked, by the engine in host mode, from 30000-32767 in ingress mode); long
    syntax `mode=ingress|host,target=80,published=8080,protocol=tcp`. Without a mode, the
    mode is DEFAULT_PUBLISH_MODE.
    """
    value = text.strip()
    if not value:
        raise FlagValueError(f"invalid port {text!r}: expected {_SHORT_SYNTAX} or {_LONG_SYNTAX}")
    if "=" in value:
        return [_parse_long_publish(value)]
    return _parse_short_publish(value)


def _parse_short_publish(text: str) -> list[types_pb2.PortConfig]:
    ports, _, proto_text = text.partition("/")
    protocol = parse_protocol(proto_text, text) if proto_text else types_pb2.PORT_PROTOCOL_TCP
    parts = ports.split(":")
    if len(parts) > 2:
        raise FlagValueError(
            f"invalid port {text!r}: a host IP is not supported; expected {_SHORT_SYNTAX}"
        )
    targets = _port_range(parts[-1], text, "target", allow_zero=False)
    if len(parts) == 2:
        published = _port_range(parts[0], text, "published", allow_zero=True)
        if len(published) == 1 and published[0] == 0:
            published = [0] * len(targets)
        if len(published) != len(targets):
            raise FlagValueError(
                f"invalid port {text!r}: the published range has {len(published)} ports "
                f"and the target range {len(targets)}"
            )
    else:
        published = [0] * len(targets)
    return [
        types_pb2.PortConfig(
            protocol=protocol,
            target_port=target,
            published_port=pub,
            publish_mode=DEFAULT_PUBLISH_MODE,
        )
        for pub, target in zip(published, targets, strict=True)
    ]


def _parse_long_publish(text: str) -> types_pb2.PortConfig:
    port = types_pb2.PortConfig(
        protocol=types_pb2.PORT_PROTOCOL_TCP, publish_mode=DEFAULT_PUBLISH_MODE
    )
    seen_target = False
    for field in text.split(","):
        key, sep, val = field.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not sep or not key:
            raise FlagValueError(
                f"invalid port {text!r}: {field!r} is not key=value; expected {_LONG_SYNTAX}"
            )
        if key == "mode":
            try:
                port.publish_mode = _PUBLISH_MODES[val.lower()]
            except KeyError:
                raise FlagValueError(
                    f"invalid port {text!r}: unknown publish mode {val!r}; use mode=ingress "
                    "(the routing mesh: the port answers on every node) or mode=host (on the "
                    "node that runs each task)"
                ) from None
        elif key == "target":
            port.target_port = _port_number(val, text, "target", allow_zero=False)
            seen_target = True
        elif key == "published":
            port.published_port = _port_number(val, text, "published", allow_zero=True)
        elif key == "protocol":
            port.protocol = parse_protocol(val, text)
        elif key == "name":
            port.name = val
        else:
            raise FlagValueError(
                f"invalid port {text!r}: unknown field {key!r}; "
                "use mode, target, published and protocol"
            )
    if not seen_target:
        raise FlagValueError(f"invalid port {text!r}: target is missing; expected {_LONG_SYNTAX}")
    return port


def publish_mode_name(mode: int) -> str:
    """`ingress` or `host`, as Docker shows a port's PublishMode."""
    for name, value in _PUBLISH_MODES.items():
        if value == mode:
            return name
    return str(mode)


_NETWORK_LONG_SYNTAX = "name=NETWORK,alias=ALIAS"


def parse_network(text: str) -> specs_pb2.NetworkAttachmentConfig:
    """One `--network` (or `--network-add`) value: `NETWORK` (a name or id) or Docker's
    long form `name=NETWORK,alias=A,alias=B`. The target is what the user typed; the
    manager resolves it to the network's id."""
    value = text.strip()
    if not value:
        raise FlagValueError(
            f"invalid network {text!r}: give a network name or id, or {_NETWORK_LONG_SYNTAX}"
        )
    if "=" not in value:
        return specs_pb2.NetworkAttachmentConfig(target=value)
    out = specs_pb2.NetworkAttachmentConfig()
    for field in value.split(","):
        key, sep, val = field.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not sep or not key:
            raise FlagValueError(
                f"invalid network {text!r}: invalid field {field!r}; expected "
                f"{_NETWORK_LONG_SYNTAX}"
            )
        if key == "name":
            out.target = val
        elif key == "alias":
            # Whether it is a valid name is the manager's rule (manager/controlapi).
            out.aliases.append(val)
        elif key == "driver-opt":
            raise FlagValueError(
                f"invalid network {text!r}: driver-opt is not supported (swarmlet's overlay "
                "driver has no per-attachment options); leave it out"
            )
        elif key in ("ip", "ip6", "mac-address", "link-local-ip"):
            raise FlagValueError(
                f"invalid network {text!r}: {key} cannot be set for a service (the manager "
                "gives every task its address); leave it out"
            )
        else:
            raise FlagValueError(
                f"invalid network {text!r}: invalid field key {key!r}; use name and alias"
            )
    if not out.target:
        raise FlagValueError(
            f"invalid network {text!r}: network name/id is not specified; expected "
            f"{_NETWORK_LONG_SYNTAX}"
        )
    return out


_ENDPOINT_MODES = {
    "vip": specs_pb2.RESOLUTION_MODE_VIP,
    "dnsrr": specs_pb2.RESOLUTION_MODE_DNSRR,
}


def parse_endpoint_mode(text: str) -> specs_pb2.ResolutionMode.ValueType:
    """`--endpoint-mode`: vip (a virtual IP per network) or dnsrr (the service's name
    resolves to its tasks' addresses)."""
    try:
        return _ENDPOINT_MODES[text.strip().lower()]
    except KeyError:
        raise FlagValueError(f"invalid endpoint mode {text!r}: use vip or dnsrr") from None


def endpoint_mode_name(mode: int) -> str:
    for name, value in _ENDPOINT_MODES.items():
        if value == mode:
            return name
    return str(mode)


def parse_port_ref(text: str) -> tuple[int, types_pb2.PortProtocol.ValueType]:
    """`--publish-rm`: `target[/protocol]`, `published:target[/protocol]` or the long form.

    Returns the target port and protocol that identify the published port to remove.
    """
    ports = parse_publish(text)
    if len(ports) != 1:
        raise FlagValueError(f"invalid port {text!r}: remove one port at a time, not a range")
    return ports[0].target_port, ports[0].protocol


def parse_scale(text: str) -> tuple[str, int]:
    """A `service scale` argument, `SERVICE=REPLICAS`."""
    name, sep, count = text.partition("=")
    if not sep or not name.strip():
        raise FlagValueError(f"invalid scale specifier {text!r}: expected SERVICE=REPLICAS")
    return name.strip(), parse_replicas(count)


def parse_filters(values: Iterable[str], allowed: Collection[str]) -> dict[str, list[str]]:
    """`-f key=value` flags, grouped by key; a key outside `allowed` is an error."""
    out: dict[str, list[str]] = {}
    for text in values:
        key, sep, value = text.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise FlagValueError(f"invalid filter {text!r}: expected key=value")
        if key not in allowed:
            raise FlagValueError(
                f"invalid filter {text!r}: unknown key {key!r}; use one of {', '.join(allowed)}"
            )
        out.setdefault(key, []).append(value.strip())
    return out


def parse_desired_state(text: str) -> types_pb2.TaskState.ValueType:
    """A `desired-state=` filter value: running, shutdown, accepted (or any task state)."""
    try:
        return types_pb2.TaskState.ValueType(states.parse_state(text))
    except ValueError as exc:
        raise FlagValueError(str(exc)) from None


def parse_command(text: str) -> list[str]:
    """A command line such as `--entrypoint "sh -c"`, split like a POSIX shell does."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise FlagValueError(f"invalid command {text!r}: {exc}") from None
    return words


def parse_mode(text: str) -> str:
    """`--mode`: replicated, global, replicated-job or global-job.

    Returns the name of the ServiceSpec `mode` field it sets (`replicated_job`, ...).
    """
    try:
        return MODES[text.strip().lower()]
    except KeyError:
        raise FlagValueError(
            f"invalid mode {text!r}: use replicated, global, replicated-job or global-job"
        ) from None


def parse_placement_pref(text: str) -> str:
    """`--placement-pref spread=node.labels.zone`: the spread descriptor.

    Only the `spread` strategy exists, as in Docker; the descriptor itself is checked by
    the manager (it takes node.labels.KEY and engine.labels.KEY).
    """
    fields = text.split("=")
    if len(fields) != 2:
        raise FlagValueError(
            f"invalid placement preference {text!r}: expected spread=node.labels.KEY"
        )
    strategy, descriptor = fields[0].strip(), fields[1].strip()
    if strategy != "spread":
        raise FlagValueError(
            f"invalid placement preference {text!r}: unsupported placement preference "
            f"{strategy!r} (only spread is supported)"
        )
    if not descriptor:
        raise FlagValueError(
            f"invalid placement preference {text!r}: expected spread=node.labels.KEY"
        )
    return descriptor


def parse_nano_cpus(text: str) -> int:
    """A number of CPUs such as `0.5`, `2` or `1/4`, in billionths of a CPU (nano_cpus).

    Like Docker's NanoCPUs: a rational number, refused when finer than 1e-9 CPU.
    """
    value = text.strip()
    try:
        cpus = _cpus(value)
    except (ValueError, ZeroDivisionError, ArithmeticError):
        raise FlagValueError(
            f"invalid CPU value {text!r}: use a number of CPUs, like 0.5 or 2"
        ) from None
    if cpus is None:
        raise FlagValueError(
            f"invalid CPU value {text!r}: too large (at most {format_nano_cpus(MAX_NANO_CPUS)})"
        )
    if cpus < 0:
        raise FlagValueError(f"invalid CPU value {text!r}: must not be negative")
    nanos = cpus * NANO
    if nanos > MAX_NANO_CPUS:
        raise FlagValueError(
            f"invalid CPU value {text!r}: too large (at most {format_nano_cpus(MAX_NANO_CPUS)})"
        )
    if nanos.denominator != 1:
        raise FlagValueError(
            f"invalid CPU value {text!r}: too precise (the unit is a billionth of a CPU)"
        )
    return int(nanos)


def _cpus(value: str) -> Fraction | None:
    """`value` as an exact number; None when it is too large to be a count of CPUs.

    Fraction("1e999999999") would compute that power of ten (and take forever), so a
    decimal is looked at as a Decimal first, whose exponent says how large it is; a
    fraction's parts are plain integers, bounded by their length.
    """
    if not value.isascii() or "_" in value:
        raise ValueError(value)  # Python's numbers take "1_000" and other scripts' digits
    if "/" in value:
        return Fraction(value)
    number = Decimal(value)
    if not number.is_finite():
        raise ValueError(value)
    if number < 0:
        return Fraction(-1)  # refused as negative, however large
    if number and number.adjusted() > _MAX_CPU_DIGITS:
        return None
    if number and number.adjusted() < -_MAX_CPU_DIGITS:
        return Fraction(1, NANO * 10)  # finer than a nano CPU, without the huge power
    return Fraction(number)


def parse_memory_bytes(text: str) -> int:
    """A size such as `512m`, `1.5g`, `64MiB` or `1048576`, in bytes.

    Docker's units (RAMInBytes): b, k/kb/kib, m/mb/mib, g, t, p, case-insensitive, each
    1024 times the one before; a bare number is bytes.
    """
    match = _MEMORY.match(text.strip())
    if match is None or (match.group(3) and not match.group(2)):
        raise FlagValueError(
            f"invalid memory size {text!r}: use a number with an optional unit "
            "(b, k, m, g, t or p, in 1024 multiples), like 512m or 1.5g"
        )
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:  # pragma: no cover - the pattern only lets numbers through
        raise FlagValueError(f"invalid memory size {text!r}") from None
    size = int(number * _MEMORY_UNITS[match.group(2).lower()])
    if size > MAX_MEMORY_BYTES:
        raise FlagValueError(
            f"invalid memory size {text!r}: too large (at most {MAX_MEMORY_BYTES} bytes, "
            "8 EiB less one byte)"
        )
    return size


def format_nano_cpus(nanos: int) -> str:
    """nano_cpus as a number of CPUs: 500000000 -> 0.5."""
    whole, frac = divmod(nanos, NANO)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".")


def format_bytes(size: int) -> str:
    """Bytes as Docker shows memory: 512MiB, 1.5GiB, 100B."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.4g}{units[unit]}"


def parse_platform(text: str) -> types_pb2.Platform:
    """`--platform OS[/ARCH]`, such as linux/amd64 or linux (any architecture)."""
    parts = text.strip().split("/")
    if len(parts) > 2 or not any(p.strip() for p in parts):
        raise FlagValueError(
            f"invalid platform {text!r}: expected OS[/ARCH], like linux/amd64 or linux"
        )
    os_name = parts[0].strip()
    arch = parts[1].strip() if len(parts) == 2 else ""
    return types_pb2.Platform(os=os_name, architecture=arch)


def format_platform(platform: types_pb2.Platform) -> str:
    """`linux/amd64`, `linux` or `/arm64`."""
    if platform.architecture:
        return f"{platform.os}/{platform.architecture}"
    return platform.os


def parse_placement_strategy(text: str) -> specs_pb2.PlacementStrategy.ValueType:
    try:
        return _STRATEGIES[text.strip().lower()]
    except KeyError:
        raise FlagValueError(
            f"invalid placement strategy {text!r}: use spread or binpack"
        ) from None


def placement_strategy_name(strategy: int) -> str:
    for name, value in _STRATEGIES.items():
        if value == strategy:
            return name
    return str(strategy)


def parse_bool(text: str) -> bool:
    """`true` or `false` (also 1/0, t/f), as Docker's boolean flag values."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FlagValueError(f"invalid boolean {text!r}: use true or false")


def parse_positive_duration(text: str) -> Duration:
    """A duration that must be more than zero (a heartbeat period)."""
    value = parse_duration_value(text)
    if value.seconds <= 0 and value.nanos <= 0:
        raise FlagValueError(f"invalid duration {text!r}: must be more than 0")
    return value


_FAILURE_ACTIONS = {
    "pause": specs_pb2.UPDATE_FAILURE_ACTION_PAUSE,
    "continue": specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE,
    "rollback": specs_pb2.UPDATE_FAILURE_ACTION_ROLLBACK,
}
_UPDATE_ORDERS = {
    "stop-first": specs_pb2.UPDATE_ORDER_STOP_FIRST,
    "start-first": specs_pb2.UPDATE_ORDER_START_FIRST,
}


def parse_failure_action(text: str) -> specs_pb2.UpdateFailureAction.ValueType:
    """`--update-failure-action`: pause, continue or rollback."""
    try:
        return _FAILURE_ACTIONS[text.strip().lower()]
    except KeyError:
        raise FlagValueError(
            f"invalid failure action {text!r}: use pause, continue or rollback"
        ) from None


def parse_rollback_failure_action(text: str) -> specs_pb2.UpdateFailureAction.ValueType:
    """`--rollback-failure-action`: pause or continue (a rollback does not roll back)."""
    value = text.strip().lower()
    if value not in ("pause", "continue"):
        raise FlagValueError(f"invalid failure action {text!r}: use pause or continue")
    return _FAILURE_ACTIONS[value]


def failure_action_name(action: int) -> str:
    for name, value in _FAILURE_ACTIONS.items():
        if value == action:
            return name
    return str(action)


def parse_update_order(text: str) -> specs_pb2.UpdateOrder.ValueType:
    """`--update-order`: stop-first (the old task stops before the new one starts) or
    start-first (the new one starts beside the old one)."""
    try:
        return _UPDATE_ORDERS[text.strip().lower()]
    except KeyError:
        raise FlagValueError(
            f"invalid update order {text!r}: use stop-first or start-first"
        ) from None


def update_order_name(order: int) -> str:
    for name, value in _UPDATE_ORDERS.items():
        if value == order:
            return name
    return str(order)


def parse_failure_ratio(text: str) -> float:
    """`--update-max-failure-ratio`: the share of failed tasks tolerated, 0 to 1."""
    try:
        ratio = float(text.strip())
    except ValueError:
        raise FlagValueError(
            f"invalid failure ratio {text!r}: use a number from 0 to 1, like 0.25"
        ) from None
    if not 0 <= ratio <= 1:
        raise FlagValueError(f"invalid failure ratio {text!r}: use a number from 0 to 1")
    return ratio


def parse_health_retries(text: str) -> int:
    return parse_count(text, "health retries", INT32_MAX)


def parse_timestamp(text: str, now: float | None = None) -> float:
    """`--since`/`--until`: seconds since the epoch, from a duration before `now` (10m,
    1h30m), an RFC 3339 time (2026-11-28T01:02:03Z, with or without a fraction or
    offset; a date alone is midnight UTC) or a Unix timestamp (1700000000.5)."""
    value = text.strip()
    if not value:
        raise FlagValueError("invalid time '': use a duration like 10m, or an RFC 3339 time")
    clock = time.time() if now is None else now
    if _UNIX_TIME.match(value):
        return float(value)
    with contextlib.suppress(ValueError):
        return clock - parse_duration(value)
    try:
        when = _parse_rfc3339(value)
    except ValueError:
        raise FlagValueError(
            f"invalid time {text!r}: use a duration like 10m or 1h30m, an RFC 3339 time like "
            "2026-11-28T01:02:03Z, or a Unix timestamp"
        ) from None
    return when


def is_duration(text: str) -> bool:
    """Whether a --since/--until value is a duration (10m) rather than a time."""
    value = text.strip()
    if _UNIX_TIME.match(value):
        return False
    try:
        parse_duration(value)
    except ValueError:
        return False
    return True


def parse_until(text: str, now: float | None = None) -> float:
    """`--until`: seconds since the epoch, from a duration after `now` (5s) or a time
    (RFC 3339 or Unix, as --since takes them)."""
    clock = time.time() if now is None else now
    if is_duration(text):
        return clock + parse_duration(text)
    return parse_timestamp(text, clock)


_UNIX_TIME = re.compile(r"^\d{9,}(?:\.\d+)?$")
_FRACTION = re.compile(r"\.(\d+)")


def _parse_rfc3339(value: str) -> float:
    """An RFC 3339 time as seconds; without an offset it is UTC (as Docker reads it)."""
    text = value.replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    nanos = 0
    match = _FRACTION.search(text)
    if match:
        digits = match.group(1)
        nanos = int(digits[:9].ljust(9, "0"))
        text = text[: match.start()] + text[match.end() :]
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp() + nanos / 1e9
