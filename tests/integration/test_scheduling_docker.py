"""Constraints and resource limits with real containers (the hollow farm of
test_scheduling.py covers the rest of the scheduler without them)."""

from __future__ import annotations

import platform
from typing import Any

import pytest

from common.api import objects_pb2
from manager.domain.platforms import normalise_arch
from manager.scheduler.filters import PlatformFilter
from manager.scheduler.nodeinfo import NodeInfo
from tests.conftest import Cluster
from tests.harness import SLEEPER, wait_until

pytestmark = pytest.mark.docker

PENDING, RUNNING = 64, 512


def test_hostname_constraint_places_or_explains(cluster: Cluster, name: str) -> None:
    here, elsewhere = f"{name}-here", f"{name}-else"
    out = cluster.ctl(
        "service",
        "create",
        "--name",
        here,
        "--constraint",
        "node.hostname==node-1",
        SLEEPER,
        timeout=90,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    [container] = cluster.containers(here)
    assert container.status == "running"

    cluster.ctl(
        "service",
        "create",
        "-d",
        "--name",
        elsewhere,
        "--constraint",
        "node.hostname==node-2",
        SLEEPER,
        check=True,
    )
    explanation = "no suitable node (scheduling constraints not satisfied on 1 node)"

    def explained() -> list[Any]:
        return [
            t
            for t in cluster.manager.tasks(elsewhere)
            if t.status.state == PENDING and t.status.err == explanation
        ]

    wait_until(explained, 30, what="the task to wait with an explanation")
    assert explanation in cluster.ctl("service", "ps", "--no-trunc", elsewhere, check=True).stdout
    assert not cluster.containers(elsewhere, all=True)


def test_limits_reach_the_container(cluster: Cluster, name: str) -> None:
    out = cluster.ctl(
        "service",
        "create",
        "--name",
        name,
        "--limit-memory",
        "64M",
        "--limit-cpu",
        "0.5",
        SLEEPER,
        timeout=90,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    [task] = cluster.manager.running_tasks(name)
    container = cluster.docker.containers.get(task.status.container_status.container_id)
    host_config = container.attrs["HostConfig"]
    assert host_config["Memory"] == 64 * 1024 * 1024
    assert host_config["NanoCpus"] == 500_000_000
    assert task.spec.resources.limits.memory_bytes == 64 * 1024 * 1024


def test_the_engines_architecture_is_compared_as_image_platforms_name_it(
    cluster: Cluster,
) -> None:
    """Docker reports uname's names (x86_64, aarch64); images name Go's (amd64, arm64):
    the platform filter takes a node of this machine for either spelling."""
    [node] = cluster.manager.nodes()
    reported = node.description.platform
    assert reported.os == "linux"
    assert normalise_arch(reported.architecture) == normalise_arch(platform.machine())
    info = NodeInfo(node)
    goarch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for arch in {platform.machine(), goarch}:
        task = objects_pb2.Task()
        task.spec.placement.platforms.add(os="linux", architecture=arch)
        assert PlatformFilter().check(task, info), arch
    other = objects_pb2.Task()
    other.spec.placement.platforms.add(os="linux", architecture="s390x")
    assert not PlatformFilter().check(other, info)
