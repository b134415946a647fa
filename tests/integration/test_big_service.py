"""A service larger than one gRPC message can list, on a real manager (embedded etcd)
with hollow agents: `swarmctl service ps` of 20,000 tasks (about 6 MiB of tasks; the
unary ListTasks failed past ~14,000 with "Received message larger than max"), and the
unary call's clear RESOURCE_EXHAUSTED instead. The long version, 100,000 replicas with
the manager's loop stalls measured, is `make bench-bigservice`."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from common.api import control_pb2
from tests.harness import wait_until
from tests.integration.test_scheduling import Farm, start_farm

REPLICAS = 20_000


@pytest.fixture
def farm() -> Iterator[Farm]:
    f = start_farm(("big-", [], 2))
    try:
        yield f
    finally:
        f.cleanup()


def test_service_ps_of_20000_tasks(farm: Farm) -> None:
    farm.create("big", "--replicas", str(REPLICAS))
    wait_until(lambda: len(farm.tasks("big")) >= REPLICAS, 180, interval=1.0, what="every task")

    out = farm.ctl("service", "ps", "big", check=True, timeout=120).stdout.splitlines()
    assert out[0].split()[:2] == ["ID", "NAME"]
    assert len(out) == REPLICAS + 1
    quiet = farm.ctl("service", "ps", "-q", "big", check=True, timeout=120).stdout.split()
    assert len(set(quiet)) == REPLICAS

    with pytest.raises(grpc.RpcError) as err:
        farm.manager.api().ListTasks(
            control_pb2.ListTasksRequest(
                filters=control_pb2.ListTasksRequest.Filters(service_ids=["big"])
            ),
            timeout=60,
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "call ListTasksStream" in (err.value.details() or "")
