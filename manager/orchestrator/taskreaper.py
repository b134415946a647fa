"""The task reaper: deletes tasks nobody needs any more.

- A task whose desired state is REMOVE is deleted once it has stopped, was never
  assigned, or its node is down or gone (the agent removes the container of a task that
  vanished from its assignments when it is back).
- Each slot keeps its newest `task_history_retention_limit` tasks (cluster setting,
  default 5); older ones that have ended are deleted, and their containers with them.
  But the newest task of the slot that ran (or was shut down by the manager, with its
  `shutdown_reason`) is kept beyond the limit when none of those kept ran: a
  replacement rejected again and again must not push out of `service ps` why the
  slot's task went ("node down", "task: unhealthy container").
- A task shut down because its node went down is history, not removed: it stays until
  the limit pushes it out (its agent stops its container when the node is back).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial

from common import states
from common.api import objects_pb2
from common.nodes import keeps_tasks
from common.timeutil import timestamp_seconds
from manager.reconciler import Reconciler
from manager.store import Delete, Event, Kind
from manager.store.views import CacheView, Committer

DEFAULT_HISTORY_LIMIT = 5


def _stopped(task: objects_pb2.Task, nodes: Mapping[str, objects_pb2.Node]) -> bool:
    """The task's container no longer runs, or never will (as far as we can know)."""
    return (
        states.is_terminal(task.status.state)
        or not task.node_id
        or not keeps_tasks(nodes.get(task.node_id))
    )


def _finished(task: objects_pb2.Task, nodes: Mapping[str, objects_pb2.Node]) -> bool:
    """The task is history: it ended, or is no longer wanted and does not run."""
    return states.is_terminal(task.status.state) or (
        not states.is_runnable(task.desired_state) and _stopped(task, nodes)
    )


def _ran(task: objects_pb2.Task) -> bool:
    """The task ran (it did not just fail to be placed, prepared or started), or the
    manager shut it down saying why: its entry tells the slot's story."""
    return bool(task.shutdown_reason) or states.RUNNING <= task.status.state <= states.FAILED


def tasks_to_delete(
    tasks: Sequence[objects_pb2.Task],
    nodes: Mapping[str, objects_pb2.Node],
    history_limit: int,
    max_slot: int | None = None,
) -> list[objects_pb2.Task]:
    """The tasks of one service that can be deleted now (`max_slot`: the replicated
    service's replica count; ended tasks of slots above it go too)."""
    doomed: dict[str, objects_pb2.Task] = {}
    by_slot: dict[tuple[int, str], list[objects_pb2.Task]] = defaultdict(list)
    for t in tasks:
        ended = _finished(t, nodes)
        if (t.desired_state >= states.REMOVE and _stopped(t, nodes)) or (
            max_slot is not None and t.slot > max_slot and ended
        ):
            doomed[t.id] = t
        else:
            by_slot[(t.slot, "" if t.slot else t.node_id)].append(t)
    keep = max(history_limit, 1)
    for slot_tasks in by_slot.values():
        if len(slot_tasks) <= keep:
            continue
        slot_tasks.sort(key=lambda t: timestamp_seconds(t.meta.created_at), reverse=True)
        older = slot_tasks[keep:]
        if not any(map(_ran, slot_tasks[:keep])):
            # The newest that ran says why the slot's task went: it stays.
            older = [t for t in older if t is not next(filter(_ran, older), None)]
        for t in older:
            if _finished(t, nodes):
                doomed[t.id] = t
    return list(doomed.values())


Slot = int | str  # a slot number, or "@" and the node id for a global service's task


def slot_of(task: objects_pb2.Task) -> Slot:
    """The task's slot within its service."""
    return task.slot if task.slot else f"@{task.node_id}"


def slot_key(task: objects_pb2.Task) -> str:
    """The key of the task's slot: its service and slot number (or node, for a global
    service). The reaper works slot by slot, so its work follows the changes, not the
    size of the services they happen in."""
    return f"{task.service_id}/{slot_of(task)}"


def _parse_slot_key(key: str) -> tuple[str, Slot]:
    service_id, _, slot = key.partition("/")
    return service_id, (slot if slot.startswith("@") else int(slot))


class TaskReaper(Reconciler):
    """Deletes the tasks `tasks_to_delete` picks, slot by slot."""

    name = "taskreaper"
    debounce = 0.1
    max_delay = 1.0

    def __init__(self, cache: CacheView, store: Committer) -> None:
        super().__init__()
        self.cache = cache
        self.store = store
        # The ids of every task, by service and then slot: one id, or a tuple when the
        # slot keeps history. There are as many slots as tasks, so an entry is kept
        # small: no key string of its own, and the cache table's id string (`Event.id`).
        self.slots: dict[str, dict[Slot, str | tuple[str, ...]]] = {}
        cache.add_listener(self._on_event)
        cache.add_resync_listener(self.mark_everything)

    def _index(
        self, old: objects_pb2.Task | None, new: objects_pb2.Task | None, task_id: str
    ) -> bool:
        """Move the task's id to its new slot; whether it changed slots."""
        old_at = (old.service_id, slot_of(old)) if old is not None else None
        new_at = (new.service_id, slot_of(new)) if new is not None else None
        if old_at == new_at:
            return False  # most changes (status reports) leave a task in its slot
        if old_at is not None:
            self._remove(*old_at, task_id)
        if new_at is not None:
            service_id, slot = new_at
            by_slot = self.slots.get(service_id)
            if by_slot is None:
                by_slot = self.slots[service_id] = {}
            ids = by_slot.get(slot)
            if ids is None:
                by_slot[slot] = task_id
            elif isinstance(ids, str):
                if ids != task_id:
                    by_slot[slot] = (ids, task_id)
            elif task_id not in ids:
                by_slot[slot] = (*ids, task_id)
        return True

    def _remove(self, service_id: str, slot: Slot, task_id: str) -> None:
        by_slot = self.slots.get(service_id)
        ids = by_slot.get(slot) if by_slot is not None else None
        if by_slot is None or ids is None:
            return
        rest = tuple(i for i in ((ids,) if isinstance(ids, str) else ids) if i != task_id)
        if len(rest) > 1:
            by_slot[slot] = rest
        elif rest:
            by_slot[slot] = rest[0]
        else:
            del by_slot[slot]
            if not by_slot:
                del self.slots[service_id]

    def _alone_and_wanted(self, task: objects_pb2.Task) -> bool:
        """The task is the only one in its slot, and neither ended nor unwanted: its
        slot has nothing `tasks_to_delete` would pick."""
        ids = self.slots.get(task.service_id, {}).get(slot_of(task))
        return (
            isinstance(ids, str)
            and states.is_runnable(task.desired_state)
            and not states.is_terminal(task.status.state)
        )

    def ids_in(self, key: str) -> tuple[str, ...]:
        """The ids of the tasks in the slot of `key` (see `slot_key`)."""
        service_id, slot = _parse_slot_key(key)
        ids = self.slots.get(service_id, {}).get(slot, ())
        return (ids,) if isinstance(ids, str) else ids

    def _slot_keys(self, service_id: str) -> list[str]:
        return [f"{service_id}/{slot}" for slot in self.slots.get(service_id, {})]

    def _on_event(self, ev: Event) -> None:
        if ev.kind is Kind.TASK:
            old, new = ev.old, ev.new
            moved = self._index(old, new, ev.id)
            if old is None and new is not None and self._alone_and_wanted(new):
                # Most tasks are created in a slot of their own (a new service, a
                # scale-up): nothing there to reap, and a pass over each of them would
                # cost a look-up and a decode per task while a large service starts.
                return
            if new is not None and (
                old is None
                or moved
                or old.desired_state != new.desired_state
                or (
                    states.is_terminal(new.status.state)
                    and not states.is_terminal(old.status.state)
                )
            ):
                self.mark(slot_key(new))
        elif ev.kind is Kind.NODE and not keeps_tasks(ev.new):
            self.mark_many(
                slot_key(t) for t in self.cache.tasks_by_node.get(ev.obj.id, {}).values()
            )
        elif ev.kind is Kind.SERVICE and ev.new is not None:
            old, new = ev.old, ev.new
            if old is None or old.spec.replicated.replicas != new.spec.replicated.replicas:
                # Ended tasks of slots above a lower replica count go too.
                self.mark_many(self._slot_keys(new.id))
        elif ev.kind is Kind.CLUSTER:
            self.mark_everything()

    def all_keys(self) -> Iterable[str]:
        # Called on start and after a re-list: index everything from the cache again.
        self.slots.clear()
        for task_id, task in self.cache.tasks.items():
            self._index(None, task, task_id)
        return [key for service_id in self.slots for key in self._slot_keys(service_id)]

    def history_limit(self) -> int:
        cluster = self.cache.cluster()
        if cluster is None or not cluster.spec.HasField("orchestration"):
            return DEFAULT_HISTORY_LIMIT
        return int(cluster.spec.orchestration.task_history_retention_limit)

    def _doomed(
        self,
        tasks: Sequence[objects_pb2.Task],
        nodes: Mapping[str, objects_pb2.Node],
        limit: int,
    ) -> list[objects_pb2.Task]:
        """The tasks of one slot to delete now."""
        service = self.cache.services.get(tasks[0].service_id)
        max_slot = (
            service.spec.replicated.replicas
            if service is not None and service.spec.HasField("replicated")
            else None
        )
        return tasks_to_delete(tasks, nodes, limit, max_slot)

    async def reconcile(self, keys: set[str]) -> None:
        limit = self.history_limit()
        nodes = self.cache.nodes
        ops: list[Delete] = []
        cached = self.cache.tasks
        for key in keys:
            tasks = [t for t in map(cached.get, self.ids_in(key)) if t is not None]
            if not tasks:
                continue
            # A slot whose decision raises is left out and retried on its own.
            doomed = self.isolate(
                key,
                partial(self._doomed, tasks, nodes, limit),
                slot=key,
                service_id=tasks[0].service_id,
            )
            for t in doomed or ():
                ops.append(Delete(Kind.TASK, t.id, check=_still_doomed(t.desired_state)))
        if not ops:
            return
        result = await self.store.commit(ops)
        await self.cache.wait_for(result.revision)
        self.log.info("deleted tasks", tasks=len(result.deleted))


def _still_doomed(desired: int) -> Callable[[objects_pb2.Task], bool]:
    # The task must not have been revived since the decision (desired state only rises).
    return lambda current: current.desired_state >= desired
