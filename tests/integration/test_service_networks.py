"""Services on networks, end to end through swarmctl and a real manager: --network on
create, --network-add/--network-rm and --endpoint-mode on update, ingress ports, and
what is refused (with a proper gRPC status), as Docker has them.

The allocator is not wired into the manager yet: nothing here looks at virtual IPs or
task addresses (tests/unit/test_swarmctl_output.py shows those), and the services run
no tasks (--replicas 0), so that no task waits on an allocation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from common.api import control_pb2, specs_pb2, types_pb2
from tests.conftest import Cluster
from tests.harness import SLEEPER

pytestmark = pytest.mark.docker


def assert_refused(result: Any, *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def nets(cluster: Cluster, name: str) -> Iterator[dict[str, str]]:
    """Two networks made with `swarmctl network create`: name -> id."""
    out = {}
    for suffix in ("front", "back"):
        net = f"{name}-{suffix}"
        out[net] = cluster.ctl("network", "create", net, check=True).stdout.strip()
    yield out
    for svc in cluster.manager.api().ListServices(control_pb2.ListServicesRequest()).services:
        if svc.spec.annotations.name.startswith(name):
            cluster.ctl("service", "rm", svc.id)
    for net in out:
        cluster.ctl("network", "rm", net)


def create(cluster: Cluster, name: str, *flags: str) -> Any:
    return cluster.ctl(
        "service", "create", "-d", "--name", name, "--replicas", "0", *flags, SLEEPER
    )


def stored(cluster: Cluster, ref: str) -> Any:
    api = cluster.manager.api()
    return api.GetService(control_pb2.GetServiceRequest(service_id=ref)).service


def test_create_joins_networks_by_id_and_inspect_shows_them(
    cluster: Cluster, name: str, nets: dict[str, str]
) -> None:
    front, back = list(nets)
    create(
        cluster,
        name,
        "--network", front,
        "--network", f"name={nets[back][:12]},alias=api,alias=v1",
        "--endpoint-mode", "dnsrr",
        "-p", "mode=host,target=80,published=18081",
    ).check_returncode()  # fmt: skip
    svc = stored(cluster, name)
    assert [(n.target, list(n.aliases)) for n in svc.spec.task.networks] == [
        (nets[front], []),
        (nets[back], ["api", "v1"]),
    ]
    assert svc.spec.endpoint.mode == specs_pb2.RESOLUTION_MODE_DNSRR

    (data,) = json.loads(cluster.ctl("service", "inspect", name, check=True).stdout)
    assert [n["target"] for n in data["spec"]["task"]["networks"]] == [nets[front], nets[back]]
    lines = cluster.ctl("service", "inspect", "--pretty", name, check=True).stdout.splitlines()
    assert f"Networks:       {front} {back}" in lines
    assert f" Aliases on {back}: api, v1" in lines
    assert "Endpoint Mode:  dnsrr" in lines
    assert "  PublishMode = host" in lines

    # The network knows its user: `network rm` names the service.
    assert_refused(cluster.ctl("network", "rm", front), f"in use by service {name}")


def test_update_adds_and_removes_networks_in_a_rolling_update(
    cluster: Cluster, name: str, nets: dict[str, str]
) -> None:
    front, back = list(nets)
    create(cluster, name, "--network", front).check_returncode()
    before = stored(cluster, name)

    cluster.ctl(
        "service", "update", "-d", "--network-rm", front, "--network-add",
        f"name={back},alias=db", "--endpoint-mode", "dnsrr", name, check=True,
    )  # fmt: skip
    after = stored(cluster, name)
    assert [(n.target, list(n.aliases)) for n in after.spec.task.networks] == [(nets[back], ["db"])]
    assert after.spec.endpoint.mode == specs_pb2.RESOLUTION_MODE_DNSRR
    # A task-template change: a new spec version and a rollout, with the old spec kept.
    assert after.spec_version == before.spec_version + 1
    assert after.update_status.state in (
        after.update_status.UPDATE_STATE_UPDATING,
        after.update_status.UPDATE_STATE_COMPLETED,
    )
    assert after.previous_spec.task.networks[0].target == nets[front]

    # Docker's words for a network attached already; an unknown one is not found.
    assert_refused(
        cluster.ctl("service", "update", "-d", "--network-add", back, name),
        f"service is already attached to network {back}",
    )
    assert_refused(
        cluster.ctl("service", "update", "-d", "--network-add", f"{name}-nosuch", name),
        f"network '{name}-nosuch' not found",
    )
    assert stored(cluster, name).meta.version == after.meta.version

    # Rollback brings the previous networks back (checked against the cluster again).
    cluster.ctl("service", "rollback", "-d", name, check=True)
    rolled = stored(cluster, name)
    assert [n.target for n in rolled.spec.task.networks] == [nets[front]]
    assert rolled.spec.endpoint.mode == specs_pb2.RESOLUTION_MODE_VIP


def test_bad_networks_are_refused_with_proper_codes(
    cluster: Cluster, name: str, nets: dict[str, str]
) -> None:
    front, _ = list(nets)
    assert_refused(create(cluster, name, "--network", f"{name}-nosuch"), "not found")
    assert_refused(
        create(cluster, name, "--network", front, "--network", nets[front][:10]),
        f"network '{front}' is given twice",
    )
    assert_refused(
        create(cluster, name, "--network", f"name={front},alias=bad alias"),
        "invalid alias 'bad alias'",
    )
    assert_refused(
        create(cluster, name, "--network", f"name={front},driver-opt=x=y"),
        "Invalid value for '--network'",
        "driver-opt is not supported",
    )
    api = cluster.manager.api()
    for target, code in (
        (f"{name}-nosuch", grpc.StatusCode.NOT_FOUND),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
    ):
        spec = specs_pb2.ServiceSpec()
        spec.annotations.name = name
        spec.task.container.image = SLEEPER
        spec.task.networks.add(target=target)
        with pytest.raises(grpc.RpcError) as err:
            api.CreateService(control_pb2.CreateServiceRequest(spec=spec))
        assert err.value.code() == code, err.value.details()
    names = {
        s.spec.annotations.name
        for s in api.ListServices(control_pb2.ListServicesRequest()).services
    }
    assert name not in names


def test_ingress_ports(cluster: Cluster, name: str, nets: dict[str, str]) -> None:
    first, second = f"{name}-a", f"{name}-b"
    create(cluster, first, "-p", "mode=ingress,published=18080,target=80").check_returncode()
    svc = stored(cluster, first)
    (port,) = svc.spec.endpoint.ports
    assert (port.publish_mode, port.published_port) == (types_pb2.PUBLISH_MODE_INGRESS, 18080)
    rows = cluster.ctl("service", "ls", "-f", f"name={first}", check=True).stdout
    assert "*:18080->80/tcp" in rows

    # Another service may not publish it, in either mode; FailedPrecondition names it.
    for flag in ("mode=ingress,published=18080,target=8080", "mode=host,published=18080,target=80"):
        assert_refused(
            create(cluster, second, "-p", flag),
            f"port 18080/tcp is already in use by service '{first}'",
        )
    spec = specs_pb2.ServiceSpec()
    spec.CopyFrom(svc.spec)
    spec.annotations.name = second
    with pytest.raises(grpc.RpcError) as err:
        cluster.manager.api().CreateService(control_pb2.CreateServiceRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Another protocol is another port; the service itself may keep its own on update.
    create(
        cluster, second, "-p", "mode=ingress,published=18080,target=53,protocol=udp"
    ).check_returncode()
    cluster.ctl("service", "update", "-d", "--env-add", "A=1", first, check=True)

    # Docker's rule: no ingress port in dnsrr mode, on create or update.
    assert_refused(
        create(cluster, f"{name}-c", "--endpoint-mode", "dnsrr", "-p", "mode=ingress,target=80"),
        "port published with ingress mode can't be used with dnsrr mode",
    )
    assert_refused(
        cluster.ctl("service", "update", "-d", "--endpoint-mode", "dnsrr", first),
        "port published with ingress mode can't be used with dnsrr mode",
    )
    # Once it is taken off, the port is free for another service.
    cluster.ctl("service", "update", "-d", "--publish-rm", "80", first, check=True)
    create(cluster, f"{name}-d", "-p", "mode=ingress,published=18080,target=80").check_returncode()
