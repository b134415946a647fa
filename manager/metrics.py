"""The manager's Prometheus metrics.

Counts of tasks and nodes by state are kept from the cache's change stream (a scrape
never walks the store); latencies are observed where the work happens.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge, Histogram

from common import states
from common.api import types_pb2
from common.metrics import by_state
from manager.store import Cache, Event, Kind

TASKS = Gauge("swarmlet_tasks", "Tasks by observed state.", ["state"])
NODES = Gauge("swarmlet_nodes", "Nodes by status.", ["status"])
SERVICES = Gauge("swarmlet_services", "Services.")
PLACEMENTS = PromCounter("swarmlet_placements_total", "Tasks the scheduler assigned to nodes.")
LAST_PLACEMENT = Gauge(
    "swarmlet_last_placement_timestamp_seconds",
    "When the scheduler last assigned tasks to nodes (Unix time; 0: not yet).",
)
SCHEDULING_LATENCY = Histogram(
    "swarmlet_scheduling_latency_seconds",
    "From a task's creation to its assignment to a node.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SESSIONS = Gauge("swarmlet_dispatcher_sessions", "Agent sessions held by this manager.")
HEARTBEATS = PromCounter("swarmlet_heartbeats_total", "Heartbeats received from agents.")
STATUS_REPORTS = PromCounter("swarmlet_task_status_writes_total", "Task status updates written.")
STATUS_BACKLOG = Gauge(
    "swarmlet_task_status_reports_pending",
    "Task status reports received and not yet written (the status writer's backlog).",
)
ETCD_TXN = Histogram(
    "swarmlet_etcd_txn_seconds",
    "Duration of etcd transactions.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RECONCILE = Histogram(
    "swarmlet_reconcile_seconds",
    "Duration of one reconciler pass.",
    ["reconciler"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LEADER = Gauge("swarmlet_is_leader", "1 while this manager is the leader.")
NODES_DOWN = PromCounter("swarmlet_nodes_declared_down_total", "Nodes declared down.")


class StateCounts:
    """Keeps the task and node gauges current from cache events."""

    def __init__(self, cache: Cache) -> None:
        self.tasks: Counter[int] = Counter()
        self.nodes: Counter[int] = Counter()
        cache.add_listener(self._on_event)
        cache.add_resync_listener(lambda: self._rebuild(cache))
        self._rebuild(cache)

    def _rebuild(self, cache: Cache) -> None:
        self.tasks = Counter(t.status.state for t in cache.tasks.values())
        self.nodes = Counter(n.status.state for n in cache.nodes.values())
        for state in list(self.tasks):
            TASKS.labels(states.state_name(state)).set(self.tasks[state])
        for state in list(self.nodes):
            NODES.labels(_node_status(state)).set(self.nodes[state])
        SERVICES.set(len(cache.services))

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.TASK:
            old, new = ev.old, ev.new
            before = old.status.state if old is not None else None
            after = new.status.state if new is not None else None
            if before != after:  # a write that keeps the state moves no gauge
                _move(self.tasks, before, after, _task_gauges)
        elif ev.kind is Kind.NODE:
            _move(self.nodes, _node_state(ev.old), _node_state(ev.new), _node_gauges)
        elif ev.kind is Kind.SERVICE and (ev.old is None or ev.new is None):
            SERVICES.inc(1 if ev.new is not None else -1)


def _node_status(state: int) -> str:
    return types_pb2.NodeState.Name(state).removeprefix("NODE_STATE_").lower()  # type: ignore[arg-type]


def _node_state(node: Any) -> int | None:
    return node.status.state if node is not None else None


_task_gauges = by_state(TASKS, states.state_name)
_node_gauges = by_state(NODES, _node_status)


def _move(
    counts: Counter[int], before: int | None, after: int | None, gauge: Callable[[int], Any]
) -> None:
    if before is not None:
        counts[before] -= 1
        gauge(before).set(counts[before])
    if after is not None:
        counts[after] += 1
        gauge(after).set(counts[after])
