"""Bad input gets a clear error and a proper gRPC status, never a traceback, and leaves
the stored state as it was."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from common.api import control_pb2, specs_pb2
from tests.conftest import Cluster
from tests.harness import BIN, SLEEPER, short_tmpdir, swarmctl, wait_until

pytestmark = pytest.mark.docker


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr, result.stderr


def service_names(cluster: Cluster) -> set[str]:
    services = cluster.manager.api().ListServices(control_pb2.ListServicesRequest()).services
    return {s.spec.annotations.name for s in services}


def test_invalid_service_name(cluster: Cluster) -> None:
    before = service_names(cluster)
    result = cluster.ctl("service", "create", "-d", "--name", "bad name!", SLEEPER)
    assert_clean_error(result, "invalid service name 'bad name!'")
    assert service_names(cluster) == before
    spec = specs_pb2.ServiceSpec()
    spec.annotations.name = "-leading-dash"
    spec.task.container.image = SLEEPER
    with pytest.raises(grpc.RpcError) as err:
        cluster.manager.api().CreateService(control_pb2.CreateServiceRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_negative_replicas(cluster: Cluster, name: str) -> None:
    result = cluster.ctl("service", "create", "-d", "--name", name, "--replicas", "-1", SLEEPER)
    assert_clean_error(result, "invalid replicas value -1")
    assert name not in service_names(cluster)


def test_invalid_image_reference(cluster: Cluster, name: str) -> None:
    result = cluster.ctl("service", "create", "-d", "--name", name, "Upper/Case:1")
    assert_clean_error(result, "invalid image reference 'Upper/Case:1'", "lower case")


def test_duplicate_name_is_already_exists(cluster: Cluster, name: str) -> None:
    cluster.ctl("service", "create", "-d", "--name", name, "--replicas", "0", SLEEPER, check=True)
    first = cluster.manager.api().GetService(control_pb2.GetServiceRequest(service_id=name)).service
    result = cluster.ctl("service", "create", "-d", "--name", name, SLEEPER)
    assert_clean_error(result, f"a service named '{name}' already exists")
    spec = specs_pb2.ServiceSpec()
    spec.CopyFrom(first.spec)
    with pytest.raises(grpc.RpcError) as err:
        cluster.manager.api().CreateService(control_pb2.CreateServiceRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    again = cluster.manager.api().GetService(control_pb2.GetServiceRequest(service_id=name)).service
    assert again == first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["service", "inspect", "nosuchservice"], "service 'nosuchservice' not found"),
        (["service", "rm", "nosuchservice"], "service 'nosuchservice' not found"),
        (["service", "ps", "nosuchservice"], "service 'nosuchservice' not found"),
        (["node", "inspect", "nosuchnode"], "node 'nosuchnode' not found"),
        (["task", "inspect", "nosuchtask"], "task 'nosuchtask' not found"),
    ],
)
def test_unknown_objects_are_not_found(cluster: Cluster, args: list[str], message: str) -> None:
    assert_clean_error(cluster.ctl(*args), message)


def test_not_found_status_code(cluster: Cluster) -> None:
    api = cluster.manager.api()
    calls: list[tuple[Callable[[Any], object], Message]] = [
        (api.GetService, control_pb2.GetServiceRequest(service_id="nope")),
        (api.GetNode, control_pb2.GetNodeRequest(node_id="nope")),
        (api.GetTask, control_pb2.GetTaskRequest(task_id="nope")),
        (api.RemoveService, control_pb2.RemoveServiceRequest(service_id="nope")),
    ]
    for call, request in calls:
        with pytest.raises(grpc.RpcError) as err:
            call(request)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert "'nope'" in (err.value.details() or "")


def test_ambiguous_id_prefix(cluster: Cluster, name: str) -> None:
    ids: dict[str, str] = {}
    for i in range(40):  # 36 possible first characters: a shared one comes quickly
        svc = f"{name}-{i}"
        cluster.ctl(
            "service", "create", "-d", "--name", svc, "--replicas", "0", SLEEPER, check=True
        )
        sid = (
            cluster.manager.api()
            .GetService(control_pb2.GetServiceRequest(service_id=svc))
            .service.id
        )
        if sid[0] in ids:
            break
        ids[sid[0]] = sid
    else:
        pytest.fail("no two service ids shared a first character")
    prefix = sid[0]
    all_ids = [
        s.id for s in cluster.manager.api().ListServices(control_pb2.ListServicesRequest()).services
    ]
    assert sum(1 for i in all_ids if i.startswith(prefix)) >= 2
    result = cluster.ctl("service", "inspect", prefix)
    assert_clean_error(result, f"service id prefix '{prefix}' is ambiguous")
    with pytest.raises(grpc.RpcError) as err:
        cluster.manager.api().GetService(control_pb2.GetServiceRequest(service_id=prefix))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A unique prefix works.
    shown = cluster.ctl("service", "inspect", sid[:12], check=True).stdout
    assert sid in shown


def test_unpullable_image_is_rejected_with_the_engines_message(cluster: Cluster, name: str) -> None:
    image = "127.0.0.1:9/nosuch/image:1"  # a registry that refuses connections at once
    result = cluster.ctl(
        "service",
        "create",
        "--name",
        name,
        "--replicas",
        "1",
        "--restart-delay",
        "1s",
        "--timeout",
        "60s",
        image,
        timeout=90,
    )
    assert_clean_error(result, "did not converge")
    assert "No such image: 127.0.0.1:9/nosuch/image:1" in result.stderr + result.stdout
    tasks = cluster.manager.tasks(name)
    rejected = [t for t in tasks if t.status.state == 768]
    assert rejected
    assert "connection refused" in rejected[0].status.err.lower()
    ps = cluster.ctl("service", "ps", "--no-trunc", name, check=True).stdout
    assert "Rejected" in ps
    assert "No such image" in ps


def test_stale_update_version_is_failed_precondition(cluster: Cluster, name: str) -> None:
    cluster.ctl("service", "create", "-d", "--name", name, "--replicas", "0", SLEEPER, check=True)
    api = cluster.manager.api()
    service = api.GetService(control_pb2.GetServiceRequest(service_id=name)).service
    spec = specs_pb2.ServiceSpec()
    spec.CopyFrom(service.spec)
    spec.annotations.labels["a"] = "1"
    api.UpdateService(
        control_pb2.UpdateServiceRequest(
            service_id=service.id, service_version=service.meta.version, spec=spec
        )
    )
    spec.annotations.labels["a"] = "2"
    with pytest.raises(grpc.RpcError) as err:
        api.UpdateService(
            control_pb2.UpdateServiceRequest(
                service_id=service.id, service_version=service.meta.version, spec=spec
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "read it again and retry" in (err.value.details() or "")
    stored = api.GetService(control_pb2.GetServiceRequest(service_id=name)).service
    assert stored.spec.annotations.labels["a"] == "1"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--reserve-cpu", "1e30", "invalid CPU value '1e30': too large"),
        ("--limit-memory", "99999999999p", "invalid memory size '99999999999p': too large"),
        ("--restart-delay", "nan", "invalid duration 'nan': not a number"),
        ("--update-monitor", "inf", "invalid duration 'inf': too long"),
        ("--replicas", "100001", "must be at most 100000 (tasks per service)"),
    ],
)
def test_numbers_out_of_range_are_usage_errors(
    cluster: Cluster, name: str, flag: str, value: str, message: str
) -> None:
    result = cluster.ctl("service", "create", "-d", "--name", name, flag, value, SLEEPER)
    assert result.returncode == 2
    assert_clean_error(result, f"Invalid value for '{flag}'", message)
    assert "unexpected" not in result.stderr
    assert name not in service_names(cluster)


def test_numbers_out_of_range_are_invalid_argument(cluster: Cluster, name: str) -> None:
    api = cluster.manager.api()
    edits: list[tuple[Callable[[specs_pb2.ServiceSpec], None], str]] = [
        (lambda s: setattr(s.update, "max_failure_ratio", float("nan")), "max failure ratio"),
        (lambda s: setattr(s.replicated, "replicas", 2**64 - 1), "at most 100000"),
        (lambda s: setattr(s.task.restart.delay, "seconds", 2**63 - 1), "292 years"),
        (lambda s: setattr(s.task.resources.limits, "nano_cpus", -1), "must not be negative"),
    ]
    for edit, words in edits:
        spec = specs_pb2.ServiceSpec()
        spec.annotations.name = name
        spec.task.container.image = SLEEPER
        edit(spec)
        with pytest.raises(grpc.RpcError) as err:
            api.CreateService(control_pb2.CreateServiceRequest(spec=spec))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (err.value.details() or "")
    assert name not in service_names(cluster)


def test_no_manager_names_the_address_and_how_to_start_one() -> None:
    sock = "/tmp/swarmlet-no-such-manager.sock"
    result = swarmctl(f"unix://{sock}", "service", "ls")
    assert_clean_error(result, sock, "swarm-manager")
    assert len(result.stderr.strip().splitlines()) == 1


def test_etcd_unreachable_names_the_endpoints_and_exits_non_zero() -> None:
    state = short_tmpdir("swl-m-")
    started = time.monotonic()
    try:
        _run_manager_without_etcd(state, started)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def _run_manager_without_etcd(state: Path, started: float) -> None:
    result = subprocess.run(  # noqa: PLW1510 - the exit code is what is checked
        [
            str(BIN / "swarm-manager"),
            "--state-dir",
            str(state),
            "--listen-addr",
            "127.0.0.1:0",
            "--etcd",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_bad_node_update_is_refused(cluster: Cluster) -> None:
    result = cluster.ctl("node", "update", "--availability", "sideways", "node-1")
    assert_clean_error(result, "sideways")
    wait_until(lambda: cluster.manager.nodes()[0].spec.availability == 0, 5, what="still active")
