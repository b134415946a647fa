"""A manager's node that no agent runs (no engine) takes no tasks: when a task fits
nowhere, the explanation says that such a node was passed over, if the task would
otherwise have gone there (issue: "constraints not satisfied on 1 node" with no word
about the manager having no engine)."""

from __future__ import annotations

from collections.abc import Mapping

from common import states
from common.api import objects_pb2, types_pb2
from manager.scheduler.nodeinfo import NodeInfos
from manager.scheduler.pipeline import ENGINELESS_REASON, Pipeline
from manager.scheduler.scheduler import Scheduler, schedule_group
from tests.fakes import fake_store
from tests.unit import factories as f

NOW = f.NOW
ZONE_A = "node.labels.zone==a"


def manager(
    node_id: str = "m1",
    *,
    engine: bool = False,
    availability: str = "active",
    labels: Mapping[str, str] | None = None,
) -> objects_pb2.Node:
    """A manager's node as `ensure_manager_node` makes it (no session: state unknown);
    with `engine`, as it is once an agent opened a session as that node."""
    state = "ready" if engine else "unknown"
    n = f.node(node_id, state=state, availability=availability, labels=labels)
    n.role = types_pb2.NODE_ROLE_MANAGER
    n.spec.desired_role = types_pb2.NODE_ROLE_MANAGER
    n.description.platform.os = "linux"
    n.description.platform.architecture = "x86_64"
    if engine:
        n.description.engine.engine_version = "20.10.24"
    return n


def tasks(*constraints: str, n: int = 1) -> list[objects_pb2.Task]:
    svc = f.service(n)
    svc.spec.task.placement.constraints.extend(constraints)
    return [f.task(svc, slot, state=states.PENDING) for slot in range(1, n + 1)]


def table(*nodes: objects_pb2.Node) -> NodeInfos:
    out = NodeInfos()
    out.rebuild(f.nodes(*nodes), [], NOW)
    return out


def outcome(nodes: NodeInfos, group: list[objects_pb2.Task]) -> list[str]:
    decisions = schedule_group(group, nodes, Pipeline(engineless=nodes.engineless), NOW)
    return [d.node_id or d.explanation for d in decisions]


def test_a_labelled_manager_without_an_engine_is_named() -> None:
    # The case: the manager's node (labelled by the user) and the agent's node.
    nodes = table(manager(labels={"zone": "a"}), f.node("w1"))
    assert outcome(nodes, tasks(ZONE_A)) == [
        "no suitable node (1 manager with no agent; scheduling constraints not satisfied on 1 node)"
    ]


def test_the_only_node_a_manager_without_an_engine() -> None:
    assert outcome(table(manager()), tasks()) == ["no suitable node (1 manager with no agent)"]


def test_several_managers_without_an_engine() -> None:
    nodes = table(manager("m1"), manager("m2"), f.node("w1", availability="drain"))
    assert outcome(nodes, tasks()) == [
        "no suitable node (2 managers with no agent; 1 node not available for new tasks)"
    ]


def test_managers_the_task_would_not_go_to_anyway_are_not_named() -> None:
    # Not matching the constraints, another platform, or drained: an agent on it
    # would not change where the task can go.
    nodes = table(manager("m1"), manager("m2", availability="drain", labels={"zone": "a"}))
    assert outcome(nodes, tasks(ZONE_A)) == ["no suitable node (no nodes in the cluster)"]
    arm = tasks()
    arm[0].spec.placement.platforms.add(os="linux", architecture="arm64")
    assert outcome(nodes, arm) == ["no suitable node (no nodes in the cluster)"]


def test_a_task_that_fits_elsewhere_is_placed_as_before() -> None:
    nodes = table(manager(labels={"zone": "a"}), f.node("w1", labels={"zone": "a"}))
    assert outcome(nodes, tasks(ZONE_A, n=2)) == ["w1", "w1"]


def test_the_manager_takes_tasks_once_an_agent_runs_it() -> None:
    nodes = table(manager(labels={"zone": "a"}), f.node("w1"))
    assert "1 manager with no agent" in outcome(nodes, tasks(ZONE_A))[0]
    # The agent's session brings the engine's description and READY.
    nodes.node_changed(manager(labels={"zone": "a"}), manager(engine=True, labels={"zone": "a"}))
    assert nodes.engineless == {}
    assert outcome(nodes, tasks(ZONE_A)) == ["m1"]
    # Removed: neither a candidate nor named.
    nodes.node_changed(manager(engine=True), None)
    nodes.node_changed(None, manager("m2"))
    assert set(nodes.engineless) == {"m2"}
    nodes.node_changed(manager("m2"), None)
    assert nodes.engineless == {}


def test_the_scheduler_explains_with_its_own_nodes_and_in_dry_runs() -> None:
    scheduler = Scheduler(*fake_store(), clock=lambda: NOW)
    m1 = manager(labels={"zone": "a"})
    scheduler.nodes.rebuild(f.nodes(m1, f.node("w1")), [], NOW)
    group = tasks(ZONE_A)
    release = scheduler.place_new(group)
    release()
    assert group[0].status.err == (
        "no suitable node (1 manager with no agent; scheduling constraints not satisfied on 1 node)"
    )
    preview = scheduler.preview(tasks(ZONE_A))
    reasons = {(r.node.id, r.reason) for r in preview.rejections}
    assert reasons == {("w1", "scheduling constraints not satisfied"), ("m1", ENGINELESS_REASON)}
    # A node event keeps the shared table current: the manager gains an engine.
    scheduler.nodes.node_changed(m1, manager(engine=True, labels={"zone": "a"}))
    again = tasks(ZONE_A)
    scheduler.place_new(again)()
    assert again[0].node_id == "m1"
