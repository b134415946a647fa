"""Each scheduling filter on its own (manager/scheduler/filters.py): when it applies,
which nodes it accepts, and what it says about the nodes it turned down; and the
constraint expressions it reads (constraints.py), with their parse errors.

Every case checks both ways a filter is asked: `check(task, info)` and the bound
`matcher(task)(info)` the pipeline uses for a pass over many nodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import pytest

from common import states
from common.api import objects_pb2, types_pb2
from manager.domain.constraints import (
    ConstraintError,
    check_spread_descriptor,
    parse,
    spread_value,
)
from manager.domain.platforms import normalise_arch
from manager.scheduler.filters import (
    ConstraintFilter,
    CPUFilter,
    EngineFilter,
    Filter,
    HostPortFilter,
    Matcher,
    MaxReplicasFilter,
    MemoryFilter,
    PlatformFilter,
    ReadyFilter,
    StaticFilter,
    default_filters,
)
from manager.scheduler.nodeinfo import NodeInfo
from manager.scheduler.pipeline import Pipeline
from tests.unit import factories as f

CPU = 1_000_000_000
GIB = 1024**3
TCP, UDP, SCTP = (
    types_pb2.PORT_PROTOCOL_TCP,
    types_pb2.PORT_PROTOCOL_UDP,
    types_pb2.PORT_PROTOCOL_SCTP,
)


def node(
    node_id: str = "n1",
    *,
    cpus: float = 4,
    gib: float = 8,
    labels: Mapping[str, str] | None = None,
    engine_labels: Mapping[str, str] | None = None,
    hostname: str | None = None,
    addr: str = "10.0.0.1",
    role: int = types_pb2.NODE_ROLE_WORKER,
    os: str = "linux",
    arch: str = "x86_64",
    state: str = "ready",
    availability: str = "active",
) -> objects_pb2.Node:
    n = f.node(node_id, state=state, availability=availability, labels=labels, hostname=hostname)
    n.role = role  # type: ignore[assignment]
    n.status.addr = addr
    n.description.resources.nano_cpus = int(cpus * CPU)
    n.description.resources.memory_bytes = int(gib * GIB)
    n.description.platform.os = os
    n.description.platform.architecture = arch
    n.description.engine.engine_version = "27.0"
    n.description.engine.labels.update(engine_labels or {})
    return n


def task(
    *,
    service_id: str = "svc1",
    cpus: float = 0,
    gib: float = 0,
    constraints: Iterable[str] = (),
    platforms: Iterable[tuple[str, str]] = (),
    ports: Iterable[tuple[int, int, int]] = (),  # (published, protocol, publish mode)
    max_replicas: int = 0,
    node_id: str = "",
) -> objects_pb2.Task:
    t = f.task(f.service(service_id=service_id), 1, state=states.PENDING)
    t.node_id = node_id
    t.spec.resources.reservations.nano_cpus = int(cpus * CPU)
    t.spec.resources.reservations.memory_bytes = int(gib * GIB)
    t.spec.placement.constraints.extend(constraints)
    for os_, arch in platforms:
        t.spec.placement.platforms.add(os=os_, architecture=arch)
    for published, protocol, mode in ports:
        t.endpoint.ports.add(
            target_port=80,
            published_port=published,
            protocol=protocol,
            publish_mode=mode,
        )
    t.spec.placement.max_replicas = max_replicas
    return t


def on(n: objects_pb2.Node, *tasks: objects_pb2.Task) -> NodeInfo:
    """The node with `tasks` (running there) counted in."""
    info = NodeInfo(n)
    for t in tasks:
        info.add(t)
    return info


def accepts(flt: Filter, t: objects_pb2.Task, info: NodeInfo) -> bool:
    """The filter's verdict, the same whether asked through check or a bound matcher."""
    verdict = flt.check(t, info)
    matcher = getattr(flt, "matcher", None)
    if matcher is not None:
        assert matcher(t)(info) is verdict, "check and matcher disagree"
    return verdict


def test_the_default_pipeline_order() -> None:
    assert [type(x) for x in default_filters()] == [
        ReadyFilter,
        EngineFilter,
        CPUFilter,
        MemoryFilter,
        ConstraintFilter,
        PlatformFilter,
        HostPortFilter,
        MaxReplicasFilter,
    ]


# ---- ready and availability ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "availability", "ok"),
    [
        ("ready", "active", True),
        ("ready", "pause", False),
        ("ready", "drain", False),
        ("down", "active", False),
        ("unknown", "active", False),
        ("disconnected", "active", False),
    ],
)
def test_ready_filter(state: str, availability: str, ok: bool) -> None:
    flt = ReadyFilter()
    t = task()
    assert flt.enabled(t)
    assert accepts(flt, t, on(node(state=state, availability=availability))) is ok


def test_ready_filter_follows_a_replaced_node_object() -> None:
    info = on(node())
    assert accepts(ReadyFilter(), task(), info)
    info.node = node(availability="drain")
    assert not accepts(ReadyFilter(), task(), info)


# ---- resources --------------------------------------------------------------------------


def test_cpu_filter_applies_only_to_tasks_reserving_cpu() -> None:
    assert not CPUFilter().enabled(task())
    assert not CPUFilter().enabled(task(gib=1))
    assert CPUFilter().enabled(task(cpus=0.1))


@pytest.mark.parametrize(
    ("capacity", "held", "wanted", "ok"),
    [
        (4, [], 4, True),  # exactly fits
        (4, [], 4.5, False),
        (4, [1, 2], 1, True),  # what is left exactly fits
        (4, [1, 2], 1.5, False),
        (0, [], 0.1, False),  # a node reporting no CPUs takes no reservation
    ],
)
def test_cpu_filter_compares_with_capacity_minus_reservations(
    capacity: float, held: list[float], wanted: float, ok: bool
) -> None:
    info = on(node(cpus=capacity), *(task(service_id=f"o{i}", cpus=c) for i, c in enumerate(held)))
    assert accepts(CPUFilter(), task(cpus=wanted), info) is ok


def test_cpu_filter_ignores_memory() -> None:
    info = on(node(cpus=1, gib=1), task(service_id="other", gib=1))
    assert accepts(CPUFilter(), task(cpus=1, gib=1), info)


def test_memory_filter_applies_only_to_tasks_reserving_memory() -> None:
    assert not MemoryFilter().enabled(task())
    assert not MemoryFilter().enabled(task(cpus=1))
    assert MemoryFilter().enabled(task(gib=0.001))


@pytest.mark.parametrize(
    ("capacity", "held", "wanted", "ok"),
    [
        (8, [], 8, True),
        (8, [], 8.25, False),
        (8, [2, 4], 2, True),
        (8, [2, 4], 2.5, False),
        (0, [], 0.5, False),
    ],
)
def test_memory_filter_compares_with_capacity_minus_reservations(
    capacity: float, held: list[float], wanted: float, ok: bool
) -> None:
    info = on(node(gib=capacity), *(task(service_id=f"o{i}", gib=g) for i, g in enumerate(held)))
    assert accepts(MemoryFilter(), task(gib=wanted), info) is ok


def test_freed_reservations_count_again() -> None:
    held = task(service_id="other", cpus=3, gib=6)
    info = on(node(cpus=4, gib=8), held)
    big = task(cpus=2, gib=4)
    assert not accepts(CPUFilter(), big, info)
    assert not accepts(MemoryFilter(), big, info)
    info.remove(held)
    assert accepts(CPUFilter(), big, info)
    assert accepts(MemoryFilter(), big, info)


# ---- constraints ------------------------------------------------------------------------

N1 = node(
    "node-id-1",
    hostname="web-1",
    addr="192.168.1.10",
    labels={"zone": "East", "ssd": "true"},
    engine_labels={"disk": "ssd"},
)
MANAGER = node("node-id-2", role=types_pb2.NODE_ROLE_MANAGER, arch="aarch64", os="Linux")


@pytest.mark.parametrize(
    ("expr", "n1", "manager"),
    [
        ("node.id==node-id-1", True, False),
        ("node.id!=node-id-1", False, True),
        ("node.hostname==web-1", True, False),
        ("node.hostname==WEB-1", True, False),  # values compare without case
        ("node.hostname!=web-1", False, True),
        ("node.ip==192.168.1.10", True, False),
        ("node.ip!=192.168.1.10", False, True),
        ("node.ip==192.168.1.0/24", True, False),
        ("node.ip!=192.168.1.0/24", False, True),
        ("node.ip==10.0.0.0/8", False, True),
        ("node.role==worker", True, False),
        ("node.role==manager", False, True),
        ("node.role!=manager", True, False),
        ("node.role==Manager", False, True),
        ("node.platform.os==linux", True, True),  # "Linux" too
        ("node.platform.os!=linux", False, False),
        ("node.platform.os==windows", False, False),
        ("node.platform.arch==amd64", True, False),  # x86_64 is amd64
        ("node.platform.arch==x86_64", True, False),
        ("node.platform.arch==arm64", False, True),  # aarch64 is arm64
        ("node.platform.arch==aarch64", False, True),
        ("node.platform.arch!=amd64", False, True),
        ("node.labels.zone==east", True, False),
        ("node.labels.zone!=east", False, True),  # a missing label differs
        ("node.labels.zone==west", False, False),  # ... and never equals
        ("node.labels.ssd==true", True, False),
        ("engine.labels.disk==ssd", True, False),
        ("engine.labels.disk!=ssd", False, True),
        ("engine.labels.zone==east", False, False),  # node labels are not engine labels
        ("node.labels.disk==ssd", False, False),  # ... nor the other way round
        ("  node.hostname  ==  web-1  ", True, False),  # spaces around are ignored
    ],
)
def test_constraint_keys_and_operators(expr: str, n1: bool, manager: bool) -> None:
    flt = ConstraintFilter()
    t = task(constraints=[expr])
    assert flt.enabled(t)
    assert parse(expr).matches(N1) is n1
    assert accepts(flt, t, on(N1)) is n1
    assert accepts(flt, t, on(MANAGER)) is manager


def test_constraint_filter_needs_every_constraint() -> None:
    both = task(constraints=["node.labels.zone==east", "engine.labels.disk==ssd"])
    one = task(constraints=["node.labels.zone==east", "engine.labels.disk==hdd"])
    assert accepts(ConstraintFilter(), both, on(N1))
    assert not accepts(ConstraintFilter(), one, on(N1))
    assert not ConstraintFilter().enabled(task())


def test_node_ip_of_a_node_without_an_address_never_equals() -> None:
    n = node(addr="")
    assert not parse("node.ip==10.0.0.0/8").matches(n)
    assert parse("node.ip!=10.0.0.0/8").matches(n)


def test_node_ip_v6() -> None:
    n = node(addr="fd00::5")
    assert parse("node.ip==fd00::/64").matches(n)
    assert parse("node.ip==fd00::5").matches(n)
    assert not parse("node.ip==10.0.0.0/8").matches(n)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("node.labels.zone=east", "write KEY==VALUE or KEY!=VALUE"),
        ("zone", "write KEY==VALUE or KEY!=VALUE"),
        ("", "write KEY==VALUE or KEY!=VALUE"),
        ("==east", "write KEY==VALUE or KEY!=VALUE"),
        ("node.hostname==", "no value after =="),
        ("node.hostname!=  ", "no value after !="),
        ("node.foo==x", "unknown key 'node.foo'; use one of node.id, node.hostname"),
        ("node.labels.==x", "unknown key 'node.labels.'"),
        ("engine.labels.==x", "unknown key 'engine.labels.'"),
        ("engine.labels==x", "unknown key 'engine.labels'"),
        ("node.platform==linux", "unknown key 'node.platform'"),
        ("node.ip==not-an-ip", "'not-an-ip' is not an IP address or CIDR range"),
        ("node.ip==1.2.3.4/99", "is not an IP address or CIDR range"),
        ("node.role==boss", "node.role is manager or worker"),
    ],
)
def test_constraint_parse_errors_name_the_expression(expr: str, message: str) -> None:
    with pytest.raises(ConstraintError) as err:
        parse(expr)
    assert f"invalid constraint {expr!r}" in str(err.value)
    assert message in str(err.value)


def test_constraint_values_may_hold_operators_and_spaces() -> None:
    c = parse("node.labels.note==a b=c")
    assert (c.key, c.equal, c.value) == ("node.labels.note", True, "a b=c")
    assert c.matches(node(labels={"note": "A B=C"}))


def test_spread_descriptors_and_values() -> None:
    check_spread_descriptor("node.labels.zone")
    check_spread_descriptor("engine.labels.rack")
    for bad in ("node.hostname", "node.labels.", "zone", "node.labels"):
        with pytest.raises(ConstraintError, match="invalid placement preference"):
            check_spread_descriptor(bad)
    assert spread_value(N1, "node.labels.zone") == "East"
    assert spread_value(N1, "engine.labels.disk") == "ssd"
    assert spread_value(N1, "node.labels.rack") == ""  # without the label: its own group


@pytest.mark.parametrize(
    ("reported", "compared"),
    [
        ("x86_64", "amd64"),
        ("amd64", "amd64"),
        ("AMD64", "amd64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("armv7l", "arm"),
        ("armv6l", "arm"),
        ("i686", "386"),
        ("i386", "386"),
        ("s390x", "s390x"),
        ("ppc64le", "ppc64le"),
    ],
)
def test_architectures_compare_by_their_image_names(reported: str, compared: str) -> None:
    assert normalise_arch(reported) == compared


# ---- platform -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("platforms", "os", "arch", "ok"),
    [
        ([("linux", "amd64")], "linux", "x86_64", True),
        ([("linux", "x86_64")], "linux", "amd64", True),
        ([("linux", "arm64")], "linux", "x86_64", False),
        ([("linux", "arm64")], "linux", "aarch64", True),
        ([("linux", "arm64"), ("linux", "amd64")], "linux", "x86_64", True),  # any of them
        ([("linux", "")], "linux", "s390x", True),  # any architecture
        ([("windows", "amd64")], "linux", "x86_64", False),
        ([("Linux", "AMD64")], "linux", "x86_64", True),
        ([("", "arm")], "linux", "armv7l", True),  # any OS
    ],
)
def test_platform_filter(platforms: list[tuple[str, str]], os: str, arch: str, ok: bool) -> None:
    t = task(platforms=platforms)
    assert PlatformFilter().enabled(t)
    assert accepts(PlatformFilter(), t, on(node(os=os, arch=arch))) is ok


def test_platform_filter_applies_only_with_platforms() -> None:
    assert not PlatformFilter().enabled(task())


# ---- host ports ---------------------------------------------------------------------------

HOST, INGRESS = types_pb2.PUBLISH_MODE_HOST, types_pb2.PUBLISH_MODE_INGRESS


@pytest.mark.parametrize(
    ("held", "wanted", "ok"),
    [
        ((8080, TCP, HOST), (8080, TCP, HOST), False),
        ((8080, UDP, HOST), (8080, UDP, HOST), False),
        ((8080, SCTP, HOST), (8080, SCTP, HOST), False),
        ((8080, TCP, HOST), (8080, UDP, HOST), True),  # per protocol
        ((8080, UDP, HOST), (8080, TCP, HOST), True),
        ((8080, TCP, HOST), (8080, SCTP, HOST), True),
        ((8080, TCP, HOST), (8081, TCP, HOST), True),
        ((8080, TCP, INGRESS), (8080, TCP, HOST), True),  # only host-mode ports bind
    ],
)
def test_host_port_filter(
    held: tuple[int, int, int], wanted: tuple[int, int, int], ok: bool
) -> None:
    info = on(node(), task(service_id="other", ports=[held]))
    t = task(ports=[wanted])
    assert HostPortFilter().enabled(t)
    assert accepts(HostPortFilter(), t, info) is ok


def test_host_port_filter_ignores_ports_left_to_the_engine() -> None:
    assert not HostPortFilter().enabled(task(ports=[(0, TCP, HOST)]))
    assert not HostPortFilter().enabled(task(ports=[(8080, TCP, INGRESS)]))
    assert not HostPortFilter().enabled(task())
    info = on(node(), task(service_id="other", ports=[(0, TCP, HOST)]))
    assert not info.ports


def test_host_port_is_free_again_once_its_task_is_gone() -> None:
    held = task(service_id="other", ports=[(53, UDP, HOST), (53, TCP, HOST)])
    info = on(node(), held)
    t = task(ports=[(53, TCP, HOST)])
    assert not accepts(HostPortFilter(), t, info)
    info.remove(held)
    assert accepts(HostPortFilter(), t, info)


def test_any_taken_port_of_several_turns_the_node_down() -> None:
    info = on(node(), task(service_id="other", ports=[(443, TCP, HOST)]))
    assert not accepts(HostPortFilter(), task(ports=[(80, TCP, HOST), (443, TCP, HOST)]), info)


# ---- max replicas per node ----------------------------------------------------------------


@pytest.mark.parametrize(("mine", "limit", "ok"), [(0, 1, True), (1, 1, False), (1, 2, True)])
def test_max_replicas_counts_this_services_tasks(mine: int, limit: int, ok: bool) -> None:
    others = [task(service_id="other") for _ in range(3)]  # other services do not count
    info = on(node(), *others, *(task() for _ in range(mine)))
    t = task(max_replicas=limit)
    assert MaxReplicasFilter().enabled(t)
    assert accepts(MaxReplicasFilter(), t, info) is ok


def test_max_replicas_zero_is_no_limit() -> None:
    assert not MaxReplicasFilter().enabled(task())


# ---- what each filter says --------------------------------------------------------------


@pytest.mark.parametrize(
    ("flt", "reason", "one", "two"),
    [
        (
            ReadyFilter(),
            "not available for new tasks (down, paused or drained)",
            "1 node not available for new tasks",
            "2 nodes not available for new tasks",
        ),
        (
            CPUFilter(),
            "insufficient CPU",
            "insufficient CPU on 1 node",
            "insufficient CPU on 2 nodes",
        ),
        (
            MemoryFilter(),
            "insufficient memory",
            "insufficient memory on 1 node",
            "insufficient memory on 2 nodes",
        ),
        (
            ConstraintFilter(),
            "scheduling constraints not satisfied",
            "scheduling constraints not satisfied on 1 node",
            "scheduling constraints not satisfied on 2 nodes",
        ),
        (
            PlatformFilter(),
            "unsupported platform",
            "unsupported platform on 1 node",
            "unsupported platform on 2 nodes",
        ),
        (
            HostPortFilter(),
            "host-mode port already in use",
            "host-mode port already in use on 1 node",
            "host-mode port already in use on 2 nodes",
        ),
        (
            MaxReplicasFilter(),
            "max replicas per node reached",
            "max replicas per node reached on 1 node",
            "max replicas per node reached on 2 nodes",
        ),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else "",
)
def test_explanations(flt: Filter, reason: str, one: str, two: str) -> None:
    assert flt.reason == reason
    assert flt.explain(1) == one
    assert flt.explain(2) == two


def test_pipeline_explains_every_failing_filter_in_order() -> None:
    """Each node is counted once, against the first filter that turns it down."""
    t = task(
        cpus=2,
        gib=4,
        constraints=["node.labels.zone!=b"],
        platforms=[("linux", "amd64")],
        ports=[(80, TCP, HOST)],
        max_replicas=1,
    )
    nodes = [
        on(node("down", state="down", cpus=0)),  # ready (before CPU)
        on(node("cpu", cpus=1, gib=1)),  # CPU (before memory)
        on(node("mem1", gib=2)),
        on(node("mem2", gib=3, labels={"zone": "b"})),  # memory (before constraints)
        on(node("zone", labels={"zone": "b"}, arch="s390x")),  # constraints (before platform)
        on(node("arm", arch="aarch64")),
        on(node("port"), task(service_id="other", ports=[(80, TCP, HOST)])),
        on(node("full"), task()),  # one of this service already
        on(node("ok")),
    ]
    p = Pipeline()
    p.set_task(t)
    assert [i.id for i in p.eligible(t, nodes)] == ["ok"]
    assert p.failures == Counter(
        {"ready": 1, "cpu": 1, "memory": 2, "constraints": 1, "platform": 1, "hostports": 1,
         "maxreplicas": 1}
    )  # fmt: skip
    assert p.explain() == (
        "no suitable node (1 node not available for new tasks; insufficient CPU on 1 node; "
        "insufficient memory on 2 nodes; scheduling constraints not satisfied on 1 node; "
        "unsupported platform on 1 node; host-mode port already in use on 1 node; "
        "max replicas per node reached on 1 node)"
    )


# ---- one definition per filter ----------------------------------------------------------


@pytest.mark.parametrize("flt", default_filters(), ids=lambda v: type(v).__name__)
def test_every_filters_check_is_its_matcher(flt: Filter) -> None:
    """No filter has a check of its own beside its matcher: the two cannot disagree."""
    assert type(flt).check is Filter.check
    assert type(flt).explain is Filter.explain


def test_a_filter_is_defined_by_its_matcher_and_its_reason() -> None:
    class ZoneFilter(Filter):
        name = "zone"
        reason = "not in zone a"

        def matcher(self, task: objects_pb2.Task) -> Matcher:
            return lambda info: info.labels.get("zone") == "a"

    zf = ZoneFilter()
    t = task()
    assert zf.enabled(t)
    assert accepts(zf, t, on(node(labels={"zone": "a"})))
    assert not accepts(zf, t, on(node(labels={"zone": "b"})))
    assert zf.explain(2) == "not in zone a on 2 nodes"


def test_a_filter_without_a_matcher_cannot_be_made() -> None:
    class Unfinished(Filter):
        name = "unfinished"
        reason = "never"

    with pytest.raises(TypeError, match="matcher"):
        Unfinished()  # type: ignore[abstract]


def test_static_filters_are_the_ones_reading_only_the_node_object() -> None:
    static = {type(x).__name__ for x in default_filters() if isinstance(x, StaticFilter)}
    assert static == {"ReadyFilter", "EngineFilter", "ConstraintFilter", "PlatformFilter"}
