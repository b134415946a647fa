"""Control API logic for networks: create, get, list, remove, prune.

A network is stored with its spec only; the allocator gives it its subnet and VXLAN id
(a subnet the user chose is checked here first, so an overlap is refused before
anything is written). A network that a service uses cannot be removed, and the ingress
network, the routing mesh's, is built in.
"""

from __future__ import annotations

import ipaddress
import re

from common.api import control_pb2, objects_pb2, specs_pb2
from common.ids import new_id
from manager.allocator.ipam import AllocationError, parse_subnet
from manager.controlapi.filters import labels_match
from manager.controlapi.resolve import resolve
from manager.domain.networks import ingress_ports
from manager.grpc_errors import FailedPreconditionError, InvalidArgumentError
from manager.store import Cache, Kind
from manager.store.views import ObjectWriter

DRIVER = "overlay"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def find_network(cache: Cache, ref: str) -> objects_pb2.Network:
    return resolve("network", cache.networks, ref, lambda n: n.spec.annotations.name)


def users_of(cache: Cache, network: objects_pb2.Network) -> list[str]:
    """The names of the services whose tasks join `network`."""
    names = []
    for service in cache.services.values():
        joins = any(n.target == network.id for n in service.spec.task.networks)
        if network.spec.ingress:
            joins = joins or bool(ingress_ports(service.spec.endpoint))
        if joins:
            names.append(service.spec.annotations.name)
    return sorted(names)


def _subnet_of(network: objects_pb2.Network) -> ipaddress.IPv4Network | None:
    text = network.allocation.subnet or network.spec.ipam.subnet
    return ipaddress.IPv4Network(text) if text else None


def validate_network_spec(cache: Cache, spec: specs_pb2.NetworkSpec) -> None:
    """Refuse what cannot be made, naming what was wrong and what to do."""
    name = spec.annotations.name
    if not name:
        raise InvalidArgumentError("a network needs a name: swarmctl network create NAME")
    if not _NAME.match(name):
        raise InvalidArgumentError(
            f"invalid network name {name!r}: use letters, digits, '_', '.' and '-', "
            "starting with a letter or digit (at most 63 characters)"
        )
    if spec.driver not in ("", DRIVER):
        raise InvalidArgumentError(
            f"network driver {spec.driver!r} is not supported: swarmlet's networks span "
            f"nodes, use --driver {DRIVER} (the default)"
        )
    if spec.ingress:
        raise InvalidArgumentError(
            "the cluster has its ingress network already (the routing mesh's); create an "
            "overlay network without --ingress"
        )
    ipam = spec.ipam
    if ipam.gateway and not ipam.subnet:
        raise InvalidArgumentError("--gateway needs --subnet: give the subnet it belongs to")
    if not ipam.subnet:
        return
    try:
        subnet = parse_subnet(ipam.subnet)
    except AllocationError as exc:
        raise InvalidArgumentError(str(exc)) from None
    if ipam.gateway:
        try:
            gateway = ipaddress.IPv4Address(ipam.gateway)
        except ValueError:
            raise InvalidArgumentError(
                f"invalid gateway {ipam.gateway!r}: give an IPv4 address inside {subnet}"
            ) from None
        if gateway not in subnet or gateway in (subnet.network_address, subnet.broadcast_address):
            raise InvalidArgumentError(
                f"gateway {gateway} is not a host address of {subnet}: give one inside it"
            )
    for other in cache.networks.values():
        theirs = _subnet_of(other)
        if theirs is not None and theirs.overlaps(subnet):
            raise FailedPreconditionError(
                f"subnet {subnet} overlaps {theirs} of network "
                f"{other.spec.annotations.name!r}: choose another subnet, or leave --subnet "
                "out to get a free one"
            )


async def create_network(
    cache: Cache, store: ObjectWriter, request: control_pb2.CreateNetworkRequest
) -> control_pb2.CreateNetworkResponse:
    spec = specs_pb2.NetworkSpec()
    spec.CopyFrom(request.spec)
    validate_network_spec(cache, spec)
    spec.driver = DRIVER
    network = objects_pb2.Network(id=new_id(), spec=spec)
    created = await store.create(network, unique_name=spec.annotations.name)
    await cache.wait_for(created.meta.version)
    return control_pb2.CreateNetworkResponse(network=created)


def list_networks(
    cache: Cache, request: control_pb2.ListNetworksRequest
) -> control_pb2.ListNetworksResponse:
    f = request.filters
    out = control_pb2.ListNetworksResponse()
    for network in sorted(cache.networks.values(), key=lambda n: n.spec.annotations.name):
        if f.names and network.spec.annotations.name not in f.names:
            continue
        if f.id_prefixes and not any(network.id.startswith(p) for p in f.id_prefixes):
            continue
        if not labels_match(network.spec.annotations.labels, f.labels):
            continue
        out.networks.append(network)
    return out


async def _remove(cache: Cache, store: ObjectWriter, network: objects_pb2.Network) -> None:
    name = network.spec.annotations.name
    revision = await store.delete(
        Kind.NETWORK, network.id, also=[store.keys.name_key(Kind.NETWORK, name)]
    )
    await cache.wait_for(revision)


async def remove_network(
    cache: Cache, store: ObjectWriter, request: control_pb2.RemoveNetworkRequest
) -> control_pb2.RemoveNetworkResponse:
    network = find_network(cache, request.network_id)
    name = network.spec.annotations.name
    if network.spec.ingress:
        raise FailedPreconditionError(
            f"{name!r} is the cluster's ingress network (the routing mesh): it is built in "
            "and cannot be removed"
        )
    users = users_of(cache, network)
    if users:
        raise FailedPreconditionError(
            f"network {name!r} is in use by service{'s' if len(users) > 1 else ''} "
            f"{', '.join(users)}: remove {'them' if len(users) > 1 else 'it'} first, or "
            f"take the network off with service update --network-rm {name}"
        )
    await _remove(cache, store, network)
    return control_pb2.RemoveNetworkResponse()


async def prune_networks(
    cache: Cache, store: ObjectWriter, request: control_pb2.PruneNetworksRequest
) -> control_pb2.PruneNetworksResponse:
    out = control_pb2.PruneNetworksResponse()
    for network in list(cache.networks.values()):
        if network.spec.ingress or users_of(cache, network):
            continue
        await _remove(cache, store, network)
        out.removed.append(network.spec.annotations.name)
    return out
