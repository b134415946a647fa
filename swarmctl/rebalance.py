"""`service rebalance` (a swarmlet extension): even a service's tasks out over its nodes.

Docker Swarm never moves running tasks, so nodes that join late stay empty until the
next update (moby#24103). RebalanceService asks the orchestrator to move tasks, one at
a time and start-first, until the service is spread as the scheduler would place it
now; the service's `rebalance_done` catches up with `rebalance_requested` when it is
finished (or given up). swarmctl polls GetService for that, then shows how many tasks
each node had before and has after:

    NODE      BEFORE   AFTER
    node-1    4        2
    node-2    0        2
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import typer

from common import states
from common.api import control_pb2, objects_pb2
from common.nodes import runs_tasks, takes_new_tasks
from swarmctl.client import ControlClient
from swarmctl.errors import EXIT_INTERRUPTED, SwarmctlError
from swarmctl.output import natural_key
from swarmctl.progress import seconds_text

POLL_INTERVAL = 0.2
COUNT_HEADERS = ("NODE", "BEFORE", "AFTER")


def tasks_per_node(tasks: Iterable[objects_pb2.Task]) -> Counter[str]:
    """How many of the tasks are placed on each node and meant to run there."""
    counts: Counter[str] = Counter()
    for task in tasks:
        if (
            task.node_id
            and task.desired_state <= states.RUNNING
            and not states.is_terminal(task.status.state)
        ):
            counts[task.node_id] += 1
    return counts


def count_rows(
    before: Counter[str], after: Counter[str], nodes: Iterable[objects_pb2.Node]
) -> list[list[str]]:
    """NODE BEFORE AFTER for each node with tasks and each node that could take some.

    Nodes are shown by hostname, sorted; a node that is gone shows its id.
    """
    nodes = list(nodes)
    names = {n.id: n.description.hostname or n.id for n in nodes}
    usable = {n.id for n in nodes if takes_new_tasks(n) and runs_tasks(n)}
    node_ids = set(before) | set(after) | usable
    rows = [[names.get(i, i), str(before[i]), str(after[i])] for i in node_ids]
    return sorted(rows, key=lambda r: natural_key(r[0]))


def service_tasks(client: ControlClient, service_id: str) -> list[objects_pb2.Task]:
    return client.list_tasks(control_pb2.ListTasksRequest.Filters(service_ids=[service_id]))


@dataclass(frozen=True)
class Requested:
    """A rebalance asked for: the service as the manager answered, and its tasks before."""

    ref: str
    service: objects_pb2.Service
    before: Counter[str]

    @property
    def name(self) -> str:
        return self.service.spec.annotations.name or self.ref


def request_rebalance(client: ControlClient, ref: str) -> Requested:
    service = client.get_service(ref)
    before = tasks_per_node(service_tasks(client, service.id))
    updated = client.rebalance_service(service.id)
    return Requested(ref, updated if updated.id else service, before)


class ServiceGetter(Protocol):
    """The one control API call the wait makes (ControlClient's); tests replay answers."""

    def get_service(self, ref: str) -> objects_pb2.Service: ...


def wait_for_rebalance(
    client: ServiceGetter,
    requested: Requested,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> objects_pb2.Service:
    """Poll the service until its rebalance is done; SwarmctlError after `timeout`.

    Ctrl-C stops waiting (the rebalance goes on) and exits with code 130.
    """
    wanted = requested.service.rebalance_requested
    deadline = clock() + timeout
    try:
        while True:
            current = client.get_service(requested.service.id)
            if current.rebalance_done >= wanted:
                return current
            if clock() >= deadline:
                raise SwarmctlError(
                    f"service {requested.name} was not rebalanced within "
                    f"{seconds_text(timeout)}: the orchestrator is still moving its tasks (it "
                    "waits for a rolling update to end); see "
                    f"'swarmctl service ps {requested.name}'"
                )
            sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        typer.echo("Rebalancing continues in background.")
        typer.echo(f"Use 'swarmctl service ps {requested.name}' to check progress.")
        raise typer.Exit(EXIT_INTERRUPTED) from None
