"""The rules several parts of swarmlet apply, each written once (manager/domain/ and
common/'s defaults, modes, nodes and rollout): the parts that apply them must agree.

- Which nodes a global service runs on: the scheduler's filters, the global
  orchestrator and the control API's desired count decide alike.
- Which defaults a service gets: a spec swarmctl builds and a bare spec the control
  API completes end up with the same restart policy and rollout settings.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import defaults
from common.api import objects_pb2, specs_pb2, types_pb2
from common.modes import MODES
from common.nodes import keeps_tasks, runs_tasks, takes_new_tasks
from common.rollout import ROLLING_BACK, monitor_seconds, rollout_config
from common.timeutil import duration, duration_seconds
from manager.controlapi.services import service_counts
from manager.domain.placement import matches_placement
from manager.domain.platforms import matches_platforms, normalise_arch
from manager.domain.specs import restart_delay, with_defaults
from manager.orchestrator.global_mode import plan_global
from manager.scheduler.filters import ConstraintFilter, PlatformFilter, ReadyFilter
from manager.scheduler.nodeinfo import NodeInfo
from manager.store import Cache
from swarmctl.service_spec import CreateOptions, build_spec
from tests.fakes import offline_cache
from tests.unit import factories as f
from tests.unit.factories import NOW

CONSTRAINTS = [
    "node.labels.zone==east",
    "node.labels.zone!=west",
    "node.platform.os==linux",
    "node.platform.arch==amd64",
    "node.role==worker",
]
PLATFORMS = [("linux", "amd64"), ("linux", ""), ("", "arm64"), ("windows", "amd64")]


@st.composite
def cluster_nodes(draw: st.DrawFn) -> dict[str, objects_pb2.Node]:
    out = {}
    for i in range(draw(st.integers(1, 6))):
        zone = draw(st.sampled_from([None, "east", "west", "EAST"]))
        node = f.node(
            f"n{i}",
            state=draw(st.sampled_from(["ready", "down", "unknown"])),
            availability=draw(st.sampled_from(["active", "pause", "drain"])),
            labels={"zone": zone} if zone else {},
        )
        node.description.platform.os = draw(st.sampled_from(["linux", "Linux", "windows"]))
        node.description.platform.architecture = draw(
            st.sampled_from(["x86_64", "amd64", "aarch64", "armv7l"])
        )
        node.description.engine.engine_version = "20.10"
        out[node.id] = node
    return out


@st.composite
def global_services(draw: st.DrawFn) -> objects_pb2.Service:
    svc = f.global_service()
    placement = svc.spec.task.placement
    placement.constraints.extend(draw(st.lists(st.sampled_from(CONSTRAINTS), unique=True)))
    for os_, arch in draw(st.lists(st.sampled_from(PLATFORMS), unique=True)):
        placement.platforms.add(os=os_, architecture=arch)
    return svc


def scheduler_accepts(svc: objects_pb2.Service, node: objects_pb2.Node) -> bool:
    """Whether the scheduler's node filters (those that read the node, not its load)
    take a task of `svc` on `node`, by both their per-node check and their matcher."""
    task = objects_pb2.Task(spec=svc.spec.task)
    info = NodeInfo(node)
    verdicts = set()
    for flt in (ReadyFilter(), ConstraintFilter(), PlatformFilter()):
        if flt.enabled(task):
            verdicts.add(("check", flt.name, flt.check(task, info)))
            verdicts.add(("matcher", flt.name, flt.matcher(task)(info)))
    checks = {v for kind, _, v in verdicts if kind == "check"}
    matchers = {v for kind, _, v in verdicts if kind == "matcher"}
    assert (False in checks) == (False in matchers)
    return False not in checks


def control_api_cache(nodes: dict[str, objects_pb2.Node], svc: objects_pb2.Service) -> Cache:
    """A real Cache, fed the objects directly (no etcd: nothing here reads it)."""
    return offline_cache(*nodes.values(), svc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=cluster_nodes(), svc=global_services())
def test_scheduler_orchestrator_and_control_api_agree_on_a_global_services_nodes(
    nodes: dict[str, objects_pb2.Node], svc: objects_pb2.Service
) -> None:
    placement = svc.spec.task.placement
    eligible = {
        n.id for n in nodes.values() if takes_new_tasks(n) and matches_placement(placement, n)
    }
    assert {n.id for n in nodes.values() if scheduler_accepts(svc, n)} == eligible
    assert {t.node_id for t in plan_global(svc, [], nodes, NOW).creates} == eligible
    counts = service_counts(control_api_cache(nodes, svc), svc)
    assert counts.desired == len(eligible)


@pytest.mark.parametrize(
    ("state", "availability", "takes", "keeps"),
    [
        ("ready", "active", True, True),
        ("ready", "pause", False, True),
        ("ready", "drain", False, False),
        ("down", "active", False, False),
        ("unknown", "active", False, True),
    ],
)
def test_node_predicates(state: str, availability: str, takes: bool, keeps: bool) -> None:
    node = f.node(state=state, availability=availability)
    assert takes_new_tasks(node) is takes
    assert NodeInfo(node).usable is takes
    assert keeps_tasks(node) is keeps
    assert not takes_new_tasks(None)
    assert not keeps_tasks(None)


def test_a_manager_runs_tasks_only_with_an_engine() -> None:
    manager = objects_pb2.Node(id="m", role=types_pb2.NODE_ROLE_MANAGER)
    assert not runs_tasks(manager)
    manager.description.engine.engine_version = "20.10"
    assert runs_tasks(manager)
    assert runs_tasks(objects_pb2.Node(id="w", role=types_pb2.NODE_ROLE_WORKER))


@pytest.mark.parametrize(
    ("reported", "wanted", "match"),
    [
        (("linux", "x86_64"), [("linux", "amd64")], True),
        (("Linux", "aarch64"), [("", "arm64")], True),
        (("linux", "armv7l"), [("linux", "arm")], True),
        (("linux", "x86_64"), [("windows", "")], False),
        (("linux", "x86_64"), [], True),
    ],
)
def test_platform_matching(
    reported: tuple[str, str], wanted: list[tuple[str, str]], match: bool
) -> None:
    node = types_pb2.Platform(os=reported[0], architecture=reported[1])
    platforms = [types_pb2.Platform(os=o, architecture=a) for o, a in wanted]
    assert matches_platforms(platforms, node) is match
    assert normalise_arch("X86_64") == "amd64"


@pytest.mark.parametrize("mode", MODES)
def test_swarmctl_and_the_control_api_write_the_same_defaults(mode: str) -> None:
    """A spec sent without them (raw gRPC, a Docker API client) gets what swarmctl
    writes into the specs it builds; and completing swarmctl's changes none of it."""
    cli = build_spec(CreateOptions(image="nginx", mode=mode))
    bare = specs_pb2.ServiceSpec()
    bare.task.container.image = "nginx"
    getattr(bare, mode).SetInParent()
    completed = with_defaults(bare)
    assert completed.task.restart == cli.task.restart
    assert completed.update == cli.update
    assert completed.rollback == cli.rollback
    assert with_defaults(cli).task.restart == cli.task.restart
    assert with_defaults(cli).update == cli.update
    assert duration_seconds(completed.task.container.stop_grace_period) == (
        defaults.STOP_GRACE_PERIOD
    )
    assert restart_delay(completed.task) == defaults.RESTART_DELAY
    assert monitor_seconds(completed.update) == defaults.UPDATE_MONITOR


def test_the_rollout_in_force() -> None:
    svc = f.service()
    svc.spec.update.monitor.CopyFrom(duration(7))
    svc.spec.rollback.monitor.CopyFrom(duration(3))
    for state in objects_pb2.UpdateStatus.UpdateState.values():
        svc.update_status.state = state
        expected = 3.0 if state in ROLLING_BACK else 7.0
        assert monitor_seconds(rollout_config(svc)) == expected
    assert monitor_seconds(specs_pb2.UpdateConfig()) == defaults.UPDATE_MONITOR
