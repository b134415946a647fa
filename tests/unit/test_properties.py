"""Property tests: a small in-memory cluster driven by the manager's real pure functions.

`Sim` holds the objects the cache would hold (nodes, tasks, one replicated service) and
runs the leader's loops on them the way the reconcilers commit their results:
- the orchestrator: `plan_service`, its plan committed with the orchestrator's own
  mutators (shut-downs, renumbering);
- the scheduler: `schedule_group` over incrementally kept `NodeInfos`, applied with the
  scheduler's own assign/explain mutators;
- an agent on every ready node: assigned tasks start, tasks told to stop stop, and
  reports go through the dispatcher's `forward_only` mutator;
- the task reaper: `tasks_to_delete`.
Hypothesis drives it through random node, service and failure events, interleaving the
loops in any order, and checks the invariants after every step and the convergence at
the end.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import states
from common.api import objects_pb2, types_pb2
from common.nodes import keeps_tasks
from common.timeutil import timestamp_seconds
from manager.dispatcher.status import forward_only
from manager.orchestrator.orchestrator import _renumber, _shut_down
from manager.orchestrator.replicated import plan_service
from manager.orchestrator.taskreaper import tasks_to_delete
from manager.scheduler.nodeinfo import NodeInfos
from manager.scheduler.pipeline import Pipeline
from manager.scheduler.scheduler import _assign, _explain, is_pending, schedule_group
from tests.unit import factories as f
from tests.unit.factories import NOW

HISTORY_LIMIT = 5
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def live(t: objects_pb2.Task) -> bool:
    """Wanted and not ended: the task the slot is counting on."""
    return t.desired_state <= states.RUNNING and not states.is_terminal(t.status.state)


def eligible(n: objects_pb2.Node) -> bool:
    return (
        n.status.state == types_pb2.NODE_STATE_READY
        and n.spec.availability == types_pb2.NODE_AVAILABILITY_ACTIVE
    )


def snapshot(infos: NodeInfos) -> dict[str, tuple[int, dict[str, int]]]:
    return {
        k: (i.total, {s: c for s, c in i.by_service.items() if c}) for k, i in infos.infos.items()
    }


def _int(value: object) -> int:
    """An action's number (actions are tuples of mixed types, drawn by hypothesis)."""
    assert isinstance(value, int), value
    return value


def _float(value: object) -> float:
    assert isinstance(value, int | float), value
    return float(value)


@dataclass
class Sim:
    svc: objects_pb2.Service
    now: float = NOW
    nodes: dict[str, objects_pb2.Node] = field(default_factory=dict)
    tasks: dict[str, objects_pb2.Task] = field(default_factory=dict)
    infos: NodeInfos = field(default_factory=NodeInfos)
    # The last observed state of every task ever seen (also after it was deleted).
    observed: dict[str, int] = field(default_factory=dict)
    created: int = 0
    joined: int = 0
    wake_at: float | None = None

    # ---- the store: every write goes through here, feeding the "cache" listeners ----

    def put_task(self, new: objects_pb2.Task) -> None:
        old = self.tasks.get(new.id)
        before = self.observed.get(new.id, states.NEW)
        assert new.status.state >= before, (
            f"task {new.id} went back from {before} to {new.status.state}"
        )
        self.observed[new.id] = new.status.state
        self.tasks[new.id] = new
        self.infos.task_changed(old, new, self.now)

    def delete_task(self, task_id: str) -> None:
        self.infos.task_changed(self.tasks.pop(task_id), None, self.now)

    def put_node(self, new: objects_pb2.Node) -> None:
        self.infos.node_changed(self.nodes.get(new.id), new)
        self.nodes[new.id] = new

    def delete_node(self, node_id: str) -> None:
        self.infos.node_changed(self.nodes.pop(node_id), None)

    def report(self, task: objects_pb2.Task, state: f.State, message: str) -> bool:
        status = objects_pb2.TaskStatus(state=state, message=message)
        status.timestamp.CopyFrom(f.timestamp(self.now))
        new = forward_only(status)(f.copy(task))
        if new is None:
            return False
        self.put_task(new)
        return True

    # ---- the leader's loops ------------------------------------------------------------

    def orchestrate(self) -> bool:
        def node_ok(node_id: str) -> bool:
            return keeps_tasks(self.nodes.get(node_id))

        plan = plan_service(self.svc, list(self.tasks.values()), node_ok, self.now, self.nodes)
        self.wake_at = plan.wake_at
        for s in plan.shutdowns:
            new = _shut_down(s)(f.copy(self.tasks[s.task_id]))
            if new is not None:
                self.put_task(new)
        for r in plan.renumbers:  # topology-aware scale-down
            moved = _renumber(r)(f.copy(self.tasks[r.task_id]))
            if moved is not None:
                self.put_task(moved)
        for t in plan.creates:
            self.created += 1
            t.meta.created_at.CopyFrom(f.timestamp(self.now + self.created * 1e-6))
            self.put_task(t)
        # Committing a plan leaves nothing more to do until something else changes.
        again = plan_service(self.svc, list(self.tasks.values()), node_ok, self.now, self.nodes)
        assert not again, f"plan not stable: {again}"
        return bool(plan)

    def schedule(self) -> bool:
        groups: dict[tuple[str, int], list[objects_pb2.Task]] = defaultdict(list)
        for t in self.tasks.values():
            if is_pending(t):
                groups[(t.service_id, t.spec_version)].append(t)
        changed = False
        for group in groups.values():
            group.sort(key=lambda t: (t.slot, timestamp_seconds(t.meta.created_at)))
            decisions = schedule_group(group, self.infos, Pipeline(), self.now)
            # As Scheduler.reconcile does: take the provisional counts out once the writes
            # are made; the writes count them again through the watch.
            for d in decisions:
                if d.node_id:
                    self.infos.infos[d.node_id].remove(self.tasks[d.task_id])
            for d in decisions:
                task = f.copy(self.tasks[d.task_id])
                new = _assign(d.node_id)(task) if d.node_id else _explain(d.explanation)(task)
                if new is not None:
                    self.put_task(new)
                    changed = True
        return changed

    def agent(self) -> bool:
        """Every ready node's agent takes one step on each of its tasks."""
        changed = False
        for t in sorted(self.tasks.values(), key=lambda t: t.id):
            node = self.nodes.get(t.node_id)
            if node is None or node.status.state != types_pb2.NODE_STATE_READY:
                continue  # no agent session: nothing is reported
            state = t.status.state
            if states.is_terminal(state) or state < states.ASSIGNED:
                continue
            if t.desired_state > states.RUNNING:
                changed |= self.report(t, states.SHUTDOWN, "shutdown")
            elif state < states.STARTING:
                changed |= self.report(t, states.STARTING, "starting")
            elif state < states.RUNNING:
                changed |= self.report(t, states.RUNNING, "started")
        return changed

    def reap(self) -> bool:
        # As TaskReaper.reconcile calls it: ended tasks of slots above N go too.
        replicas = self.svc.spec.replicated.replicas
        doomed = tasks_to_delete(list(self.tasks.values()), self.nodes, HISTORY_LIMIT, replicas)
        for t in doomed:
            self.delete_task(t.id)
        return bool(doomed)

    def loop(self) -> bool:
        changed = self.orchestrate()
        changed |= self.schedule()
        changed |= self.agent()
        return self.reap() or changed

    # ---- events from outside -------------------------------------------------------------

    def node_ids(self) -> list[str]:
        return sorted(self.nodes)

    def pick_node(self, i: int) -> objects_pb2.Node | None:
        ids = self.node_ids()
        if not ids:
            return None
        out = objects_pb2.Node()
        out.CopyFrom(self.nodes[ids[i % len(ids)]])
        return out

    def apply(self, action: tuple[object, ...]) -> None:
        kind = action[0]
        if kind == "join":
            self.joined += 1
            self.put_node(f.node(f"n{self.joined:02d}"))
        elif kind in ("down", "up", "drain", "activate", "label", "remove"):
            node = self.pick_node(_int(action[1]))
            if node is None:
                return
            if kind == "remove":
                self.delete_node(node.id)
                return
            if kind == "down":
                node.status.state = types_pb2.NODE_STATE_DOWN
            elif kind == "up":
                node.status.state = types_pb2.NODE_STATE_READY
            elif kind == "drain":
                node.spec.availability = types_pb2.NODE_AVAILABILITY_DRAIN
            elif kind == "activate":
                node.spec.availability = types_pb2.NODE_AVAILABILITY_ACTIVE
            else:
                node.spec.annotations.labels["zone"] = str(action[2])
            self.put_node(node)
        elif kind == "scale":
            self.svc = f.changed(self.svc, replicas=_int(action[1]))
        elif kind == "update":
            self.svc = f.changed(self.svc, image=f"app:v{self.svc.spec_version + 1}")
        elif kind == "fail":
            self.fail(_int(action[1]), f.State(_int(action[2])))
        elif kind == "time":
            self.now += _float(action[1])
        elif kind == "orchestrate":
            self.orchestrate()
        elif kind == "schedule":
            self.schedule()
        elif kind == "agent":
            self.agent()
        elif kind == "reap":
            self.reap()
        elif kind == "loop":
            self.loop()
        else:  # pragma: no cover
            raise AssertionError(kind)

    def fail(self, i: int, outcome: f.State) -> None:
        """A started task on a reachable node ends by itself."""
        candidates = [
            t
            for t in sorted(self.tasks.values(), key=lambda t: t.id)
            if t.desired_state <= states.RUNNING
            and states.ASSIGNED <= t.status.state <= states.RUNNING
            and t.node_id in self.nodes
            and self.nodes[t.node_id].status.state == types_pb2.NODE_STATE_READY
        ]
        if candidates:
            self.report(candidates[i % len(candidates)], outcome, "task ended")

    # ---- invariants -------------------------------------------------------------------

    def check(self) -> None:
        per_slot = Counter(t.slot for t in self.tasks.values() if live(t))
        assert all(n == 1 for n in per_slot.values()), f"two live tasks in a slot: {per_slot}"
        fresh = NodeInfos()
        fresh.rebuild(self.nodes, self.tasks.values(), self.now)
        assert snapshot(self.infos) == snapshot(fresh), "incremental node counts drifted"

    def converge(self, rounds: int = 300) -> None:
        """Run the loops, letting time pass for restart delays, until nothing changes."""
        for _ in range(rounds):
            if self.loop():
                self.check()
                continue
            if self.wake_at is None:
                return
            self.now = max(self.now, self.wake_at) + 0.001
        raise AssertionError(f"no fixed point after {rounds} rounds")


NODE_ACTIONS = st.one_of(
    st.just(("join",)),
    st.tuples(st.sampled_from(["down", "up", "drain", "activate", "remove"]), st.integers(0, 7)),
    st.tuples(st.just("label"), st.integers(0, 7), st.sampled_from(["a", "b"])),
)
SERVICE_ACTIONS = st.one_of(
    st.tuples(st.just("scale"), st.integers(0, 6)),
    st.just(("update",)),
)
FAILURES = st.tuples(
    st.just("fail"), st.integers(0, 20), st.sampled_from([states.FAILED, states.COMPLETE])
)
LOOPS = st.one_of(
    st.tuples(st.just("time"), st.floats(0, 20)),
    st.sampled_from([("orchestrate",), ("schedule",), ("agent",), ("reap",), ("loop",)]),
)
ACTIONS = st.one_of(NODE_ACTIONS, SERVICE_ACTIONS, FAILURES, LOOPS, LOOPS)


def build(
    replicas: int,
    condition: str,
    delay: float | None,
    max_attempts: int,
    parallelism: int,
    spread: str | None = None,
) -> Sim:
    return Sim(
        f.service(
            replicas,
            condition=condition,
            delay=delay,
            max_attempts=max_attempts,
            parallelism=parallelism,
            spread=spread,
        )
    )


def check_converged(sim: Sim) -> None:
    replicas = sim.svc.spec.replicated.replicas
    usable = {n.id for n in sim.nodes.values() if eligible(n)}
    by_slot: dict[int, list[objects_pb2.Task]] = defaultdict(list)
    for t in sim.tasks.values():
        by_slot[t.slot].append(t)
    assert all(t.slot <= replicas for t in sim.tasks.values()), "tasks of removed slots left"
    for slot in range(1, replicas + 1):
        history = sorted(by_slot[slot], key=lambda t: timestamp_seconds(t.meta.created_at))
        alive = [t for t in history if live(t)]
        if not alive:
            newest = history[-1] if history else None
            assert newest is not None, f"slot {slot} was never filled"
            assert newest.restart_declined, f"slot {slot} is empty but its restart was not declined"
            continue
        (t,) = alive
        if usable:
            assert t.status.state == states.RUNNING, f"slot {slot}: {t.status}"
            assert t.node_id in usable, f"slot {slot} runs on {t.node_id}, not in {usable}"
            assert t.spec.container.image == sim.svc.spec.task.container.image
        else:
            assert t.status.state == states.PENDING, f"slot {slot}: {t.status}"
            assert t.status.err.startswith("no suitable node ("), t.status.err
    for slot, tasks in by_slot.items():
        assert len(tasks) <= HISTORY_LIMIT, f"slot {slot} keeps {len(tasks)} tasks"


@SETTINGS
@given(
    replicas=st.integers(0, 5),
    start_nodes=st.integers(0, 3),
    delay=st.sampled_from([None, 0.0, 1.0, 7.5]),
    parallelism=st.integers(0, 2),
    spread=st.sampled_from([None, "node.labels.zone"]),
    actions=st.lists(ACTIONS, min_size=10, max_size=60),
)
def test_cluster_converges_with_restart_any(
    replicas: int,
    start_nodes: int,
    delay: float | None,
    parallelism: int,
    spread: str | None,
    actions: list[tuple[object, ...]],
) -> None:
    """With `restart any` and no attempt limit every slot 1..N ends up running on an
    eligible node whenever there is one, and waits, explained, when there is none.
    (With a spread preference, scale-down picks its victims by label group and
    renumbers the survivors into 1..N.)"""
    sim = build(replicas, "any", delay, 0, parallelism, spread)
    for _ in range(start_nodes):
        sim.apply(("join",))
    for action in actions:
        sim.apply(action)
        sim.check()
    sim.converge()
    check_converged(sim)
    running = [t for t in sim.tasks.values() if live(t) and t.status.state == states.RUNNING]
    usable = any(eligible(n) for n in sim.nodes.values())
    assert len(running) == (sim.svc.spec.replicated.replicas if usable else 0)


@SETTINGS
@given(
    replicas=st.integers(1, 4),
    condition=st.sampled_from(["none", "on-failure", "any"]),
    max_attempts=st.integers(0, 3),
    delay=st.sampled_from([None, 0.0, 2.0]),
    actions=st.lists(ACTIONS, min_size=10, max_size=60),
    final_nodes=st.integers(0, 2),
)
def test_cluster_converges_with_any_restart_policy(
    replicas: int,
    condition: str,
    max_attempts: int,
    delay: float | None,
    actions: list[tuple[object, ...]],
    final_nodes: int,
) -> None:
    """Whatever the restart policy, a slot ends up running, waiting with an explanation,
    or empty because its policy declined a restart."""
    sim = build(replicas, condition, delay, max_attempts, 1)
    sim.apply(("join",))
    for action in actions:
        sim.apply(action)
        sim.check()
    for _ in range(final_nodes):  # nodes joining after the storm
        sim.apply(("join",))
    sim.converge()
    check_converged(sim)


# ---- smaller properties of single functions ---------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    states_=st.lists(
        st.tuples(st.sampled_from(["ready", "down"]), st.sampled_from(["active", "drain"])),
        max_size=6,
    ),
    n=st.integers(0, 20),
    existing=st.lists(st.integers(0, 5), max_size=6),
)
def test_schedule_group_spreads_over_eligible_nodes(
    states_: list[tuple[str, str]], n: int, existing: list[int]
) -> None:
    nodes = [f.node(f"n{i}", state=s, availability=a) for i, (s, a) in enumerate(states_)]
    other = f.service(service_id="other", name="other")
    svc = f.service(n)
    tasks = {}
    for i, count in enumerate(existing[: len(nodes)]):
        for slot in range(count):  # the other service's load on node i
            t = f.task(other, slot + 1, node=f"n{i}")
            tasks[t.id] = t
    table = NodeInfos()
    table.rebuild(f.nodes(*nodes), tasks.values(), NOW)
    before = {k: i.total for k, i in table.infos.items()}
    pending = [f.task(svc, s, state=states.PENDING) for s in range(1, n + 1)]
    decisions = schedule_group(pending, list(table.infos.values()), Pipeline())
    assert [d.task_id for d in decisions] == [t.id for t in pending]
    ok = {x.id for x in nodes if eligible(x)}
    if not ok:
        assert all(
            not d.node_id and d.explanation.startswith("no suitable node (") for d in decisions
        )
        return
    placed = Counter(d.node_id for d in decisions)
    assert set(placed) <= ok
    assert sum(placed.values()) == n
    counts = [placed.get(x, 0) for x in ok]
    assert max(counts) - min(counts) <= 1, "fewest tasks of this service first"
    for k, info in table.infos.items():
        assert info.total == before[k] + placed.get(k, 0)


@settings(max_examples=100, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.integers(1, 3),  # slot
            st.sampled_from([states.PENDING, states.RUNNING, states.FAILED, states.SHUTDOWN]),
            st.sampled_from([states.RUNNING, states.SHUTDOWN, states.REMOVE]),
            st.sampled_from(["n1", "down", "gone"]),
        ),
        max_size=25,
    ),
    limit=st.integers(-1, 6),
)
def test_reaper_keeps_what_may_still_run_and_the_newest_history(
    specs: list[tuple[int, f.State, f.State, str]], limit: int
) -> None:
    svc = f.service(3)
    nodes = f.nodes(f.node("n1"), f.node("down", state="down"))
    tasks = [
        f.task(svc, slot, state=state, desired=desired, node=node, created_at=NOW + i)
        for i, (slot, state, desired, node) in enumerate(specs)
    ]
    doomed = {t.id for t in tasks_to_delete(tasks, nodes, limit)}
    keep = max(limit, 1)

    def stopped(t: objects_pb2.Task) -> bool:
        return states.is_terminal(t.status.state) or not keeps_tasks(nodes.get(t.node_id))

    for t in tasks:
        if t.id in doomed:
            assert not live(t), "a task the service counts on was deleted"
            assert stopped(t), "a task that may still run was deleted"
    for slot in (1, 2, 3):
        # Removed tasks that stopped go anyway; of the others, the newest are kept.
        counted = [
            t
            for t in tasks
            if t.slot == slot and not (t.desired_state >= states.REMOVE and stopped(t))
        ]
        newest = sorted(counted, key=lambda t: t.meta.created_at.seconds)[-keep:]
        assert not {t.id for t in newest} & doomed, "the newest tasks of a slot are kept"
