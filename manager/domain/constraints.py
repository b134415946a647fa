"""Placement constraints: `KEY==VALUE` and `KEY!=VALUE` on node attributes, as Swarm has them.

Keys: node.id, node.hostname, node.ip (an address or a CIDR range), node.role
(manager|worker), node.platform.os, node.platform.arch, node.labels.KEY and
engine.labels.KEY. Values are compared without regard to case, as SwarmKit does.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from common.api import objects_pb2, types_pb2
from manager.domain.platforms import normalise_arch

_EXPR = re.compile(r"^\s*([^=!\s]+)\s*(==|!=)\s*(.*?)\s*$")
KNOWN_KEYS = (
    "node.id",
    "node.hostname",
    "node.ip",
    "node.role",
    "node.platform.os",
    "node.platform.arch",
    "node.labels.KEY",
    "engine.labels.KEY",
)


class NodeView(Protocol):
    """A node with its labels copied into dicts (the scheduler's NodeInfo): reading a
    label through the protobuf map costs about ten times a dict look-up."""

    @property
    def node(self) -> objects_pb2.Node: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def engine_labels(self) -> Mapping[str, str]: ...


class ConstraintError(ValueError):
    """A constraint expression that cannot be used; the message names it."""


@dataclass(frozen=True)
class Constraint:
    """One parsed constraint: the node's `key` equals `value` (`equal`) or differs."""

    key: str
    equal: bool
    value: str

    def matches(self, node: objects_pb2.Node) -> bool:
        if self.key == "node.ip":
            return self._ip_matches(node.status.addr) == self.equal
        return self.matcher()(node)

    def matcher(self) -> Callable[[objects_pb2.Node], bool]:
        """`matches`, with the key's look-up and the value's case folded once."""
        if self.key == "node.ip":
            return self.matches
        get = attribute_getter(self.key)
        value = normalise_arch(self.value) if self.key == "node.platform.arch" else self.value
        want, equal = value.lower(), self.equal

        def match(node: objects_pb2.Node) -> bool:
            actual = get(node)
            if actual is None:
                return not equal  # a missing label never equals anything, always differs
            return (actual.lower() == want) == equal

        return match

    def info_matcher(self) -> Callable[[NodeView], bool]:
        """`matcher` for a NodeView: labels come from its dicts, not the protobuf maps."""
        if self.key == "node.ip":
            node_match = self.matches
            return lambda info: node_match(info.node)
        get = info_getter(self.key)
        value = normalise_arch(self.value) if self.key == "node.platform.arch" else self.value
        want, equal = value.lower(), self.equal

        def match(info: NodeView) -> bool:
            actual = get(info)
            if actual is None:
                return not equal
            return (actual.lower() == want) == equal

        return match

    def _ip_matches(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        if "/" in self.value:
            return ip in ipaddress.ip_network(self.value, strict=False)
        return ip == ipaddress.ip_address(self.value)


def node_attribute(node: objects_pb2.Node, key: str) -> str | None:
    """The value of `key` for `node`; None for a label the node does not have."""
    if key == "node.id":
        return node.id
    if key == "node.hostname":
        return node.description.hostname
    if key == "node.role":
        return "manager" if node.role == types_pb2.NODE_ROLE_MANAGER else "worker"
    if key == "node.platform.os":
        return node.description.platform.os
    if key == "node.platform.arch":
        return normalise_arch(node.description.platform.architecture)
    if key.startswith("node.labels."):
        value: str | None = node.spec.annotations.labels.get(key[len("node.labels.") :])
        return value
    if key.startswith("engine.labels."):
        engine: str | None = node.description.engine.labels.get(key[len("engine.labels.") :])
        return engine
    return None


def attribute_getter(key: str) -> Callable[[objects_pb2.Node], str | None]:
    """node_attribute(node, key) for one key, with the key's look-up chosen once."""
    if key.startswith("node.labels."):
        label = key[len("node.labels.") :]
        return lambda node: node.spec.annotations.labels.get(label)
    if key.startswith("engine.labels."):
        label = key[len("engine.labels.") :]
        return lambda node: node.description.engine.labels.get(label)
    return lambda node: node_attribute(node, key)


def info_getter(key: str) -> Callable[[NodeView], str | None]:
    """attribute_getter for a NodeView, reading labels from the view's dicts."""
    if key.startswith("node.labels."):
        label = key[len("node.labels.") :]
        return lambda info: info.labels.get(label)
    if key.startswith("engine.labels."):
        label = key[len("engine.labels.") :]
        return lambda info: info.engine_labels.get(label)
    return lambda info: node_attribute(info.node, key)


def parse(expr: str) -> Constraint:
    match = _EXPR.match(expr)
    if match is None:
        raise ConstraintError(
            f"invalid constraint {expr!r}: write KEY==VALUE or KEY!=VALUE, e.g. "
            "node.labels.zone==east"
        )
    key, op, value = match.groups()
    if not value:
        raise ConstraintError(f"invalid constraint {expr!r}: no value after {op}")
    known = key in KNOWN_KEYS[:6] or (
        key.startswith(("node.labels.", "engine.labels.")) and key.split(".", 2)[2]
    )
    if not known:
        raise ConstraintError(
            f"invalid constraint {expr!r}: unknown key {key!r}; use one of " + ", ".join(KNOWN_KEYS)
        )
    if key == "node.ip":
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ConstraintError(
                f"invalid constraint {expr!r}: {value!r} is not an IP address or CIDR range"
            ) from None
    if key == "node.role" and value.lower() not in ("manager", "worker"):
        raise ConstraintError(f"invalid constraint {expr!r}: node.role is manager or worker")
    return Constraint(key, op == "==", value)


def parse_all(exprs: list[str] | tuple[str, ...]) -> list[Constraint]:
    return [parse(e) for e in exprs]


@lru_cache(maxsize=1024)
def parsed(exprs: tuple[str, ...]) -> list[Constraint]:
    """parse_all for constraints already validated (stored specs): a service's tasks
    share them, so each list is parsed once. Do not change the list returned."""
    return parse_all(exprs)


def spread_value(node: objects_pb2.Node, descriptor: str) -> str:
    """The node's value for a spread preference; "" groups the nodes without it."""
    return node_attribute(node, descriptor) or ""


def check_spread_descriptor(descriptor: str) -> None:
    if not (
        descriptor.startswith(("node.labels.", "engine.labels.")) and descriptor.split(".", 2)[2]
    ):
        raise ConstraintError(
            f"invalid placement preference spread={descriptor!r}: spread over node.labels.KEY "
            "or engine.labels.KEY"
        )
