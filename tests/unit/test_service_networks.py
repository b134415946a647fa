"""A service's networks and ingress ports checked against the cluster
(manager/controlapi/service_networks.py), on a real Cache fed the objects."""

from __future__ import annotations

import pytest

from common.api import objects_pb2, specs_pb2, types_pb2
from manager.controlapi.service_networks import check_port_conflicts, resolve_networks
from manager.grpc_errors import FailedPreconditionError, InvalidArgumentError
from manager.store import Cache, NotFoundError
from tests.fakes import Stored, offline_cache
from tests.unit import factories as f

INGRESS, HOST = types_pb2.PUBLISH_MODE_INGRESS, types_pb2.PUBLISH_MODE_HOST
TCP, UDP = types_pb2.PORT_PROTOCOL_TCP, types_pb2.PORT_PROTOCOL_UDP


def network(net_id: str, name: str, *, ingress: bool = False) -> objects_pb2.Network:
    net = objects_pb2.Network(id=net_id)
    net.spec.annotations.name = name
    net.spec.driver = "overlay"
    net.spec.ingress = ingress
    return net


def cache_of(*objs: Stored) -> Cache:
    return offline_cache(*objs)


NETWORKS = (
    network("frontid0000000000000000001", "front"),
    network("backid00000000000000000002", "back"),
    network("ingressid00000000000000003", "ingress", ingress=True),
)


def joining(*targets: str, aliases: tuple[str, ...] = ()) -> specs_pb2.ServiceSpec:
    spec = f.service().spec
    for target in targets:
        spec.task.networks.add(target=target, aliases=aliases)
    return spec


def test_names_and_id_prefixes_become_ids_and_aliases_stay() -> None:
    spec = joining("front", "backid", aliases=("api",))
    resolve_networks(cache_of(*NETWORKS), spec)
    assert [(n.target, list(n.aliases)) for n in spec.task.networks] == [
        ("frontid0000000000000000001", ["api"]),
        ("backid00000000000000000002", ["api"]),
    ]
    # A stored spec (ids already) resolves to itself: updates and rollbacks re-check it.
    again = specs_pb2.ServiceSpec()
    again.CopyFrom(spec)
    resolve_networks(cache_of(*NETWORKS), again)
    assert again == spec


def test_unknown_network_is_not_found_naming_it() -> None:
    with pytest.raises(NotFoundError) as err:
        resolve_networks(cache_of(*NETWORKS), joining("front", "nosuchnet"))
    assert "network 'nosuchnet' not found" in str(err.value)


def test_ambiguous_id_prefix_is_refused() -> None:
    cache = cache_of(network("dup0000000000000000000001", "one"), network("dup2", "two"))
    with pytest.raises(InvalidArgumentError) as err:
        resolve_networks(cache, joining("dup"))
    assert "network id prefix 'dup' is ambiguous" in str(err.value)


def test_the_ingress_network_is_joined_through_published_ports() -> None:
    for ref in ("ingress", "ingressid"):
        with pytest.raises(InvalidArgumentError) as err:
            resolve_networks(cache_of(*NETWORKS), joining(ref))
        assert str(err.value) == (
            f"network {ref!r}: the ingress network is joined through published ports (-p), "
            "not --network: publish a port in ingress mode instead"
        )


@pytest.mark.parametrize(
    ("refs", "message"),
    [
        (("front", "front"), "network 'front' is given twice: attach"),
        (("front", "frontid"), "network 'front' is given twice (as 'front' and 'frontid')"),
    ],
)
def test_the_same_network_twice_is_refused(refs: tuple[str, str], message: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        resolve_networks(cache_of(*NETWORKS), joining(*refs))
    assert message in str(err.value)
    assert "name=NET,alias=A,alias=B" in str(err.value)


def publishing(
    service_id: str, name: str, *ports: tuple[int, int, int, int]
) -> objects_pb2.Service:
    """A service publishing (published, target, mode, protocol) ports in its spec."""
    svc = f.service(service_id=service_id, name=name)
    for published, target, mode, protocol in ports:
        svc.spec.endpoint.ports.add(
            published_port=published, target_port=target, publish_mode=mode, protocol=protocol
        )
    return svc


def test_an_ingress_port_another_service_publishes_is_refused_naming_it() -> None:
    web = publishing("webid", "web", (8080, 80, INGRESS, TCP))
    mine = publishing("newid", "new", (8080, 8000, INGRESS, TCP)).spec
    with pytest.raises(FailedPreconditionError) as err:
        check_port_conflicts(cache_of(web), mine, "newid")
    assert str(err.value) == (
        "port 8080/tcp is already in use by service 'web' (webid) as an ingress port: "
        "publish another port, or take it off that service first (service update --publish-rm)"
    )


def test_a_port_the_allocator_picked_for_another_service_is_refused() -> None:
    web = publishing("webid", "web", (0, 80, INGRESS, TCP))
    web.endpoint.spec.CopyFrom(web.spec.endpoint)
    web.endpoint.ports.add(published_port=30000, target_port=80, publish_mode=INGRESS)
    mine = publishing("newid", "new", (30000, 80, INGRESS, TCP)).spec
    with pytest.raises(FailedPreconditionError, match="service 'web'"):
        check_port_conflicts(cache_of(web), mine, "newid")


def test_host_and_ingress_ports_of_one_number_clash_both_ways() -> None:
    host = publishing("hostid", "hosty", (9000, 80, HOST, TCP))
    with pytest.raises(FailedPreconditionError, match=r"service 'hosty' .* as a host-mode port"):
        check_port_conflicts(
            cache_of(host), publishing("n", "n", (9000, 80, INGRESS, TCP)).spec, "n"
        )
    ingress = publishing("ingid", "mesh", (9000, 80, INGRESS, TCP))
    with pytest.raises(FailedPreconditionError, match=r"service 'mesh' .* as an ingress port"):
        check_port_conflicts(
            cache_of(ingress), publishing("n", "n", (9000, 80, HOST, TCP)).spec, "n"
        )


def test_what_does_not_clash() -> None:
    others = cache_of(
        publishing("a", "a", (8080, 80, INGRESS, TCP)),
        publishing("b", "b", (9000, 80, HOST, TCP)),
    )
    fine = [
        publishing("a", "a", (8080, 80, INGRESS, TCP)),  # the service itself, on update
        publishing("n", "n", (8080, 80, INGRESS, UDP)),  # another protocol
        publishing("n", "n", (9000, 80, HOST, TCP)),  # host ports: different nodes
        publishing("n", "n", (0, 80, INGRESS, TCP)),  # the allocator picks a free one
        publishing("n", "n", (8081, 80, INGRESS, TCP)),
    ]
    for svc in fine:
        check_port_conflicts(others, svc.spec, svc.id)
