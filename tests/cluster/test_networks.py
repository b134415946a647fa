"""Overlay networks across hosts on the local 3-host cluster: tasks on different hosts
talk over a network by name and through a virtual IP that reaches every replica; a port
published in ingress mode answers on every host, one without a task included (the
routing mesh, without IPVS); two networks cannot reach each other; nothing is left on
any host once the services and networks are gone."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from common.api import control_pb2
from tests.clusterlib import DOWN, READY, LocalCluster, fetch
from tests.harness import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.cluster]

PORT = 30080


def ns(n: int) -> str:
    return f"swl-h{n}"


def host_links(n: int) -> list[str]:
    out = subprocess.run(
        ["ip", "-n", ns(n), "-o", "link", "show"], capture_output=True, text=True, check=False
    ).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def container_of(cluster: LocalCluster, service: str) -> tuple[int, Any]:
    for n in cluster.hosts:
        found = cluster.docker(n).containers.list(
            filters={"label": f"swarmlet.service.name={service}", "status": "running"}
        )
        if found:
            return n, found[0]
    raise AssertionError(f"no running container of {service}")


def exec_in(container: Any, command: str) -> str:
    return str(container.exec_run(["sh", "-c", command]).output.decode(errors="replace"))


def served_by(page: str) -> str:
    lines = [line for line in page.splitlines() if "served by" in line]
    return lines[0].split()[-1] if lines else ""


@pytest.fixture
def networks(local_cluster: LocalCluster) -> Iterator[LocalCluster]:
    """The cluster; whatever the test made is removed afterwards, also when it fails."""
    c = local_cluster
    try:
        yield c
    finally:
        c.ctl("service", "rm", "web", "client", "lonely", check=False)
        wait_until(partial(_no_containers, c), 60, what="the services' containers to be gone")
        c.ctl("network", "rm", "front", "other", check=False)


def test_tasks_on_three_hosts_share_a_network_and_the_mesh_answers_everywhere(
    networks: LocalCluster,
) -> None:
    c = networks
    c.ctl("network", "create", "front")
    c.ctl("network", "create", "other")
    c.ctl(
        "service", "create", "--name", "web", "--replicas", "3", "--network", "front",
        "-p", f"mode=ingress,published={PORT},target=80", c.image(),
    )  # fmt: skip
    c.ctl("service", "create", "--name", "client", "--network", "front", c.image("sleeper"))
    c.ctl("service", "create", "--name", "lonely", "--network", "other", c.image())
    assert sorted(c.running_on_hosts("web").values()) == [1, 1, 1]

    # By name, through the virtual IP: every replica, on every host, answers.
    _, client = container_of(c, "client")
    request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80"
    wait_until(lambda: served_by(exec_in(client, request)), 30, what="web answers by name")
    seen = {served_by(exec_in(client, request)) for _ in range(30)}
    assert len(seen - {""}) == 3, seen

    # The routing mesh: the published port answers on every host's address, and
    # balances over the replicas on all hosts.
    for n in c.hosts:
        wait_until(partial(_answers, c.host_addr(n)), 30, what=f"h{n}:{PORT}")
    seen = {served_by(fetch(c.host_addr(n), PORT)) for n in c.hosts for _ in range(10)}
    assert len(seen) == 3, seen

    # Another network is out of reach: its names do not resolve, its addresses answer not.
    request_lonely = control_pb2.GetServiceRequest(service_id="lonely")
    lonely = c.tasks(c.api().GetService(request_lonely).service.id)
    addr = lonely[0].networks[0].addresses[0].split("/")[0]
    assert addr not in exec_in(client, "nslookup tasks.lonely 2>&1")
    out = exec_in(client, f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} 80")
    assert "served by" not in out, out

    # Gone with the last task and the networks: no bridge or VXLAN device on any host.
    c.ctl("service", "rm", "web", "client", "lonely")
    wait_until(partial(_no_containers, c), 60, what="the services' containers to be gone")
    c.ctl("network", "rm", "front", "other")
    for n in c.hosts:
        wait_until(partial(_no_overlays, n), 30, what=f"h{n}'s overlay devices to be gone")


def _answers(addr: str) -> bool:
    try:
        return bool(served_by(fetch(addr, PORT)))
    except OSError:
        return False


def _no_containers(c: LocalCluster) -> bool:
    return not any(c.running_on_hosts(s)[n] for s in ("web", "client", "lonely") for n in c.hosts)


def _no_overlays(n: int) -> bool:
    return not [x for x in host_links(n) if x.startswith(("swl-br-", "swl-vx-"))]


LOAD_PORT = 30081
# Requests through each path during the rollouts, one every LOAD_INTERVAL seconds.
LOAD_INTERVAL = 0.05


def _load_through_vip(client: Any, requests: int) -> str:
    """Requests to "web" by name from inside the client task; one FAIL line per failure."""
    script = (
        f"i=0; while [ $i -lt {requests} ]; do i=$((i+1)); "
        r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80 | grep -q 'served by' "
        f"|| echo FAIL; sleep {LOAD_INTERVAL}; done; echo DONE"
    )
    return exec_in(client, script)


def test_no_request_fails_during_rolling_updates_and_a_scale_down(
    networks: LocalCluster,
) -> None:
    """Issue 23: under a steady stream of requests through the virtual IP and through the
    routing mesh (on a host the update empties and fills), a stop-first update, a
    start-first update and a scale-down of a 4-replica service fail no request: a task
    leaves every node's rotation before its container stops, and joins once it runs."""
    c = networks
    c.ctl("network", "create", "front")
    c.ctl(
        "service", "create", "--name", "web", "--replicas", "4", "--network", "front",
        "--update-parallelism", "1", "--update-delay", "1s",
        "-p", f"mode=ingress,published={LOAD_PORT},target=80", c.image(),
    )  # fmt: skip
    c.ctl("service", "create", "--name", "client", "--network", "front", c.image("sleeper"))
    _, client = container_of(c, "client")
    request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 web 80"
    wait_until(lambda: served_by(exec_in(client, request)), 30, what="web answers by name")
    for n in c.hosts:
        wait_until(partial(_answers_on, c.host_addr(n), LOAD_PORT), 30, what=f"h{n} mesh")

    failures: list[str] = []
    stop = threading.Event()

    def mesh_load() -> None:
        hosts = [c.host_addr(n) for n in c.hosts]
        i = 0
        while not stop.is_set():
            addr = hosts[i % len(hosts)]
            i += 1
            try:
                if not served_by(fetch(addr, LOAD_PORT, timeout=3)):
                    failures.append(f"mesh {addr}: no page")
            except OSError as exc:
                failures.append(f"mesh {addr}: {exc}")
            time.sleep(LOAD_INTERVAL)

    vip_out: list[str] = []
    mesh = threading.Thread(target=mesh_load, daemon=True)
    # The VIP load runs as long as the three changes take (about 60 s), then stops.
    vip = threading.Thread(
        target=lambda: vip_out.append(_load_through_vip(client, 900)), daemon=True
    )
    mesh.start()
    vip.start()
    try:
        c.ctl("service", "update", "--force", "--update-order", "stop-first", "web", timeout=180)
        c.ctl("service", "update", "--force", "--update-order", "start-first", "web", timeout=180)
        c.ctl("service", "scale", "web=2", timeout=120)
        time.sleep(2)
    finally:
        stop.set()
        mesh.join(10)
        vip.join(120)
    assert vip_out, "the load through the virtual IP did not end"
    assert "DONE" in vip_out[0], vip_out
    vip_failures = vip_out[0].count("FAIL")
    assert vip_failures == 0, f"{vip_failures} requests through the virtual IP failed"
    assert not failures, failures[:10]


def _answers_on(addr: str, port: int) -> bool:
    try:
        return bool(served_by(fetch(addr, port)))
    except OSError:
        return False


def test_a_killed_hosts_tasks_leave_the_rotation_once_it_is_down(
    networks: LocalCluster,
) -> None:
    """Issue 23: a host killed: once it is declared down (3 missed heartbeats), no request
    through the virtual IP or the mesh goes to its tasks any more."""
    c = networks
    c.ctl("network", "create", "front")
    c.ctl(
        "service", "create", "--name", "web", "--replicas", "3", "--network", "front",
        "-p", f"mode=ingress,published={LOAD_PORT},target=80", c.image(),
    )  # fmt: skip
    c.ctl("service", "create", "--name", "client", "--network", "front",
          "--constraint", "node.hostname==h1", c.image("sleeper"))  # fmt: skip
    assert sorted(c.running_on_hosts("web").values()) == [1, 1, 1]
    _, client = container_of(c, "client")
    request = r"printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 2 web 80"
    wait_until(lambda: served_by(exec_in(client, request)), 30, what="web answers by name")
    c.script("kill-host", "3")
    try:
        wait_until(lambda: c.node_state("h3") == DOWN, 15, 0.2, what="h3 declared down")
        time.sleep(1.0)  # the view's debounce and a message to every node
        vip_failures = exec_in(client, " ".join([
            "i=0; while [ $i -lt 40 ]; do i=$((i+1));",
            request, "| grep -q 'served by' || echo FAIL; done; echo DONE",
        ]))  # fmt: skip
        mesh = [served_by(fetch(c.host_addr(n), LOAD_PORT, timeout=3)) for n in (1, 2) * 20]
    finally:
        c.script("restore-host", "3")
    assert "DONE" in vip_failures
    assert vip_failures.count("FAIL") == 0, vip_failures
    assert all(mesh), mesh
    wait_until(lambda: c.node_state("h3") == READY, 60, 0.2, what="h3 back")
