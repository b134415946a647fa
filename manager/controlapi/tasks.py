"""Control API logic for tasks: get and list (tasks are made by the orchestrators)."""

from __future__ import annotations

from collections.abc import Mapping

from common.api import control_pb2, objects_pb2
from common.timeutil import timestamp_seconds
from manager.controlapi.nodes import find_node
from manager.controlapi.resolve import resolve_task
from manager.controlapi.services import find_service
from manager.store import Cache


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


def list_tasks(
    cache: Cache, request: control_pb2.ListTasksRequest
) -> control_pb2.ListTasksResponse:
    f = request.filters
    candidates: list[objects_pb2.Task]
    # Only the gathering needs the cache held still: cached tasks are replaced, never
    # changed in place, so sorting and copying thousands of them (the costly part)
    # happens without holding up the cache, or other readers (controlapi/threaded.py).
    with cache.lock:
        if f.service_ids:
            ids = {find_service(cache, ref).id for ref in f.service_ids}
            candidates = [t for sid in ids for t in cache.tasks_by_service.get(sid, {}).values()]
        elif f.node_ids:
            ids = {find_node(cache, ref).id for ref in f.node_ids}
            candidates = [t for nid in ids for t in cache.tasks_by_node.get(nid, {}).values()]
        else:
            candidates = list(cache.tasks.values())
        if f.node_ids and f.service_ids:
            nodes = {find_node(cache, ref).id for ref in f.node_ids}
            candidates = [t for t in candidates if t.node_id in nodes]
    out = control_pb2.ListTasksResponse()
    for t in sorted(
        candidates,
        key=lambda t: (t.service_name, t.slot, t.node_id, -timestamp_seconds(t.meta.created_at)),
    ):
        if f.names and t.annotations.name not in f.names:
            continue
        if f.id_prefixes and not any(t.id.startswith(p) for p in f.id_prefixes):
            continue
        if f.desired_states and t.desired_state not in f.desired_states:
            continue
        labels = t.annotations.labels
        if any(labels.get(k) != v and not (v == "" and k in labels) for k, v in f.labels.items()):
            continue
        out.tasks.append(t)
    return out
