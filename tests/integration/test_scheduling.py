"""Scheduling and orchestration through the real swarmctl, on a real manager (embedded
etcd) and hollow agents: filters and their explanations, ranking, spread preferences,
modes, restart policies, node availability, rebalancing and dry runs (issue 3).

Hollow agents run no containers, so a farm of nodes starts in well under a second. Tests
that only read the nodes share one farm per module (`shared`), with distinct service
names; tests that change nodes, capacity or cluster settings get a farm of their own.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from common.api import control_pb2
from tests.harness import Agent, Manager, swarmctl, wait_until

IMAGE = "busybox:latest"  # hollow agents pull nothing; any name will do
FAST = ["--hollow-prepare", "10ms", "--hollow-start", "10ms", "--hollow-job-duration", "300ms"]
FAILING = ["--hollow-fail-rate", "1.0", "--hollow-fail-after", "200ms"]

# Task states (types.proto).
PENDING, ASSIGNED, RUNNING, COMPLETE, FAILED = 64, 192, 512, 576, 704
NODE_READY = 2


class Farm:
    """A manager and processes of hollow agents; every node has a unique hostname."""

    def __init__(self) -> None:
        self.manager = Manager()
        self.agents: list[Agent] = []

    def start(self) -> Farm:
        self.manager.start()
        return self

    def add(self, hostname: str, *extra: str, count: int = 1) -> Agent:
        """Start a hollow process of `count` nodes named `hostname` (count 1) or
        `hostname1..N` (`hostname` ending in "-"), and wait until they are ready."""
        names = [hostname]
        if count > 1 or hostname.endswith("-"):
            names = [f"{hostname}{i}" for i in range(1, count + 1)]
        agent = Agent(
            [self.manager.addr],
            "unix:///nonexistent",
            hostname=hostname,
            join_token=self.manager.join_token(),
            extra=["--executor", "hollow", "--count", str(count), *FAST, *extra],
        )
        self.agents.append(agent)
        agent.start()
        wait_until(
            lambda: set(names) <= self.ready_hostnames(), 30, what=f"nodes {names} to be ready"
        )
        return agent

    def cleanup(self) -> None:
        """Stop every agent, then the manager, even if stopping one of them fails."""
        with contextlib.ExitStack() as stack:
            stack.callback(self.manager.cleanup)
            for agent in self.agents:
                stack.callback(agent.cleanup, None)

    def ctl(self, *args: str, check: bool = False, timeout: float = 60.0) -> Any:
        return swarmctl(self.manager.host, *args, check=check, timeout=timeout)

    # -- reads through the control API --

    def service_names(self) -> set[str]:
        response = self.manager.api().ListServices(control_pb2.ListServicesRequest())
        return {svc.spec.annotations.name for svc in response.services}

    def ready_hostnames(self) -> set[str]:
        return {
            n.description.hostname for n in self.manager.nodes() if n.status.state == NODE_READY
        }

    def node(self, hostname: str) -> Any:
        return next(n for n in self.manager.nodes() if n.description.hostname == hostname)

    def hostnames(self) -> dict[str, str]:
        return {n.id: n.description.hostname for n in self.manager.nodes()}

    def tasks(self, service: str) -> list[Any]:
        return self.manager.tasks(service)

    def running(self, service: str) -> Counter[str]:
        """Running tasks (desired and observed) per node hostname."""
        names = self.hostnames()
        return Counter(names.get(t.node_id, t.node_id) for t in self.manager.running_tasks(service))

    def wait_running(
        self, service: str, count: int, timeout: float = 20.0, exact: bool = True
    ) -> Counter[str]:
        """Wait until `count` tasks of `service` run (and no more, with `exact`)."""

        def ready() -> Counter[str] | None:
            on = self.running(service)
            total = sum(on.values())
            return on if total == count or (not exact and total >= count) else None

        return wait_until(ready, timeout, what=f"{count} running tasks of {service}")

    def pending(self, service: str) -> list[Any]:
        """Tasks waiting for a node that are still wanted."""
        return [
            t
            for t in self.tasks(service)
            if t.status.state == PENDING and t.desired_state in (RUNNING, COMPLETE)
        ]

    def wait_pending(self, service: str, explanation: str, count: int = 1) -> list[Any]:
        """Wait until `count` tasks of `service` are pending with `explanation`."""

        def pending() -> list[Any] | None:
            tasks = [t for t in self.pending(service) if t.status.err == explanation]
            return tasks if len(tasks) == count else None

        try:
            return wait_until(pending, 20, what=f"{count} pending tasks of {service}")
        except AssertionError:
            errs = [(t.status.state, t.status.err) for t in self.tasks(service)]
            raise AssertionError(f"wanted {count} x {explanation!r}; tasks: {errs}") from None

    def decided(self, service: str, count: int) -> list[Any] | None:
        """The wanted tasks of `service` once there are `count` and each is either placed
        or pending with an explanation (None before)."""
        tasks = [t for t in self.tasks(service) if t.desired_state in (RUNNING, COMPLETE)]
        placed = [t for t in tasks if t.status.state >= ASSIGNED or t.status.err]
        return tasks if len(tasks) == count == len(placed) else None

    def create(self, service: str, *args: str) -> None:
        """`service create -d` (no waiting for convergence)."""
        self.ctl("service", "create", "-d", "--name", service, *args, IMAGE, check=True)

    def ps(self, service: str) -> str:
        out: str = self.ctl("service", "ps", "--no-trunc", service, check=True).stdout
        return out


def start_farm(*processes: tuple[str, list[str], int]) -> Farm:
    """A farm with hollow processes (hostname, extra args, count); stopped again on error."""
    farm = Farm()
    try:
        farm.start()
        for hostname, extra, count in processes:
            farm.add(hostname, *extra, count=count)
    except BaseException:
        farm.cleanup()
        raise
    return farm


@pytest.fixture
def farm() -> Iterator[Farm]:
    """A manager of its own, with no nodes yet: the test adds them."""
    f = Farm()
    try:
        f.start()
        yield f
    finally:
        f.cleanup()


@pytest.fixture(scope="module")
def shared() -> Iterator[Farm]:
    """Four nodes the tests only read: a-1 and a-2 (engine label disk=ssd, node a-1 also
    node label rack=r1) and b-1 and b-2 (disk=hdd). Services are constrained or use
    their own names, so tests do not disturb each other."""
    f: Farm | None = None
    try:
        f = start_farm(
            ("a-", ["--hollow-label", "disk=ssd"], 2),
            ("b-", ["--hollow-label", "disk=hdd"], 2),
        )
        out = f.ctl("node", "update", "--label-add", "rack=r1", "a-1", check=True)
        assert "a-1" in out.stdout
        yield f
    finally:
        if f is not None:
            f.cleanup()


@pytest.fixture(scope="module")
def failing() -> Iterator[Farm]:
    """Two nodes (f-1, f-2) on which every task fails 200 ms after it starts."""
    f: Farm | None = None
    try:
        f = start_farm(("f-", FAILING, 2))
        yield f
    finally:
        if f is not None:
            f.cleanup()


class Sampler:
    """Calls `probe` every few milliseconds in a thread while the `with` block runs."""

    def __init__(self, probe: Callable[[], int], interval: float = 0.02) -> None:
        self.probe = probe
        self.interval = interval
        self.values: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(grpc.RpcError):
                self.values.append(self.probe())
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def slots_history(farm: Farm, service: str) -> Counter[int]:
    """How many tasks each slot has (history included)."""
    return Counter(t.slot for t in farm.tasks(service))


# --------------------------------------------------------------------------------------
# Constraints
# --------------------------------------------------------------------------------------

ALL = {"a-1", "a-2", "b-1", "b-2"}
# The farm's manager is a node no agent runs (no engine): a task that fits nowhere names
# it when it would otherwise go there (active, and matching its constraints).
MANAGER_ENGINELESS = "1 manager with no agent; "
MANAGER_MATCHES = {"node.role!=worker", "node.ip!=127.0.0.1"}


@pytest.mark.parametrize(
    ("constraints", "expected"),
    [
        (["node.hostname==a-1"], {"a-1"}),
        (["node.hostname!=a-1"], ALL - {"a-1"}),
        (["node.id==<b-2>"], {"b-2"}),
        (["node.id!=<b-2>"], ALL - {"b-2"}),
        (["node.role==worker"], ALL),
        (["node.role!=worker"], set()),
        (["node.platform.os==linux"], ALL),
        (["node.platform.os!=linux"], set()),
        (["node.platform.arch==amd64"], ALL),
        (["node.platform.arch==x86_64"], ALL),
        (["node.platform.arch!=amd64"], set()),
        (["node.labels.rack==r1"], {"a-1"}),
        (["node.labels.rack!=r1"], ALL - {"a-1"}),  # a missing label differs
        (["engine.labels.disk==ssd"], {"a-1", "a-2"}),
        (["engine.labels.disk==SSD"], {"a-1", "a-2"}),  # values compare without case
        (["engine.labels.disk!=ssd"], {"b-1", "b-2"}),
        (["node.ip==127.0.0.1"], ALL),
        (["node.ip==127.0.0.0/8"], ALL),
        (["node.ip!=127.0.0.1"], set()),
        (["engine.labels.disk==ssd", "node.hostname!=a-1"], {"a-2"}),
    ],
    ids=lambda value: "&".join(value) if isinstance(value, list) else f"{len(value)}nodes",
)
def test_constraint_places_only_on_matching_nodes(
    shared: Farm, name: str, constraints: list[str], expected: set[str]
) -> None:
    b2 = shared.node("b-2").id
    args = [arg for c in constraints for arg in ("--constraint", c.replace("<b-2>", b2))]
    replicas = 2 * max(len(expected), 1)
    shared.create(name, "--replicas", str(replicas), *args)
    # Wait until the scheduler has decided about every task: placed, or explained.
    tasks = wait_until(lambda: shared.decided(name, replicas), 20, what="scheduling decisions")
    if expected:
        assert not [t.status.err for t in tasks if t.status.state == PENDING]
        on = shared.wait_running(name, replicas)
        # Spread evens the service out over exactly the matching nodes.
        assert on == Counter(dict.fromkeys(expected, 2))
    else:
        # The farm's manager runs no agent: named where the task could go but for that.
        manager = MANAGER_ENGINELESS if constraints[0] in MANAGER_MATCHES else ""
        explanation = f"no suitable node ({manager}scheduling constraints not satisfied on 4 nodes)"
        assert [t.status.err for t in tasks] == [explanation] * replicas


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("node.foo==x", "unknown key 'node.foo'"),
        ("node.labels.zone=east", "write KEY==VALUE or KEY!=VALUE"),
        ("node.hostname==", "no value after =="),
        ("node.ip==not-an-ip", "is not an IP address or CIDR range"),
        ("node.role==boss", "node.role is manager or worker"),
        ("node.labels.==x", "unknown key"),
    ],
)
def test_invalid_constraint_is_rejected_naming_it(
    shared: Farm, name: str, expr: str, message: str
) -> None:
    out = shared.ctl("service", "create", "-d", "--name", name, "--constraint", expr, IMAGE)
    assert out.returncode != 0
    assert f"invalid constraint '{expr}'" in out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert name not in shared.service_names()


def test_invalid_constraint_is_invalid_argument_in_the_api(shared: Farm, name: str) -> None:
    shared.create(name, "--constraint", "node.hostname==a-1")
    spec = (
        shared.manager.api().GetService(control_pb2.GetServiceRequest(service_id=name)).service.spec
    )
    spec.annotations.name = name + "-bad"
    del spec.task.placement.constraints[:]
    spec.task.placement.constraints.append("engine.labels==x")
    with pytest.raises(grpc.RpcError) as err:
        shared.manager.api().CreateService(control_pb2.CreateServiceRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "engine.labels==x" in (err.value.details() or "")
    # An update with a bad constraint is refused too, and changes nothing.
    out = shared.ctl("service", "update", "-d", "--constraint-add", "node.zone!=1", name)
    assert out.returncode != 0
    assert "invalid constraint 'node.zone!=1'" in out.stderr
    inspect = json.loads(shared.ctl("service", "inspect", name, check=True).stdout)
    assert inspect[0]["spec"]["task"]["placement"]["constraints"] == ["node.hostname==a-1"]


def test_node_label_added_with_node_update_is_stored(shared: Farm) -> None:
    node = json.loads(shared.ctl("node", "inspect", "a-1", check=True).stdout)[0]
    assert node["spec"]["annotations"]["labels"] == {"rack": "r1"}
    listed = shared.ctl("node", "ls", "-q", "-f", "label=rack=r1", check=True).stdout.split()
    assert listed == [shared.node("a-1").id]


# --------------------------------------------------------------------------------------
# Platform, max replicas per node, node ps, jobs, dry run (shared farm)
# --------------------------------------------------------------------------------------


def test_platform_not_reported_by_any_node_stays_pending(shared: Farm, name: str) -> None:
    shared.create(name, "--platform", "linux/arm64")
    shared.wait_pending(name, "no suitable node (unsupported platform on 4 nodes)")
    assert "unsupported platform on 4 nodes" in shared.ps(name)
    # The nodes report x86_64, which is amd64.
    for platform in ("linux/amd64", "linux/x86_64", "linux"):
        svc = f"{name}-{platform.replace('/', '-')}"
        shared.create(svc, "--platform", platform, "--platform", "linux/arm64")
        shared.wait_running(svc, 1)


def test_replicas_max_per_node(shared: Farm, name: str) -> None:
    shared.create(
        name,
        "--replicas",
        "5",
        "--replicas-max-per-node",
        "1",
        "--constraint",
        "engine.labels.disk==ssd",
    )
    explanation = (
        "no suitable node (scheduling constraints not satisfied on 2 nodes; "
        "max replicas per node reached on 2 nodes)"
    )
    shared.wait_pending(name, explanation, 3)
    assert shared.running(name) == Counter({"a-1": 1, "a-2": 1})
    assert explanation in shared.ps(name)
    # Two per node: one more of each fits; the fifth still waits.
    shared.ctl("service", "update", "-d", "--replicas-max-per-node", "2", name, check=True)
    on = shared.wait_running(name, 4)
    assert on == Counter({"a-1": 2, "a-2": 2})
    shared.wait_pending(name, explanation)


def test_node_ps_lists_the_tasks_of_a_node(shared: Farm, name: str) -> None:
    shared.create(name, "--replicas", "2", "--constraint", "node.hostname==b-1")
    shared.wait_running(name, 2)
    out = shared.ctl("node", "ps", "b-1", check=True).stdout
    assert f"{name}.1 " in out
    assert f"{name}.2 " in out
    lines = [line for line in out.splitlines() if name in line]
    assert all("b-1" in line and "Running" in line for line in lines)
    by_id = shared.ctl("node", "ps", shared.node("b-1").id[:8], check=True).stdout
    assert f"{name}.1 " in by_id
    assert name not in shared.ctl("node", "ps", "b-2", check=True).stdout
    assert shared.ctl("node", "ps", "no-such-node").returncode != 0


def test_replicated_job_runs_to_completion_with_max_concurrent(shared: Farm, name: str) -> None:
    def active() -> int:
        return sum(
            1
            for t in shared.manager.tasks()
            if t.service_name == name and t.status.state < COMPLETE
        )

    with Sampler(active) as sampler:
        out = shared.ctl(
            "service",
            "create",
            "--name",
            name,
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            IMAGE,
            timeout=60,
        )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "job complete" in out.stdout
    assert len(sampler.values) > 10
    assert max(sampler.values) == 2  # two at a time, never more
    tasks = shared.tasks(name)
    assert sorted(t.slot for t in tasks) == [1, 2, 3, 4, 5]
    assert all(t.status.state == COMPLETE and t.desired_state == COMPLETE for t in tasks)
    ps = shared.ps(name)
    assert ps.count("Complete") >= 10  # DESIRED STATE and CURRENT STATE, five tasks
    assert "5/5 completed" in shared.ctl("service", "ls", "-f", f"name={name}").stdout
    # Done means done: nothing is restarted.
    time.sleep(0.5)
    assert len(shared.tasks(name)) == 5


def test_global_job_completes_once_per_node(shared: Farm, name: str) -> None:
    out = shared.ctl("service", "create", "--name", name, "--mode", "global-job", IMAGE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "job complete" in out.stdout
    tasks = shared.tasks(name)
    names = shared.hostnames()
    assert sorted(names[t.node_id] for t in tasks) == sorted(ALL)
    assert all(t.status.state == COMPLETE for t in tasks)
    assert shared.ps(name).count("Complete") == 8
    time.sleep(0.5)
    assert len(shared.tasks(name)) == 4


def test_dry_run_create_shows_placements_and_rejections_and_creates_nothing(
    shared: Farm, name: str
) -> None:
    before = shared.service_names()
    args = [
        "service",
        "create",
        "--dry-run",
        "--name",
        name,
        "--replicas",
        "3",
        "--replicas-max-per-node",
        "1",
        "--constraint",
        "engine.labels.disk==ssd",
        IMAGE,
    ]
    out = shared.ctl(*args, check=True).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["SLOT", "NODE"]
    rows = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:4]}
    assert {rows["1"], rows["2"]} == {"a-1", "a-2"}
    assert rows["3"] == (
        "not placed: no suitable node (scheduling constraints not satisfied on 2 nodes; "
        "max replicas per node reached on 2 nodes)"
    )
    for host in ("b-1", "b-2"):
        node_id = shared.node(host).id
        assert f"node {host} ({node_id[:12]}): scheduling constraints not satisfied" in lines
    # JSON says the same.
    json_args = [*args[:-1], "--format", "json", IMAGE]
    preview = json.loads(shared.ctl(*json_args, check=True).stdout)
    assert [p["node_hostname"] for p in preview["placements"]][2] == ""
    assert {r["node_hostname"] for r in preview["rejections"]} == {"b-1", "b-2"}
    # Nothing was written.
    assert shared.service_names() == before
    assert shared.ctl("service", "inspect", name).returncode != 0


def test_dry_run_update_previews_and_changes_nothing(shared: Farm, name: str) -> None:
    shared.create(name, "--replicas", "2", "--constraint", "engine.labels.disk==ssd")
    shared.wait_running(name, 2)
    version = json.loads(shared.ctl("service", "inspect", name, check=True).stdout)[0]["meta"]
    task_ids = sorted(t.id for t in shared.tasks(name))
    out = shared.ctl(
        "service",
        "update",
        "--dry-run",
        "--constraint-rm",
        "engine.labels.disk==ssd",
        "--constraint-add",
        "engine.labels.disk==hdd",
        "--replicas",
        "3",
        name,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].split() == ["SLOT", "NODE"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:4]}
    assert set(rows) == {"1", "2", "3"}
    assert set(rows.values()) == {"b-1", "b-2"}
    for host in ("a-1", "a-2"):
        assert f"node {host} ({shared.node(host).id[:12]}): scheduling constraints" in out
    # Nothing changed: same spec version, same tasks, where they were.
    after = json.loads(shared.ctl("service", "inspect", name, check=True).stdout)[0]
    assert after["meta"]["version"] == version["version"]
    assert after["spec"]["task"]["placement"]["constraints"] == ["engine.labels.disk==ssd"]
    time.sleep(0.3)
    assert sorted(t.id for t in shared.tasks(name)) == task_ids
    assert set(shared.running(name)) <= {"a-1", "a-2"}


# --------------------------------------------------------------------------------------
# Resources and explanations
# --------------------------------------------------------------------------------------

SMALL = ["--hollow-memory", "1GiB", "--hollow-cpus", "2"]


def test_reservations_wait_for_freed_resources(farm: Farm, name: str) -> None:
    farm.add("r-", *SMALL, count=3)
    hog, waiting, cpu = f"{name}-hog", f"{name}-wait", f"{name}-cpu"
    farm.create(hog, "--replicas", "3", "--reserve-memory", "600M")
    assert farm.wait_running(hog, 3) == Counter({"r-1": 1, "r-2": 1, "r-3": 1})
    explanation = f"no suitable node ({MANAGER_ENGINELESS}insufficient memory on 3 nodes)"
    # The create progress shows why, and so does the failure when it does not converge.
    out = farm.ctl(
        "service",
        "create",
        "--name",
        waiting,
        "--replicas",
        "2",
        "--reserve-memory",
        "600M",
        "--timeout",
        "2s",
        IMAGE,
    )
    assert out.returncode != 0
    assert f"pending   {explanation}" in out.stdout
    assert "did not converge" in out.stderr
    assert explanation in out.stderr
    farm.wait_pending(waiting, explanation, 2)
    ps = farm.ps(waiting)
    assert ps.splitlines()[0].split()[-2:] == ["ERROR", "PORTS"]
    assert ps.count(f'"{explanation}"') == 2
    # CPU is explained the same way.
    farm.create(cpu, "--reserve-cpu", "2.5")
    farm.wait_pending(cpu, f"no suitable node ({MANAGER_ENGINELESS}insufficient CPU on 3 nodes)")
    # Scaling the hog down frees one node: one waiting task gets it.
    farm.ctl("service", "scale", "-d", f"{hog}=2", check=True)
    farm.wait_running(waiting, 1)
    farm.wait_pending(waiting, explanation)
    # Removing the hog frees the rest.
    farm.ctl("service", "rm", hog, check=True)
    assert sum(farm.wait_running(waiting, 2).values()) == 2
    assert "insufficient" not in farm.ps(waiting)


def test_pending_task_is_placed_when_a_node_joins(farm: Farm, name: str) -> None:
    farm.add("j-1", *SMALL)
    farm.create(name, "--replicas", "2", "--reserve-memory", "600M")
    farm.wait_pending(name, f"no suitable node ({MANAGER_ENGINELESS}insufficient memory on 1 node)")
    assert farm.running(name) == Counter({"j-1": 1})
    farm.add("j-2", *SMALL)
    assert farm.wait_running(name, 2) == Counter({"j-1": 1, "j-2": 1})


def test_constraint_blocked_task_is_placed_when_a_label_changes(farm: Farm, name: str) -> None:
    farm.add("l-", *SMALL, count=2)
    hog = f"{name}-hog"
    farm.create(hog, "--reserve-memory", "600M", "--constraint", "node.hostname==l-1")
    farm.wait_running(hog, 1)
    farm.create(name, "--reserve-memory", "600M", "--constraint", "node.labels.gpu==yes")
    farm.wait_pending(
        name,
        "no suitable node (insufficient memory on 1 node; "
        "scheduling constraints not satisfied on 1 node)",
    )
    farm.ctl("node", "update", "--label-add", "gpu=yes", "l-2", check=True)
    assert farm.wait_running(name, 1) == Counter({"l-2": 1})


def test_pause_keeps_tasks_drain_moves_them_active_places_again(farm: Farm, name: str) -> None:
    farm.add("n-", count=2)
    pinned = f"{name}-pinned"
    farm.create(name, "--replicas", "2")
    assert farm.wait_running(name, 2) == Counter({"n-1": 1, "n-2": 1})
    on_n1 = {t.id for t in farm.manager.running_tasks(name) if t.node_id == farm.node("n-1").id}

    farm.ctl("node", "update", "--availability", "pause", "n-1", check=True)
    assert "Pause" in farm.ctl("node", "ls", "-f", "name=n-1", check=True).stdout
    # Paused: new tasks go elsewhere, the running one stays.
    farm.ctl("service", "scale", "-d", f"{name}=4", check=True)
    assert farm.wait_running(name, 4) == Counter({"n-1": 1, "n-2": 3})
    assert {t.id for t in farm.manager.running_tasks(name) if t.node_id == farm.node("n-1").id} == (
        on_n1
    )
    farm.create(pinned, "--constraint", "node.hostname==n-1")
    farm.wait_pending(
        pinned,
        "no suitable node (1 node not available for new tasks; "
        "scheduling constraints not satisfied on 1 node)",
    )

    # Drained: its tasks move off.
    farm.ctl("node", "update", "--availability", "drain", "n-1", check=True)
    assert "Drain" in farm.ctl("node", "ls", "-f", "name=n-1", check=True).stdout
    assert farm.wait_running(name, 4) == Counter({"n-2": 4})
    assert (
        farm.ctl("node", "ps", "-f", "desired-state=running", "n-1", check=True).stdout.count(name)
        == 0
    )

    # Active again: the waiting task is placed.
    farm.ctl("node", "update", "--availability", "active", "n-1", check=True)
    assert farm.wait_running(pinned, 1) == Counter({"n-1": 1})
    assert farm.running(name) == Counter({"n-2": 4})  # no automatic rebalance by default


# --------------------------------------------------------------------------------------
# Ranking: binpack, resource-aware spread, spread preferences, topology-aware scale-down
# --------------------------------------------------------------------------------------


def test_binpack_fills_the_fewest_nodes(farm: Farm, name: str) -> None:
    farm.add("p-", "--hollow-cpus", "4", count=3)
    packed, spread = f"{name}-packed", f"{name}-spread"
    farm.create(packed, "--replicas", "6", "--reserve-cpu", "1", "--placement-strategy", "binpack")
    on = farm.wait_running(packed, 6)
    assert sorted(on.values()) == [2, 4]  # 4 CPUs a node: two nodes, the first one full
    # Spread (the default) evens a service out instead.
    farm.create(spread, "--replicas", "3")
    assert sorted(farm.wait_running(spread, 3).values()) == [1, 1, 1]


def test_spread_with_reservations_prefers_the_largest_free_share(farm: Farm, name: str) -> None:
    farm.add("s-", "--hollow-memory", "4GiB", count=3)
    # s-1: two tasks, nothing reserved (100% free); s-2: 3 GiB reserved (25% free);
    # s-3: 1 GiB reserved (75% free).
    farm.create(f"{name}-f1", "--replicas", "2", "--constraint", "node.hostname==s-1")
    farm.create(f"{name}-f2", "--reserve-memory", "3G", "--constraint", "node.hostname==s-2")
    farm.create(f"{name}-f3", "--reserve-memory", "1G", "--constraint", "node.hostname==s-3")
    for svc, n in ((f"{name}-f1", 2), (f"{name}-f2", 1), (f"{name}-f3", 1)):
        farm.wait_running(svc, n)
    # Reserving: the largest free share wins over the fewest tasks.
    farm.create(f"{name}-res", "--reserve-memory", "256M")
    assert farm.wait_running(f"{name}-res", 1) == Counter({"s-1": 1})
    # Then s-3 (75% free) before s-2 (25% free), at one task of the service each.
    farm.ctl("service", "scale", "-d", f"{name}-res=3", check=True)
    assert farm.wait_running(f"{name}-res", 3) == Counter({"s-1": 1, "s-2": 1, "s-3": 1})
    farm.ctl("service", "scale", "-d", f"{name}-res=2", check=True)
    farm.wait_running(f"{name}-res", 2)
    # Not reserving: the fewest tasks overall (s-1 has three).
    farm.create(f"{name}-plain")
    assert "s-1" not in farm.wait_running(f"{name}-plain", 1)


def test_spread_preference_balances_label_groups(farm: Farm, name: str) -> None:
    farm.add("z-", count=4)
    for host, zone in (("z-1", "a"), ("z-2", "a"), ("z-3", "b")):  # z-4: no zone label
        farm.ctl("node", "update", "--label-add", f"zone={zone}", host, check=True)
    farm.create(name, "--replicas", "6", "--placement-pref", "spread=node.labels.zone")
    on = farm.wait_running(name, 6)
    assert on == Counter({"z-1": 1, "z-2": 1, "z-3": 2, "z-4": 2})
    # Scaling up keeps the groups balanced: 3 per zone group.
    farm.ctl("service", "scale", "-d", f"{name}=9", check=True)
    on = farm.wait_running(name, 9)
    assert on["z-1"] + on["z-2"] == 3
    assert on["z-3"] == 3
    assert on["z-4"] == 3


def test_nested_spread_preferences(farm: Farm, name: str) -> None:
    farm.add("y-", count=5)
    labels = {"y-1": ("a", "1"), "y-2": ("a", "1"), "y-3": ("a", "2"), "y-4": ("b", "1")}
    labels["y-5"] = ("b", "2")
    for host, (zone, rack) in labels.items():
        farm.ctl(
            "node",
            "update",
            "--label-add",
            f"zone={zone}",
            "--label-add",
            f"rack={rack}",
            host,
            check=True,
        )
    farm.create(
        name,
        "--replicas",
        "8",
        "--placement-pref",
        "spread=node.labels.zone",
        "--placement-pref",
        "spread=node.labels.rack",
    )
    # 4 per zone; within each zone 2 per rack; rack a/1 has two nodes.
    on = farm.wait_running(name, 8)
    assert on == Counter({"y-1": 1, "y-2": 1, "y-3": 2, "y-4": 2, "y-5": 2})


def test_scale_down_keeps_spread_groups_balanced(farm: Farm, name: str) -> None:
    farm.add("x-", count=3)
    for host, zone in (("x-1", "a"), ("x-2", "a"), ("x-3", "b")):
        farm.ctl("node", "update", "--label-add", f"zone={zone}", host, check=True)
    # Slots 1-4 land in zone a while x-3 is paused, slots 5-8 in zone b once it is back.
    farm.ctl("node", "update", "--availability", "pause", "x-3", check=True)
    farm.create(name, "--replicas", "4", "--placement-pref", "spread=node.labels.zone")
    assert farm.wait_running(name, 4) == Counter({"x-1": 2, "x-2": 2})
    farm.ctl("node", "update", "--availability", "active", "x-3", check=True)
    farm.ctl("service", "scale", "-d", f"{name}=8", check=True)
    assert farm.wait_running(name, 8) == Counter({"x-1": 2, "x-2": 2, "x-3": 4})
    slots_b = sorted(
        t.slot for t in farm.manager.running_tasks(name) if t.node_id == farm.node("x-3").id
    )
    assert slots_b == [5, 6, 7, 8]
    # Removing the highest slots would empty zone b; the scale-down keeps 2 and 2.
    farm.ctl("service", "scale", "-d", f"{name}=4", check=True)
    on = farm.wait_running(name, 4)
    assert on["x-3"] == 2
    assert on["x-1"] == 1
    assert on["x-2"] == 1
    assert sorted(t.slot for t in farm.manager.running_tasks(name)) == [1, 2, 3, 4]
    ps_names = {
        line.split()[1] for line in farm.ps(name).splitlines()[1:] if "Running" in line.split()[5:7]
    }
    assert ps_names == {f"{name}.{i}" for i in range(1, 5)}


# --------------------------------------------------------------------------------------
# Host ports
# --------------------------------------------------------------------------------------


def test_tasks_publishing_a_host_port_never_share_a_node(farm: Farm, name: str) -> None:
    farm.add("h-", count=3)
    web, other, udp = f"{name}-web", f"{name}-other", f"{name}-udp"
    farm.create(web, "--replicas", "4", "-p", "8080:80")
    explanation = f"no suitable node ({MANAGER_ENGINELESS}host-mode port already in use on 3 nodes)"
    farm.wait_pending(web, explanation)
    assert farm.running(web) == Counter({"h-1": 1, "h-2": 1, "h-3": 1})
    assert explanation in farm.ps(web)
    assert farm.ps(web).count("*:8080->80/tcp") == 3
    # Another service on the same port waits too; the same port over UDP does not.
    farm.create(other, "-p", "mode=host,target=8080,published=8080,protocol=tcp")
    farm.wait_pending(other, explanation)
    farm.create(udp, "--replicas", "3", "-p", "8080:80/udp")
    assert farm.wait_running(udp, 3) == Counter({"h-1": 1, "h-2": 1, "h-3": 1})
    # Freeing a node lets one waiting task in, and only one.
    farm.ctl("service", "scale", "-d", f"{web}=2", check=True)
    farm.wait_running(web, 2)
    farm.wait_running(other, 1)
    assert not farm.pending(web)
    hosts = Counter(farm.running(web)) + Counter(farm.running(other))
    assert hosts == Counter({"h-1": 1, "h-2": 1, "h-3": 1})


# --------------------------------------------------------------------------------------
# Global mode
# --------------------------------------------------------------------------------------


def test_global_service_follows_the_eligible_nodes(farm: Farm, name: str) -> None:
    farm.add("g-", count=2)
    everywhere, labelled = f"{name}-all", f"{name}-lab"
    farm.create(everywhere, "--mode", "global")
    assert farm.wait_running(everywhere, 2) == Counter({"g-1": 1, "g-2": 1})
    # A new node gets one.
    farm.add("g-3")
    assert farm.wait_running(everywhere, 3) == Counter({"g-1": 1, "g-2": 1, "g-3": 1})
    # A paused node keeps its task but gets none of a new service, until it is active.
    late = f"{name}-late"
    farm.ctl("node", "update", "--availability", "pause", "g-3", check=True)
    farm.create(late, "--mode", "global")
    assert farm.wait_running(late, 2) == Counter({"g-1": 1, "g-2": 1})
    time.sleep(0.3)
    assert len(farm.tasks(late)) == 2
    assert farm.running(everywhere) == Counter({"g-1": 1, "g-2": 1, "g-3": 1})
    farm.ctl("node", "update", "--availability", "active", "g-3", check=True)
    assert farm.wait_running(late, 3) == Counter({"g-1": 1, "g-2": 1, "g-3": 1})
    # A drained node loses its task, and gets no new one.
    farm.ctl("node", "update", "--availability", "drain", "g-1", check=True)
    assert farm.wait_running(everywhere, 2) == Counter({"g-2": 1, "g-3": 1})
    # Constraints: only matching nodes; a node that stops matching loses its task.
    for host in ("g-2", "g-3"):
        farm.ctl("node", "update", "--label-add", "run=yes", host, check=True)
    farm.create(labelled, "--mode", "global", "--constraint", "node.labels.run==yes")
    assert farm.wait_running(labelled, 2) == Counter({"g-2": 1, "g-3": 1})
    farm.ctl("node", "update", "--label-add", "run=no", "g-3", check=True)
    assert farm.wait_running(labelled, 1) == Counter({"g-2": 1})
    farm.ctl("node", "update", "--label-rm", "run", "g-2", check=True)
    wait_until(lambda: not farm.running(labelled), 20, what="no task left")
    # Matching again: it comes back.
    farm.ctl("node", "update", "--label-add", "run=yes", "g-3", check=True)
    assert farm.wait_running(labelled, 1) == Counter({"g-3": 1})
    assert "Running" in farm.ctl("service", "ps", labelled, check=True).stdout


def test_global_service_rolls_out_and_back(farm: Farm, name: str) -> None:
    """A spec change of a global service rolls out node by node per its update config,
    and `service rollback` per its rollback config; swarmctl follows both to the end."""
    farm.add("u-", count=3)
    farm.ctl(
        "service", "create", "--name", name, "--mode", "global", "-e", "V=1",
        "--update-parallelism", "1", "--update-order", "start-first",
        "--update-monitor", "100ms", "--rollback-monitor", "100ms", IMAGE, check=True,
    )  # fmt: skip
    first = {t.node_id: t.id for t in farm.manager.running_tasks(name)}
    assert len(first) == 3

    with Sampler(lambda: len(farm.manager.running_tasks(name))) as sampler:
        out = farm.ctl("service", "update", "--env-add", "V=2", name, check=True)
    assert "overall progress: 3 out of 3 tasks" in out.stdout
    assert out.stdout.rstrip().endswith("converged")
    second = farm.manager.running_tasks(name)
    # One new task per node, each started beside the task it replaced.
    assert {t.node_id: t.replaces for t in second} == first
    assert all(list(t.spec.container.env) == ["V=2"] for t in second)
    # Start-first: never fewer than 3 running.
    assert sampler.values
    assert min(sampler.values) >= 3, sampler.values
    service = farm.manager.api().GetService(control_pb2.GetServiceRequest(service_id=name))
    assert service.service.update_status.message == "update completed"

    out = farm.ctl("service", "rollback", name, check=True)
    assert out.stdout.rstrip().endswith("rollback: rollback completed")
    third = farm.manager.running_tasks(name)
    assert sorted(t.node_id for t in third) == sorted(first)
    assert all(list(t.spec.container.env) == ["V=1"] for t in third)
    assert not {t.id for t in third} & {t.id for t in second}
    assert not any(t.replaces for t in third)  # the rollback order: stop-first


# --------------------------------------------------------------------------------------
# Restart policy and task history
# --------------------------------------------------------------------------------------


def wait_history(farm: Farm, service: str, count: int, timeout: float = 20.0) -> list[Any]:
    """Wait until slot 1 of `service` has had `count` tasks, all ended; oldest first."""

    def ended() -> list[Any] | None:
        tasks = [t for t in farm.tasks(service) if t.slot == 1]
        done = len(tasks) >= count and all(t.status.state >= COMPLETE for t in tasks)
        return tasks if done else None

    tasks = wait_until(ended, timeout, what=f"{count} ended tasks of {service}")
    return sorted(tasks, key=lambda t: t.meta.created_at.ToNanoseconds())


def test_restart_condition_none_leaves_a_failed_task(failing: Farm, name: str) -> None:
    failing.create(name, "--restart-condition", "none", "--restart-delay", "50ms")
    [task] = wait_history(failing, name, 1)
    assert task.status.state == FAILED
    time.sleep(0.6)  # many restart delays: still nothing new
    assert len(failing.tasks(name)) == 1
    assert "Failed" in failing.ps(name)


@pytest.mark.parametrize("condition", ["on-failure", "any"])
def test_restart_condition_restarts_a_failed_task(failing: Farm, name: str, condition: str) -> None:
    failing.create(name, "--restart-condition", condition, "--restart-delay", "50ms")
    tasks = wait_history(failing, name, 3)
    assert [t.status.state for t in tasks[:3]] == [FAILED] * 3
    ps = failing.ps(name)
    assert r"\_ " + f"{name}.1" in ps
    assert "Failed" in ps


def test_restart_delay_spaces_the_restarts(failing: Farm, name: str) -> None:
    slow, quick = f"{name}-slow", f"{name}-quick"
    failing.create(slow, "--restart-delay", "1s")
    failing.create(quick, "--restart-delay", "50ms")

    def gaps(service: str) -> list[float]:
        tasks = wait_history(failing, service, 2)
        return [
            b.meta.created_at.ToNanoseconds() / 1e9 - a.status.timestamp.ToNanoseconds() / 1e9
            for a, b in itertools.pairwise(tasks)
        ]

    assert all(gap >= 0.95 for gap in gaps(slow))
    assert all(gap < 0.6 for gap in gaps(quick))


def test_restart_max_attempts(failing: Farm, name: str) -> None:
    failing.create(name, "--restart-max-attempts", "2", "--restart-delay", "50ms")
    tasks = wait_history(failing, name, 3)
    assert [t.status.state for t in tasks] == [FAILED] * 3  # the first run and 2 restarts
    time.sleep(0.6)
    assert len(failing.tasks(name)) == 3
    assert failing.ps(name).count(f"{name}.1 ") == 3


def test_restart_window(failing: Farm, name: str) -> None:
    # Each task runs ~0.25 s before it fails. A one-minute window counts every restart:
    # one restart, then no more. A 100 ms window has forgotten the previous restart by
    # the time the next task fails: restarts go on.
    counted, forgotten = f"{name}-counted", f"{name}-forgot"
    common = ["--restart-max-attempts", "1", "--restart-delay", "50ms"]
    failing.create(counted, *common, "--restart-window", "1m")
    failing.create(forgotten, *common, "--restart-window", "100ms")
    wait_history(failing, counted, 2)
    wait_history(failing, forgotten, 4)
    time.sleep(0.5)
    assert len(failing.tasks(counted)) == 2


def test_task_history_limit(farm: Farm, name: str) -> None:
    farm.add("t-1", *FAILING)
    out = farm.ctl("cluster", "update", "--task-history-limit", "2", check=True).stdout
    assert "Task History Retention Limit: 2" in out
    # Five tasks per slot (the first and four restarts), of which two are kept.
    farm.create(name, "--replicas", "2", "--restart-delay", "50ms", "--restart-max-attempts", "4")

    def done() -> bool:
        tasks = farm.tasks(name)
        last = {
            s: max((t.restart_attempt for t in tasks if t.slot == s), default=0) for s in (1, 2)
        }
        ended = all(t.status.state >= COMPLETE for t in tasks)
        return ended and min(last.values()) == 4 and max(slots_history(farm, name).values()) <= 2

    wait_until(done, 30, what="four restarts in each slot and the history trimmed to 2")
    ps = farm.ps(name)
    for slot in (1, 2):
        assert ps.count(f"{name}.{slot} ") == 2


def test_hollow_fail_rate_fails_a_share_of_the_tasks_which_are_replaced(
    farm: Farm, name: str
) -> None:
    """--hollow-fail-rate between 0 and 1: some tasks fail (after --hollow-fail-after),
    the others run on; the failed ones are replaced in their slots. With 20 first tasks
    at a rate of one half, none failing or all failing has a chance of 2 in a million."""
    farm.add("h-", "--hollow-fail-rate", "0.5", "--hollow-fail-after", "100ms", count=2)
    replicas = 20
    farm.create(name, "--replicas", str(replicas), "--restart-delay", "0s")

    def created(t: Any) -> int:
        return int(t.meta.created_at.ToNanoseconds())

    def replaced() -> tuple[list[Any], list[Any]] | None:
        tasks = farm.tasks(name)
        running = [t for t in tasks if t.status.state == RUNNING and t.desired_state == RUNNING]
        failed = [t for t in tasks if t.status.state == FAILED]
        if len(running) != replicas or not failed:
            return None
        newest = {t.slot: t for t in running}
        if sorted(newest) != list(range(1, replicas + 1)):
            return None
        # Every failed task has a newer task running in its slot.
        if any(created(newest[t.slot]) <= created(t) for t in failed):
            return None
        return running, failed

    running, failed = wait_until(replaced, 60, what="failed tasks replaced, 20 running")
    assert all(t.desired_state > RUNNING for t in failed)  # shut down, not wanted any more
    restarted = {t.slot for t in running if t.restart_attempt > 0}
    assert restarted == {t.slot for t in failed}  # replacements run where tasks failed
    assert len(restarted) < replicas  # and some first tasks never failed


def test_node_where_the_service_keeps_failing_ranks_last(farm: Farm, name: str) -> None:
    farm.add("bad", *FAILING)
    farm.add("good")
    # "good" holds another task: with nothing else to go by, "bad" would rank first.
    farm.create(f"{name}-other", "--constraint", "node.hostname==good")
    farm.wait_running(f"{name}-other", 1)
    farm.ctl("node", "update", "--availability", "pause", "good", check=True)
    farm.create(name, "--restart-delay", "50ms")
    # Five failures on "bad" within five minutes...
    wait_until(lambda: len(farm.tasks(name)) >= 6, 20, what="five failures")
    farm.ctl("node", "update", "--availability", "active", "good", check=True)
    active_at = farm.node("good").meta.updated_at.ToNanoseconds() / 1e9
    # ...so the next replacement goes to "good" although both nodes are free, and stays.
    wait_until(lambda: farm.running(name) == Counter({"good": 1}), 20, what="a task on good")
    good = farm.node("good").id
    later = sorted(
        (t for t in farm.tasks(name) if t.meta.created_at.ToNanoseconds() / 1e9 > active_at),
        key=lambda t: t.meta.created_at.ToNanoseconds(),
    )
    on_good = [t.node_id == good for t in later]
    assert True in on_good
    # A replacement made while the node's update was still on its way to the scheduler
    # (through the store's watch) may yet go to "bad"; from the first on "good", all do.
    first = on_good.index(True)
    assert first <= 1, f"{first} replacements went to 'bad' after 'good' was active"
    assert all(on_good[first:])
    time.sleep(0.5)
    assert farm.running(name) == Counter({"good": 1})


# --------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------


def test_node_rm_refuses_a_ready_node_unless_forced(farm: Farm, name: str) -> None:
    farm.add("keep")
    gone = farm.add("gone")
    farm.create(name, "--replicas", "2")
    assert farm.wait_running(name, 2) == Counter({"keep": 1, "gone": 1})
    out = farm.ctl("node", "rm", "gone")
    assert out.returncode != 0
    assert "is ready" in out.stderr
    assert "--force" in out.stderr
    assert "gone" in farm.ctl("node", "ls", check=True).stdout
    farm.ctl("node", "rm", "--force", "gone", check=True)
    assert "gone" not in farm.ctl("node", "ls", check=True).stdout
    # Its agent learns it was removed and stops; its task is replaced elsewhere.
    assert gone.process.proc is not None
    assert gone.process.proc.wait(30) != 0
    assert farm.wait_running(name, 2) == Counter({"keep": 2})
    # A node that is down goes without --force.
    down = farm.add("down")
    # Lost, not stopped: a clean stop (SIGTERM) keeps the node ready for the agent
    # restart grace.
    down.stop(signal.SIGKILL)
    wait_until(lambda: farm.node("down").status.state != NODE_READY, 20, what="the node to be down")
    assert "Down" in farm.ctl("node", "ls", "-f", "name=down", check=True).stdout
    farm.ctl("node", "rm", "down", check=True)
    assert {n.description.hostname for n in farm.manager.nodes()} == {"keep"}


# --------------------------------------------------------------------------------------
# Rebalancing
# --------------------------------------------------------------------------------------


def test_rebalance_spreads_tasks_over_new_nodes_without_losing_any(farm: Farm, name: str) -> None:
    farm.add("o-", count=2)
    farm.create(name, "--replicas", "6")
    assert farm.wait_running(name, 6) == Counter({"o-1": 3, "o-2": 3})
    farm.add("q-", count=2)
    time.sleep(0.5)
    assert farm.running(name) == Counter({"o-1": 3, "o-2": 3})  # Swarm moves nothing itself
    with Sampler(lambda: len(farm.manager.running_tasks(name))) as sampler:
        out = farm.ctl("service", "rebalance", name, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    on = farm.wait_running(name, 6)
    assert sorted(on.values()) == [1, 1, 2, 2]
    assert len(sampler.values) > 10
    assert min(sampler.values) >= 6
    # The table shows the tasks per node before and after.
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["NODE", "BEFORE", "AFTER"])
    rows = {line.split()[0]: line.split()[1:] for line in lines[header + 1 :]}
    assert rows["o-1"][0] == "3"
    assert rows["q-1"][0] == "0"
    assert {host: int(after) for host, (_, after) in rows.items()} == dict(on)
    assert sorted(t.slot for t in farm.manager.running_tasks(name)) == [1, 2, 3, 4, 5, 6]


def test_auto_rebalance_when_a_node_joins(farm: Farm, name: str) -> None:
    farm.add("u-", count=2)
    out = farm.ctl("cluster", "update", "--auto-rebalance", "true", check=True).stdout
    assert "Auto Rebalance: true" in out
    farm.create(name, "--replicas", "4")
    assert farm.wait_running(name, 4) == Counter({"u-1": 2, "u-2": 2})
    with Sampler(lambda: len(farm.manager.running_tasks(name))) as sampler:
        farm.add("v-", count=2)

        def balanced() -> bool:
            on = farm.running(name)
            return len(on) == 4 and sum(on.values()) == 4

        wait_until(balanced, 30, what="one task per node")
    assert min(sampler.values) >= 4
    # A node that becomes active again gets its share back by itself too.
    farm.ctl("node", "update", "--availability", "drain", "v-1", check=True)

    def drained() -> bool:
        on = farm.running(name)
        return "v-1" not in on and sum(on.values()) == 4

    wait_until(drained, 20, what="v-1 drained")
    with Sampler(lambda: len(farm.manager.running_tasks(name))) as sampler:
        farm.ctl("node", "update", "--availability", "active", "v-1", check=True)
        wait_until(balanced, 30, what="one task per node again")
    assert min(sampler.values) >= 4


def test_rebalance_leaves_tasks_where_only_those_nodes_fit(farm: Farm, name: str) -> None:
    farm.add("big-", count=2)  # 8 GiB each
    farm.add("small-", "--hollow-memory", "1GiB", count=2)
    farm.create(name, "--replicas", "4", "--reserve-memory", "2G")
    assert farm.wait_running(name, 4) == Counter({"big-1": 2, "big-2": 2})
    before = sorted(t.id for t in farm.tasks(name))
    # Already as even as it can be: nothing to move.
    out = farm.ctl("service", "rebalance", "--timeout", "3s", name)
    assert out.returncode == 0, out.stderr
    time.sleep(0.5)
    assert sorted(t.id for t in farm.tasks(name)) == before


def test_rebalance_keeps_spread_preferences(farm: Farm, name: str) -> None:
    farm.add("w-", count=4)
    for host, zone in (("w-1", "a"), ("w-2", "a"), ("w-3", "a"), ("w-4", "b")):
        farm.ctl("node", "update", "--label-add", f"zone={zone}", host, check=True)
    farm.ctl("node", "update", "--availability", "pause", "w-4", check=True)
    farm.create(name, "--replicas", "6", "--placement-pref", "spread=node.labels.zone")
    assert farm.wait_running(name, 6) == Counter({"w-1": 2, "w-2": 2, "w-3": 2})
    farm.ctl("node", "update", "--availability", "active", "w-4", check=True)
    # Placed now, the service would have 3 tasks in each zone.
    preview = farm.ctl(
        "service", "update", "--dry-run", "--format", "json", "--force", name, check=True
    ).stdout
    placed = Counter(p["node_hostname"] for p in json.loads(preview)["placements"])
    assert placed["w-4"] == 3
    farm.ctl("service", "rebalance", "--timeout", "10s", name, check=True)
    on = farm.wait_running(name, 6)
    assert on["w-4"] == 3
