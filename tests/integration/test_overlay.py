"""Overlay networks on one host, end to end: a network made with swarmctl, two services
on it, and from inside a task the other service's name resolves to its virtual IP
(`tasks.NAME` to its tasks) and connections to it reach every replica; what the data
plane made is gone once the services and the network are.

The real manager (allocator, dispatcher), the real agent (data plane, DNS, nftables)
and the real engine; the multi-host cases are in tests/cluster."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Cluster, start_cluster
from tests.harness import SLEEPER, remove_overlays, wait_until

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft (apt-get install nftables)"),
]

IMAGE = "swarmlet/demo:latest"


@pytest.fixture
def overlay_cluster(docker_client: Any, docker_host: str) -> Iterator[Cluster]:
    remove_overlays(docker_client)
    c = None
    try:
        c = start_cluster(docker_client, docker_host)
        yield c
    finally:
        if c is not None:
            c.agent.cleanup(docker_client)
            c.manager.cleanup()
        remove_overlays(docker_client)


def exec_in(cluster: Cluster, service: str, command: str) -> str:
    (container,) = cluster.containers(service)[:1]
    result = container.exec_run(["sh", "-c", command])
    return str(result.output.decode(errors="replace"))


def test_services_reach_each_other_by_name_through_a_virtual_ip(
    overlay_cluster: Cluster,
) -> None:
    c = overlay_cluster
    c.ctl("network", "create", "front", check=True)
    c.ctl("service", "create", "-d", "--name", "web", "--replicas", "2", "--network", "front",
          IMAGE, check=True)  # fmt: skip
    c.ctl("service", "create", "-d", "--name", "client", "--network", "front", SLEEPER,
          check=True)  # fmt: skip
    wait_until(lambda: len(c.manager.running_tasks_named("web")) == 2, 60, what="web running")
    wait_until(lambda: len(c.manager.running_tasks_named("client")) == 1, 60, what="client")

    web = c.manager.service("web")
    (vip,) = [v.addr.split("/")[0] for v in web.endpoint.virtual_ips]
    wait_until(lambda: vip in exec_in(c, "client", "nslookup web"), 20, what="web resolves")
    tasks = exec_in(c, "client", "nslookup tasks.web")
    addresses = [
        a.addresses[0].split("/")[0]
        for t in c.manager.running_tasks_named("web")
        for a in t.networks
    ]
    assert all(a in tasks for a in addresses), (tasks, addresses)

    served: set[str] = set()
    for _ in range(20):
        page = exec_in(c, "client", r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80")
        served.update(line.split()[-1] for line in page.splitlines() if "served by" in line)
    assert len(served) == 2, served  # both replicas answer through the virtual IP

    # Gone with the services and the network: no engine network left.
    c.ctl("service", "rm", "web", "client", check=True)
    wait_until(lambda: not c.containers("web") and not c.containers("client"), 60,
               what="containers removed")  # fmt: skip
    wait_until(lambda: c.ctl("network", "rm", "front").returncode == 0, 30, what="network removed")
    wait_until(
        lambda: not c.docker.networks.list(filters={"label": "swarmlet.network.id"}),
        30,
        what="the engine network removed",
    )
