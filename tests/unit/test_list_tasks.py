"""`ListTasks` answers with the cache's serialized tasks put together by hand
(manager/controlapi/tasks.py): the same tasks, filters and order as a ListTasksResponse
built message by message, each task with its revision as `meta.version`; and through
the real threaded control server a client decodes it as a ListTasksResponse."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import states
from common.api import control_pb2, objects_pb2, types_pb2
from common.api.control_pb2_grpc import ControlStub
from common.timeutil import timestamp_seconds
from manager.controlapi import ControlAPI, threaded
from manager.controlapi.filters import labels_match
from manager.controlapi.tasks import list_tasks
from manager.store import Cache
from tests.fakes import ReadOnlyStore, Stored, no_previews, offline_cache

SERVICES = ("web", "db", "cache")
NODES = ("n1", "n2", "n3")


def _cache(tasks: list[objects_pb2.Task]) -> Cache:
    objs: list[Stored] = []
    for name in SERVICES:
        service = objects_pb2.Service(id=f"id-{name}")
        service.spec.annotations.name = name
        objs.append(service)
    for node_id in NODES:
        node = objects_pb2.Node(id=node_id)
        node.description.hostname = f"host-{node_id}"
        objs.append(node)
    return offline_cache(*objs, *tasks, prefix="/t/")


def _task(
    i: int,
    service: str,
    node: str,
    slot: int,
    created: int,
    desired: types_pb2.TaskState.ValueType,
    label: str,
) -> objects_pb2.Task:
    t = objects_pb2.Task(
        id=f"t{i:07d}",
        service_id=f"id-{service}",
        service_name=service,
        node_id=node,
        slot=slot,
        desired_state=desired,
    )
    t.annotations.name = f"{service}.{slot}"
    t.meta.created_at.seconds = 1_700_000_000 + created
    t.meta.version = 1000 + i
    if label:
        t.annotations.labels["tier"] = label
    return t


task_strategy = st.builds(
    _task,
    st.integers(0, 10**6),
    st.sampled_from(SERVICES),
    st.sampled_from(("", *NODES)),
    st.integers(0, 4),
    st.integers(0, 5),
    st.sampled_from((states.RUNNING, states.COMPLETE, states.FAILED)),
    st.sampled_from(("", "a", "b")),
)


def _reference(cache: Cache, f: control_pb2.ListTasksRequest.Filters) -> list[Any]:
    """What ListTasks answered before: every task decoded, filtered, sorted."""
    tasks = [cache.tasks[i] for i in cache.tasks]
    services = {f"id-{s}" for s in f.service_ids}
    nodes = set(f.node_ids)
    out = []
    for t in tasks:
        if services and t.service_id not in services:
            continue
        if nodes and t.node_id not in nodes:
            continue
        if f.names and t.annotations.name not in f.names:
            continue
        if f.id_prefixes and not any(t.id.startswith(p) for p in f.id_prefixes):
            continue
        if f.desired_states and t.desired_state not in f.desired_states:
            continue
        if not labels_match(t.annotations.labels, f.labels):
            continue
        out.append(t)
    out.sort(
        key=lambda t: (t.service_name, t.slot, t.node_id, -timestamp_seconds(t.meta.created_at))
    )
    return out


filters_strategy = st.builds(
    lambda services, nodes, names, prefixes, desired, labels: control_pb2.ListTasksRequest.Filters(
        service_ids=services,
        node_ids=nodes,
        names=names,
        id_prefixes=prefixes,
        desired_states=desired,
        labels=labels,
    ),
    st.lists(st.sampled_from(SERVICES), max_size=2),
    st.lists(st.sampled_from(NODES), max_size=2),
    st.lists(st.sampled_from(("web.1", "db.2", "cache.0")), max_size=2),
    st.lists(st.sampled_from(("t0", "t00", "t1")), max_size=2),
    st.lists(st.sampled_from((states.RUNNING, states.COMPLETE)), max_size=1),
    st.dictionaries(st.just("tier"), st.sampled_from(("", "a")), max_size=1),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(task_strategy, max_size=40, unique_by=lambda t: t.id), filters_strategy)
def test_same_tasks_in_the_same_order_as_a_response_built_message_by_message(
    tasks: list[objects_pb2.Task], filters: control_pb2.ListTasksRequest.Filters
) -> None:
    cache = _cache(tasks)
    request = control_pb2.ListTasksRequest(filters=filters)
    got = control_pb2.ListTasksResponse.FromString(list_tasks(cache, request).SerializeToString())
    want = _reference(cache, filters)
    assert [t.id for t in got.tasks] == [t.id for t in want]
    assert list(got.tasks) == want  # whole tasks, meta.version (the revision) included
    by_id = {t.id: t for t in tasks}
    assert all(t.meta.version == by_id[t.id].meta.version for t in got.tasks)


def test_an_unknown_service_is_still_not_found() -> None:
    cache = _cache([_task(1, "web", "n1", 1, 0, states.RUNNING, "")])
    request = control_pb2.ListTasksRequest(
        filters=control_pb2.ListTasksRequest.Filters(service_ids=["nope"])
    )
    with pytest.raises(Exception, match="nope"):
        list_tasks(cache, request)


async def test_a_client_decodes_the_answer_of_the_threaded_server(tmp_path: Path) -> None:
    tasks = [_task(i, SERVICES[i % 3], NODES[i % 3], i, i, states.RUNNING, "") for i in range(30)]
    cache = _cache(tasks)
    api = ControlAPI(cache, ReadOnlyStore(), lambda _: None, no_previews)
    path = tmp_path / "c.sock"
    server, _ = threaded.serve(api, asyncio.get_running_loop(), f"unix:{path}")
    try:

        def call(filters: control_pb2.ListTasksRequest.Filters) -> Any:
            with grpc.insecure_channel(f"unix:{path}") as channel:
                request = control_pb2.ListTasksRequest(filters=filters)
                return ControlStub(channel).ListTasks(request, timeout=10)

        every = await asyncio.to_thread(call, control_pb2.ListTasksRequest.Filters())
        assert [t.id for t in every.tasks] == [
            t.id for t in _reference(cache, control_pb2.ListTasksRequest.Filters())
        ]
        web = await asyncio.to_thread(
            call, control_pb2.ListTasksRequest.Filters(service_ids=["web"])
        )
        assert {t.service_name for t in web.tasks} == {"web"}
        assert len(web.tasks) == 10
        with pytest.raises(grpc.RpcError) as err:
            await asyncio.to_thread(
                call, control_pb2.ListTasksRequest.Filters(service_ids=["nope"])
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        await asyncio.to_thread(server.stop(None).wait, 5)
