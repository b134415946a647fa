"""A service's networks and published ports, checked against the rest of the cluster.

`validation` checks a spec on its own; what depends on other stored objects is here:
- the networks a service joins (`--network`) are resolved from the names or id
  prefixes the operator typed to the networks' ids, the form the spec is stored in
  (refusing an unknown network, the ingress network, and one network given twice);
- a port published in ingress mode answers on every node, so no other service may
  publish the same port and protocol (in its spec, or as the allocator picked it).
"""

from __future__ import annotations

from collections.abc import Iterable

from common.api import objects_pb2, specs_pb2, types_pb2
from manager.controlapi.networks import find_network
from manager.grpc_errors import FailedPreconditionError, InvalidArgumentError
from manager.store import Cache

INGRESS_BY_NETWORK = (
    "the ingress network is joined through published ports (-p), not --network: "
    "publish a port in ingress mode instead"
)


def resolve_networks(cache: Cache, spec: specs_pb2.ServiceSpec) -> None:
    """Set every attachment's target of `spec` to its network's id (in place)."""
    seen: dict[str, str] = {}
    for attachment in spec.task.networks:
        typed = attachment.target
        network = find_network(cache, typed)  # NotFound naming it, or ambiguous
        name = network.spec.annotations.name
        if network.spec.ingress:
            raise InvalidArgumentError(f"network {typed!r}: {INGRESS_BY_NETWORK}")
        if network.id in seen:
            also = "" if seen[network.id] == typed else f" (as {seen[network.id]!r} and {typed!r})"
            raise InvalidArgumentError(
                f"network {name!r} is given twice{also}: attach a service to a network once, "
                "with all its aliases (name=NET,alias=A,alias=B)"
            )
        seen[network.id] = typed
        attachment.target = network.id


def _protocol(port: types_pb2.PortConfig) -> str:
    return types_pb2.PortProtocol.Name(port.protocol).removeprefix("PORT_PROTOCOL_").lower()


def _published(service: objects_pb2.Service) -> Iterable[types_pb2.PortConfig]:
    """Every port `service` publishes with a number: asked for in its spec, or given by
    the allocator (a port of 0 that it has picked)."""
    yield from (p for p in service.spec.endpoint.ports if p.published_port)
    yield from (p for p in service.endpoint.ports if p.published_port)


def check_port_conflicts(cache: Cache, spec: specs_pb2.ServiceSpec, service_id: str) -> None:
    """Refuse a published port that clashes with another service's ingress port.

    An ingress port is taken on every node, so it clashes with the same port and
    protocol published by any other service, in either mode; a host port clashes with
    another service's ingress port. (Two services may each publish a port in host mode:
    the scheduler keeps their tasks on different nodes.)
    """
    wanted = [p for p in spec.endpoint.ports if p.published_port]
    if not wanted:
        return
    for other in cache.services.values():
        if other.id == service_id:
            continue
        for theirs in _published(other):
            for mine in wanted:
                if (mine.published_port, mine.protocol) != (theirs.published_port, theirs.protocol):
                    continue
                ingress = types_pb2.PUBLISH_MODE_INGRESS
                if ingress not in (mine.publish_mode, theirs.publish_mode):
                    continue
                mode = "an ingress" if theirs.publish_mode == ingress else "a host-mode"
                raise FailedPreconditionError(
                    f"port {mine.published_port}/{_protocol(mine)} is already in use by "
                    f"service {other.spec.annotations.name!r} ({other.id}) as {mode} port: "
                    "publish another port, or take it off that service first "
                    "(service update --publish-rm)"
                )
