"""Control API logic for tasks: get and list (tasks are made by the orchestrators)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from operator import itemgetter

from common.api import control_pb2, objects_pb2
from common.timeutil import timestamp_seconds
from manager.controlapi.chunks import Serialized, chunked, whole
from manager.controlapi.filters import labels_match
from manager.controlapi.nodes import find_node
from manager.controlapi.resolve import resolve_task
from manager.controlapi.services import find_service
from manager.store import Cache
from manager.store.tasktable import varint

__all__ = ["Serialized", "find_task", "get_task", "list_tasks", "list_tasks_stream"]


def find_task(cache: Cache, ref: str) -> objects_pb2.Task:
    """The task `ref` names: an id, an id prefix, or a name ("web.1", "web.<node id>")."""
    # A task's name is "<service>.<slot or node id>": only that service's tasks are
    # searched for it (without a dot, none). With no such service (removed while its
    # tasks shut down, or a name that is not a task's) every task is.
    service_name, dot, _ = ref.strip().rpartition(".")
    pool: Mapping[str, objects_pb2.Task] | None = {}
    if dot:
        service_id = cache.service_by_name.get(service_name)
        pool = cache.tasks_by_service.get(service_id) if service_id else None
    return resolve_task(cache.tasks, ref, named_in=pool)


def get_task(cache: Cache, request: control_pb2.GetTaskRequest) -> control_pb2.GetTaskResponse:
    return control_pb2.GetTaskResponse(task=find_task(cache, request.task_id))


# ListTasksResponse's `tasks` field as it starts on the wire (length-delimited).
_TASKS_TAG = bytes(
    (control_pb2.ListTasksResponse.DESCRIPTOR.fields_by_name["tasks"].number << 3 | 2,)
)


def list_tasks(cache: Cache, request: control_pb2.ListTasksRequest) -> Serialized:
    """The tasks the filters select, ordered by service, slot, node and newest first:
    a serialized ListTasksResponse (RESOURCE_EXHAUSTED past gRPC's message limit)."""
    return whole(task_pieces(cache, request), "tasks", "ListTasksStream")


def list_tasks_stream(cache: Cache, request: control_pb2.ListTasksRequest) -> Iterator[Serialized]:
    """What `list_tasks` answers, as the messages of a ListTasksStream (chunks.py). The
    tasks are chosen at the call, not as the messages go."""
    return chunked(task_pieces(cache, request))


def task_pieces(cache: Cache, request: control_pb2.ListTasksRequest) -> list[bytes]:
    """The selected tasks in order, each as a serialized ListTasksResponse of that task.

    The response is put together from the cache's serialized tasks (`TaskTable`): a
    task is decoded once, for the filters and the order, and never copied into a
    response message or encoded again. `service ps` of a 5,000-task service, polled
    every 2 s while 150,000 tasks started, took 5.6% of the manager's time when the
    tasks were appended to a ListTasksResponse and that was serialized."""
    f = request.filters
    table = cache.tasks
    # Only the gathering needs the cache held still (controlapi/threaded.py): stored
    # tasks are replaced, never changed in place.
    with cache.lock:
        ids: Iterable[str] = table
        if f.service_ids or f.node_ids:
            if f.service_ids:
                index = cache.tasks_by_service
                keys = {find_service(cache, r).id for r in f.service_ids}
            else:
                index = cache.tasks_by_node
                keys = {find_node(cache, r).id for r in f.node_ids}
            ids = [i for k in keys if (group := index.get(k)) is not None for i in group.ids]
        blobs = [table.serialized(i) for i in ids]
        nodes = None
        if f.node_ids and f.service_ids:
            nodes = {find_node(cache, r).id for r in f.node_ids}
    chosen: list[tuple[tuple[str, int, str, float], bytes]] = []
    for blob in blobs:
        t = objects_pb2.Task.FromString(blob)
        if nodes is not None and t.node_id not in nodes:
            continue
        if f.names and t.annotations.name not in f.names:
            continue
        if f.id_prefixes and not any(t.id.startswith(p) for p in f.id_prefixes):
            continue
        if f.desired_states and t.desired_state not in f.desired_states:
            continue
        if not labels_match(t.annotations.labels, f.labels):
            continue
        key = (t.service_name, t.slot, t.node_id, -timestamp_seconds(t.meta.created_at))
        chosen.append((key, blob))
    chosen.sort(key=itemgetter(0))
    return [_TASKS_TAG + varint(len(b)) + b for _, b in chosen]
