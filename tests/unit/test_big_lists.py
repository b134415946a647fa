"""Lists larger than one gRPC message (protos/control.proto, "Lists"): the List*Stream
calls answer in parts whose bytes joined are the unary answer; the unary calls refuse
an answer no default client takes in with RESOURCE_EXHAUSTED saying what to call; and
swarmctl's client lists 30,000 tasks (about 6 MiB) through the real threaded control
server, where the unary call used to fail with "Received message larger than max"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from common import states
from common.api import control_pb2, objects_pb2
from common.api.control_pb2_grpc import ControlStub
from manager.controlapi import ControlAPI, threaded
from manager.controlapi.chunks import MESSAGE_LIMIT, chunked
from manager.store import Cache
from swarmctl.client import ControlClient, ManagerAddress
from tests.fakes import ReadOnlyStore, Stored, no_previews, offline_cache

TASKS = 30_000


def _cache(services: int, tasks_per_service: int, nodes: int = 3) -> Cache:
    objs: list[Stored] = []
    for s in range(services):
        service = objects_pb2.Service(id=f"svc{s:05d}")
        service.spec.annotations.name = f"web{s:05d}"
        service.spec.replicated.replicas = tasks_per_service
        objs.append(service)
    for n in range(nodes):
        node = objects_pb2.Node(id=f"node{n}")
        node.description.hostname = f"host-{n}"
        objs.append(node)
    for s in range(services):
        for slot in range(1, tasks_per_service + 1):
            t = objects_pb2.Task(
                id=f"task{s:05d}{slot:06d}",
                service_id=f"svc{s:05d}",
                service_name=f"web{s:05d}",
                node_id=f"node{slot % nodes}",
                slot=slot,
                desired_state=states.RUNNING,
            )
            t.annotations.name = f"web{s:05d}.{slot}"
            t.spec.container.image = "registry.example.com/team/app:1.2.3"
            t.spec.container.env.extend(["SOME_SETTING=some-value"] * 4)
            t.status.state = states.RUNNING
            t.status.message = "started"
            t.meta.created_at.seconds = 1_700_000_000 + slot
            objs.append(t)
    return offline_cache(*objs)


@pytest.fixture(scope="module")
def big_cache() -> Cache:
    return _cache(1, TASKS)


@pytest.fixture
async def served(big_cache: Cache, tmp_path: Path) -> AsyncIterator[str]:
    api = ControlAPI(big_cache, ReadOnlyStore(), lambda _: None, no_previews)
    path = tmp_path / "c.sock"
    server, _ = threaded.serve(api, asyncio.get_running_loop(), f"unix:{path}")
    try:
        yield f"unix:{path}"
    finally:
        await asyncio.to_thread(server.stop(None).wait, 5)


# ---- chunks ----------------------------------------------------------------------------


def test_chunked_keeps_order_and_limit() -> None:
    pieces = [bytes([i]) * (i + 1) for i in range(20)]
    parts = [p.data for p in chunked(pieces, limit=25)]
    assert b"".join(parts) == b"".join(pieces)
    assert all(len(p) <= 25 for p in parts)
    assert len(parts) > 5
    # A piece larger than the limit goes alone; nothing is one empty message.
    assert [p.data for p in chunked([b"x" * 30, b"y"], limit=25)] == [b"x" * 30, b"y"]
    assert [p.data for p in chunked([], limit=25)] == [b""]


# ---- through the threaded control server -----------------------------------------------


async def test_unary_list_past_the_limit_says_what_to_call(served: str) -> None:
    def call() -> Any:
        with grpc.insecure_channel(served) as channel:
            return ControlStub(channel).ListTasks(control_pb2.ListTasksRequest(), timeout=30)

    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(call)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = err.value.details() or ""
    assert f"{TASKS} tasks" in details
    assert "call ListTasksStream" in details


async def test_stream_parts_join_into_the_whole_list(served: str, big_cache: Cache) -> None:
    def call() -> list[control_pb2.ListTasksResponse]:
        with grpc.insecure_channel(served) as channel:
            return list(
                ControlStub(channel).ListTasksStream(control_pb2.ListTasksRequest(), timeout=30)
            )

    parts = await asyncio.to_thread(call)
    assert len(parts) > 4
    assert all(p.ByteSize() < MESSAGE_LIMIT for p in parts)
    ids = [t.id for p in parts for t in p.tasks]
    assert ids == sorted(big_cache.tasks)  # slot order is id order here
    joined = control_pb2.ListTasksResponse.FromString(
        b"".join(p.SerializeToString() for p in parts)
    )
    assert [t.id for t in joined.tasks] == ids


async def test_stream_errors_carry_their_status(served: str) -> None:
    def call() -> Any:
        with grpc.insecure_channel(served) as channel:
            filters = control_pb2.ListTasksRequest.Filters(service_ids=["nope"])
            request = control_pb2.ListTasksRequest(filters=filters)
            return list(ControlStub(channel).ListTasksStream(request, timeout=30))

    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(call)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_swarmctl_lists_every_task(served: str) -> None:
    def call() -> list[objects_pb2.Task]:
        with ControlClient(ManagerAddress.parse(served)) as client:
            return client.list_tasks()

    tasks = await asyncio.to_thread(call)
    assert len(tasks) == TASKS
    assert [t.slot for t in tasks] == list(range(1, TASKS + 1))


async def test_services_and_nodes_streams_match_the_unary_answers(tmp_path: Path) -> None:
    cache = _cache(40, 3)
    api = ControlAPI(cache, ReadOnlyStore(), lambda _: None, no_previews)
    path = tmp_path / "c.sock"
    server, _ = threaded.serve(api, asyncio.get_running_loop(), f"unix:{path}")

    def calls() -> tuple[Any, ...]:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            stub = ControlStub(channel)
            s_req, n_req = control_pb2.ListServicesRequest(), control_pb2.ListNodesRequest()
            return (
                stub.ListServices(s_req, timeout=10),
                list(stub.ListServicesStream(s_req, timeout=10)),
                stub.ListNodes(n_req, timeout=10),
                list(stub.ListNodesStream(n_req, timeout=10)),
            )

    try:
        services, service_parts, nodes, node_parts = await asyncio.to_thread(calls)
    finally:
        await asyncio.to_thread(server.stop(None).wait, 5)
    joined = control_pb2.ListServicesResponse()
    for p in service_parts:
        joined.MergeFrom(p)
    assert joined == services
    assert len(services.services) == 40
    assert set(services.statuses) == {s.id for s in services.services}
    joined_nodes = control_pb2.ListNodesResponse()
    for p in node_parts:
        joined_nodes.MergeFrom(p)
    assert joined_nodes == nodes
    assert len(nodes.nodes) == 3


async def test_an_undecodable_stream_request_is_invalid_argument(served: str) -> None:
    def call() -> Any:
        with grpc.insecure_channel(served) as channel:
            stream: Any = channel.unary_stream("/swarmlet.Control/ListTasksStream")
            return list(stream(b"\xff\xff\xff", timeout=10))

    with pytest.raises(grpc.RpcError) as err:
        await asyncio.to_thread(call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ListTasksStream" in (err.value.details() or "")
