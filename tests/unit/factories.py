"""Builders of the protobuf objects the manager's pure functions work on.

Every builder takes keyword arguments for what a test cares about and fills the rest
the way the control API and the store would (a complete spec, a created_at time).
Times are plain seconds since the epoch; `NOW` is the "current" time of a test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import TypeAlias, TypedDict, Unpack

from google.protobuf.timestamp_pb2 import Timestamp

from common import states
from common.api import objects_pb2, specs_pb2, types_pb2
from common.nodes import keeps_tasks
from common.timeutil import duration
from manager.domain.tasks import new_task

NOW = 1_700_000_000.0

# A task state (or desired state), as the Task message types it.
State: TypeAlias = states.TaskState.ValueType


class ServiceArgs(TypedDict, total=False):
    """The keyword arguments of `service`, for helpers that pass them on."""

    replicas: int
    service_id: str
    name: str
    image: str
    condition: str
    delay: float | None
    max_attempts: int
    window: float | None
    parallelism: int
    spec_version: int
    ports: Iterable[tuple[int, int]]
    spread: str | None


class TaskArgs(TypedDict, total=False):
    """The keyword arguments of `task`, for helpers that pass them on."""

    state: State
    desired: State
    node: str | None
    created_at: float
    restart_attempt: int
    restart_at: float | None
    declined: bool
    task_id: str | None
    recent_restarts: tuple[float, ...]
    updated_at: float | None


class RolloutArgs(TypedDict, total=False):
    """The keyword arguments of `rollout`, for helpers that pass them on."""

    parallelism: int | None
    delay: float | None
    monitor: float | None
    order: str | None
    failure_action: str | None
    max_failure_ratio: float | None


class NodeArgs(TypedDict, total=False):
    """The keyword arguments of `node`, for helpers that pass them on."""

    state: str
    availability: str
    labels: Mapping[str, str] | None
    hostname: str | None


CONDITIONS = {
    "none": specs_pb2.RESTART_CONDITION_NONE,
    "on-failure": specs_pb2.RESTART_CONDITION_ON_FAILURE,
    "any": specs_pb2.RESTART_CONDITION_ANY,
}
NODE_STATES = {
    "unknown": types_pb2.NODE_STATE_UNKNOWN,
    "down": types_pb2.NODE_STATE_DOWN,
    "ready": types_pb2.NODE_STATE_READY,
    "disconnected": types_pb2.NODE_STATE_DISCONNECTED,
}
ORDERS = {
    "stop-first": specs_pb2.UPDATE_ORDER_STOP_FIRST,
    "start-first": specs_pb2.UPDATE_ORDER_START_FIRST,
}
FAILURE_ACTIONS = {
    "pause": specs_pb2.UPDATE_FAILURE_ACTION_PAUSE,
    "continue": specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE,
    "rollback": specs_pb2.UPDATE_FAILURE_ACTION_ROLLBACK,
}
AVAILABILITIES = {
    "active": types_pb2.NODE_AVAILABILITY_ACTIVE,
    "pause": types_pb2.NODE_AVAILABILITY_PAUSE,
    "drain": types_pb2.NODE_AVAILABILITY_DRAIN,
}

_ids = itertools.count(1)


def next_id(prefix: str) -> str:
    return f"{prefix}{next(_ids):06d}"


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(round(seconds * 1e9))
    return ts


def service(
    replicas: int = 1,
    *,
    service_id: str = "svc1",
    name: str = "web",
    image: str = "nginx:1.25",
    condition: str = "any",
    delay: float | None = None,
    max_attempts: int = 0,
    window: float | None = None,
    parallelism: int = 1,
    spec_version: int = 1,
    ports: Iterable[tuple[int, int]] = (),
    spread: str | None = None,
) -> objects_pb2.Service:
    """A replicated service. `delay=None` leaves the restart delay unset (default 5 s)."""
    svc = objects_pb2.Service(id=service_id, spec_version=spec_version)
    spec = svc.spec
    spec.annotations.name = name
    spec.replicated.replicas = replicas
    spec.task.container.image = image
    spec.task.restart.condition = CONDITIONS[condition]
    if delay is not None:
        spec.task.restart.delay.CopyFrom(duration(delay))
    spec.task.restart.max_attempts = max_attempts
    if window is not None:
        spec.task.restart.window.CopyFrom(duration(window))
    spec.update.parallelism = parallelism
    if spread is not None:
        spec.task.placement.preferences.add().spread.spread_descriptor = spread
    for target, published in ports:
        spec.endpoint.ports.add(
            target_port=target, published_port=published, publish_mode=types_pb2.PUBLISH_MODE_HOST
        )
    return svc


def global_service(**kw: Unpack[ServiceArgs]) -> objects_pb2.Service:
    """A global service (`service`'s other settings; `replicas` is ignored)."""
    svc = service(**kw)
    getattr(svc.spec, "global").SetInParent()
    return svc


def rollout(
    svc: objects_pb2.Service,
    which: str = "update",
    *,
    parallelism: int | None = None,
    delay: float | None = None,
    monitor: float | None = None,
    order: str | None = None,
    failure_action: str | None = None,
    max_failure_ratio: float | None = None,
) -> objects_pb2.Service:
    """Set `svc`'s update config (`which="rollback"`: its rollback config); returns it."""
    cfg = getattr(svc.spec, which)
    if parallelism is not None:
        cfg.parallelism = parallelism
    if delay is not None:
        cfg.delay.CopyFrom(duration(delay))
    if monitor is not None:
        cfg.monitor.CopyFrom(duration(monitor))
    if order is not None:
        cfg.order = ORDERS[order]
    if failure_action is not None:
        cfg.failure_action = FAILURE_ACTIONS[failure_action]
    if max_failure_ratio is not None:
        cfg.max_failure_ratio = max_failure_ratio
    return svc


def changed(
    svc: objects_pb2.Service,
    *,
    image: str | None = None,
    replicas: int | None = None,
    condition: str | None = None,
    max_attempts: int | None = None,
) -> objects_pb2.Service:
    """A copy of `svc` after an update (spec_version + 1), as the control API stores it."""
    out = objects_pb2.Service()
    out.CopyFrom(svc)
    out.spec_version += 1
    if image is not None:
        out.spec.task.container.image = image
    if replicas is not None:
        out.spec.replicated.replicas = replicas
    if condition is not None:
        out.spec.task.restart.condition = CONDITIONS[condition]
    if max_attempts is not None:
        out.spec.task.restart.max_attempts = max_attempts
    out.previous_spec.CopyFrom(svc.spec)
    return out


def task(
    svc: objects_pb2.Service,
    slot: int,
    *,
    state: State = states.RUNNING,
    desired: State = states.RUNNING,
    node: str | None = None,
    created_at: float = NOW - 100,
    restart_attempt: int = 0,
    restart_at: float | None = None,
    declined: bool = False,
    task_id: str | None = None,
    recent_restarts: tuple[float, ...] = (),
    updated_at: float | None = None,
) -> objects_pb2.Task:
    """A task of `svc` (made from its current spec) as the store holds it; `slot` 0 is a
    global service's task on `node`. `updated_at` is its last write (a running task's
    running since), `created_at` unless told."""
    t = new_task(
        svc,
        slot,
        node_id=node or "" if slot == 0 else "",
        restart_attempt=restart_attempt,
        recent_restarts=recent_restarts,
    )
    t.id = task_id or next_id("t")
    t.meta.created_at.CopyFrom(timestamp(created_at))
    t.meta.updated_at.CopyFrom(timestamp(created_at if updated_at is None else updated_at))
    t.meta.version = 1
    t.status.state = state
    t.desired_state = desired
    # Assigned tasks are on "n1" unless told otherwise; pending ones on no node.
    t.node_id = node if node is not None else ("n1" if state >= states.ASSIGNED else "")
    if restart_at is not None:
        t.restart_at.CopyFrom(timestamp(restart_at))
    t.restart_declined = declined
    return t


def node(
    node_id: str = "n1",
    *,
    state: str = "ready",
    availability: str = "active",
    labels: Mapping[str, str] | None = None,
    hostname: str | None = None,
) -> objects_pb2.Node:
    n = objects_pb2.Node(id=node_id)
    n.status.state = NODE_STATES[state]
    n.spec.availability = AVAILABILITIES[availability]
    n.spec.annotations.labels.update(labels or {})
    n.description.hostname = hostname or f"host-{node_id}"
    return n


def nodes(*objs: objects_pb2.Node) -> dict[str, objects_pb2.Node]:
    return {n.id: n for n in objs}


def node_ok(table: Mapping[str, objects_pb2.Node]) -> Callable[[str], bool]:
    """The `node_ok` the replicated orchestrator passes to plan_service."""
    return lambda node_id: keeps_tasks(table.get(node_id))


def all_ok(_node_id: str) -> bool:
    return True


def copy(obj: objects_pb2.Task) -> objects_pb2.Task:
    out = objects_pb2.Task()
    out.CopyFrom(obj)
    return out
