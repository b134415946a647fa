"""`swarmctl network` against a real manager: create (with and without a subnet), ls,
inspect (the allocation the allocator made), rm refused while a service uses the
network (naming it), an overlapping subnet refused (naming the other network), prune,
and the built-in ingress network."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.harness import SLEEPER, Manager, wait_until


@pytest.fixture(scope="module")
def manager() -> Iterator[Manager]:
    m = Manager()
    try:
        m.start()
        yield m
    finally:
        m.cleanup()


def ctl(m: Manager, *args: str) -> tuple[int, str]:
    from tests.harness import swarmctl

    result = swarmctl(m.host, *args)
    return result.returncode, result.stdout + result.stderr


def allocated(m: Manager, name: str) -> dict[str, object]:
    def look() -> dict[str, object] | None:
        code, out = ctl(m, "network", "inspect", name)
        if code != 0:
            return None
        net: dict[str, object] = json.loads(out)[0]
        alloc = net.get("allocation")
        return net if isinstance(alloc, dict) and alloc.get("subnet") else None

    found: dict[str, object] = wait_until(look, 20, what=f"{name} allocated")
    return found


def test_networks_are_made_listed_refused_and_removed(manager: Manager) -> None:
    m = manager
    ingress = allocated(m, "ingress")
    assert ingress["spec"]["ingress"] is True  # type: ignore[index]

    code, out = ctl(m, "network", "create", "--subnet", "10.77.0.0/24", "--label", "team=a", "back")
    assert code == 0, out
    back = allocated(m, "back")
    assert back["allocation"] == {
        "subnet": "10.77.0.0/24",
        "gateway": "10.77.0.1",
        "vxlan_id": back["allocation"]["vxlan_id"],  # type: ignore[index]
    }
    code, out = ctl(m, "network", "create", "front")
    assert code == 0, out
    front = allocated(m, "front")
    assert front["allocation"]["subnet"].endswith("/24")  # type: ignore[index]

    code, out = ctl(m, "network", "create", "--subnet", "10.77.0.128/25", "clash")
    assert code != 0
    assert "overlaps 10.77.0.0/24 of network 'back'" in out

    code, out = ctl(m, "network", "ls")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert {r.split()[1] for r in rows} >= {"back", "front", "ingress"}
    assert all(r.split()[2:] == ["overlay", "swarm"] for r in rows)

    code, out = ctl(m, "service", "create", "-d", "--name", "user", "--network", "back", SLEEPER)
    assert code == 0, out
    code, out = ctl(m, "network", "rm", "back")
    assert code != 0
    assert "in use by service user" in out
    code, out = ctl(m, "network", "rm", "ingress")
    assert code != 0
    assert "built in" in out

    code, out = ctl(m, "network", "prune", "-f")
    assert code == 0, out
    assert "front" in out
    assert "back" not in out  # in use
    code, out = ctl(m, "service", "rm", "user")
    assert code == 0, out
    code, out = ctl(m, "network", "rm", "back")
    assert code == 0, out
    code, out = ctl(m, "network", "ls", "-q")
    assert len(out.split()) == 1  # the ingress network alone
