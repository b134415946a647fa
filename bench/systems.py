"""The three systems the convergence benchmark times, behind one small interface.

Each system runs the same image, with the same label, on the same Docker engine:

- `SwarmletSystem`: a real swarm-manager (embedded etcd) and one swarm-agent, driven
  through the control API (gRPC over the manager's unix socket), as swarmctl would.
- `DockerSwarmSystem`: Docker Swarm mode, initialised on that engine for the benchmark
  and left again afterwards, driven through the Docker API (what `docker service
  create --detach` sends).
- `RawEngineSystem`: the floor: N containers created and started in parallel through
  the Docker API, one thread per container.

A run returns a `Sample`: seconds from just before the create call until the system
reports N tasks (or containers) running, plus a breakdown for the curious. Removing
what a run made is not part of the figure.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import docker
import docker.errors
import grpc
from docker.types import ContainerSpec, ServiceMode, TaskTemplate

from bench.common import BenchError
from common.api import control_pb2, types_pb2

# Every container any of the systems starts carries this label, so whatever a failed run
# leaves behind can be found and removed.
BENCH_LABEL = "swarmlet.bench"
BENCH_LABEL_VALUE = "convergence"

RUNNING = types_pb2.TASK_STATE_RUNNING
NODE_READY = types_pb2.NODE_STATE_READY

# swarmlet task states whose first "all N tasks at least here" time is recorded.
SWARMLET_PHASES = {
    "pending": types_pb2.TASK_STATE_PENDING,
    "assigned": types_pb2.TASK_STATE_ASSIGNED,
    "accepted": types_pb2.TASK_STATE_ACCEPTED,
    "preparing": types_pb2.TASK_STATE_PREPARING,
    "starting": types_pb2.TASK_STATE_STARTING,
    "running": RUNNING,
}
# Docker Swarm's task states in their order (api/types/swarm/task.go).
SWARM_STATES = [
    "new",
    "allocated",
    "pending",
    "assigned",
    "accepted",
    "preparing",
    "ready",
    "starting",
    "running",
]
SWARM_PHASES = ["pending", "assigned", "accepted", "preparing", "starting", "running"]


@dataclass
class Sample:
    """One run of one system. Times are seconds after the create call was made."""

    system: str
    replicas: int
    # The service id (or run name) the run created.
    ref: str
    # Wall-clock time (time.time()) of the create call, to match log timestamps.
    wall0: float
    # Create call -> the system reports all N running (the benchmark's figure).
    seconds: float
    # How long the create call itself took (raw: until every start call returned).
    create_call: float
    # Create call -> the last container's State.StartedAt according to the engine.
    engine_started: float | None
    # First time all N tasks were seen at least in each state (system-specific).
    phases: dict[str, float] = field(default_factory=dict)
    # Other system-specific marks.
    marks: dict[str, float] = field(default_factory=dict)
    # Remove -> every container gone (not part of the figure).
    cleanup: float = 0.0
    # False for the warm-up runs, which no figure includes.
    timed: bool = True


class System(Protocol):
    name: str

    def setup(self) -> None: ...

    def run(self, replicas: int, name: str) -> Sample: ...

    def teardown(self) -> None: ...


# ---- Docker helpers ---------------------------------------------------------------


def docker_time(text: str) -> float:
    """Seconds since the epoch of a Docker time in UTC ("2024-05-01T12:00:00.123456789Z")."""
    main, _, frac = text.removesuffix("Z").partition(".")
    seconds = calendar.timegm(time.strptime(main, "%Y-%m-%dT%H:%M:%S"))
    return seconds + (float(f"0.{frac}") if frac else 0.0)


def containers(api: Any, label: str | list[str], *, all: bool = True) -> list[dict[str, Any]]:
    """Containers with `label` (every one of them, given a list)."""
    found: list[dict[str, Any]] = api.containers(all=all, filters={"label": label})
    return found


def last_started(api: Any, label: str, wall0: float) -> float | None:
    """Seconds from `wall0` to the latest State.StartedAt of the containers with `label`."""
    starts = []
    for summary in containers(api, label):
        with contextlib.suppress(docker.errors.NotFound):
            started = api.inspect_container(summary["Id"])["State"].get("StartedAt", "")
            if started and not started.startswith("0001-"):
                starts.append(docker_time(started))
    return max(starts) - wall0 if starts else None


def wait_gone(api: Any, label: str, timeout: float = 120.0, what: str = "containers") -> float:
    """Wait until no container has `label`; return how long that took."""
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while containers(api, label):
        if time.perf_counter() > deadline:
            raise BenchError(f"{what} with label {label} still there after {timeout:.0f}s")
        time.sleep(0.05)
    return time.perf_counter() - t0


def remove_labelled(api: Any, label: str | list[str]) -> int:
    """Force-remove every container with `label`; return how many there were."""
    found = containers(api, label)
    for c in found:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            api.remove_container(c["Id"], force=True)
    return len(found)


def first_all_at_least(
    phases: dict[str, float], now: float, states: Iterable[int], order: Mapping[str, int]
) -> None:
    """Record, for each phase not yet seen, `now` if every state is at least that phase."""
    low = min(states, default=None)
    if low is None:
        return
    for phase, rank in order.items():
        if phase not in phases and low >= rank:
            phases[phase] = now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """Process ids of the children of `pid`, their children, ... (Linux /proc)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                text = Path(f"/proc/{p}/task/{tid}/children").read_text()
            except OSError:
                continue
            for child in text.split():
                out.append(int(child))
                todo.append(int(child))
    return out


def start_time(pid: int) -> str:
    """The start time of process `pid` (field 22 of /proc/PID/stat); "" if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name (field 2) may hold spaces; the fields after it do not.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def poll(check: Callable[[], bool], timeout: float, interval: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ---- swarmlet -----------------------------------------------------------------------


class SwarmletSystem:
    """A real swarm-manager (embedded etcd) and one swarm-agent on the engine."""

    name = "swarmlet"
    label_key = "swarmlet.service.name"

    def __init__(
        self,
        docker_host: str,
        client: Any,
        image: str,
        *,
        poll_interval: float,
        timeout: float,
        log_dir: Path | None,
    ) -> None:
        self.docker_host = docker_host
        self.client = client
        self.api = client.api
        self.image = image
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.log_dir = log_dir
        self.manager: Any = None
        self.agent: Any = None
        # pid -> start time of the daemons' children (the embedded etcd), so that only
        # those very processes are ever killed, not others that reuse a pid later.
        self._children: dict[int, str] = {}

    def setup(self) -> None:
        # The test harness starts the daemons exactly as the integration tests do: a
        # temp state dir under /tmp, a free port, JSON logs in the state dir.
        from tests.harness import Agent, Manager

        self.manager = Manager()
        try:
            self.manager.start()
        except AssertionError as exc:  # the harness's way to say it did not come up
            raise BenchError(f"swarm-manager did not start: {exc}") from None
        self._remember_children()
        options: dict[str, Any] = {}
        join_token = getattr(self.manager, "join_token", None)
        if callable(join_token):  # a harness (and manager) with a cluster CA
            options["join_token"] = join_token()
        self.agent = Agent(
            [self.manager.addr],
            self.docker_host,
            hostname="bench-node",
            # The breakdown reads the agent's `task state` steps before running:
            # those are logged at debug.
            extra=["--log-level", "debug"],
            **options,
        ).start()
        try:
            node_id = self.agent.node_id
        except AssertionError as exc:
            raise BenchError(
                f"swarm-agent did not join: {exc}\n{self.agent.process.log()[-2000:]}"
            ) from None

        def ready() -> bool:
            try:
                nodes = self.control().ListNodes(control_pb2.ListNodesRequest(), timeout=5).nodes
            except grpc.RpcError:
                return False
            return any(n.id == node_id and n.status.state == NODE_READY for n in nodes)

        poll(ready, 60, 0.1, "the swarmlet node to be Ready")
        self._remember_children()

    def _remember_children(self) -> None:
        for proc in (self.manager, self.agent):
            if proc is not None and proc.process.proc is not None:
                for pid in descendants(proc.process.proc.pid):
                    started = start_time(pid)
                    if started:
                        self._children.setdefault(pid, started)

    def control(self) -> Any:
        return self.manager.api()

    def run(self, replicas: int, name: str) -> Sample:
        from swarmctl.service_spec import CreateOptions, build_spec

        # The spec swarmctl would send for `service create --name NAME --replicas N IMAGE`.
        spec = build_spec(
            CreateOptions(
                image=self.image,
                name=name,
                replicas=replicas,
                container_labels={BENCH_LABEL: BENCH_LABEL_VALUE},
            )
        )
        control = self.control()
        request = control_pb2.CreateServiceRequest(spec=spec)
        phases: dict[str, float] = {}
        wall0 = time.time()
        t0 = time.perf_counter()
        service = control.CreateService(request, timeout=30).service
        create_call = time.perf_counter() - t0
        listing = control_pb2.ListTasksRequest(
            filters=control_pb2.ListTasksRequest.Filters(service_ids=[service.id])
        )
        deadline = t0 + self.timeout
        while True:
            tasks = control.ListTasks(listing, timeout=10).tasks
            now = time.perf_counter() - t0
            live = [t for t in tasks if t.desired_state == RUNNING]
            if len(live) >= replicas:
                phases.setdefault("listed", now)
                first_all_at_least(phases, now, (t.status.state for t in live), SWARMLET_PHASES)
            if sum(t.status.state == RUNNING for t in live) >= replicas:
                seconds = now
                break
            if time.perf_counter() > deadline:
                states = sorted(t.status.state for t in tasks)
                raise BenchError(
                    f"swarmlet: {name} not converged after {self.timeout:.0f}s (states {states})"
                )
            time.sleep(self.poll_interval)
        marks = {
            # The orchestrator's write of the last task (manager clock = this clock).
            "tasks_created": max(t.meta.created_at.ToNanoseconds() for t in live) / 1e9 - wall0,
            # The agent's timestamp of the last RUNNING report.
            "agent_running": max(t.status.timestamp.ToNanoseconds() for t in live) / 1e9 - wall0,
        }
        label = f"{self.label_key}={name}"
        engine = last_started(self.api, label, wall0)
        t_rm = time.perf_counter()
        control.RemoveService(control_pb2.RemoveServiceRequest(service_id=service.id), timeout=30)
        wait_gone(self.api, label, what="swarmlet containers")
        cleanup = time.perf_counter() - t_rm
        return Sample(
            self.name,
            replicas,
            service.id,
            wall0,
            seconds,
            create_call,
            engine,
            phases,
            marks,
            cleanup,
        )

    def teardown(self) -> None:
        if self.manager is not None:
            with contextlib.suppress(Exception):
                self._remember_children()
        for proc, logname in ((self.agent, "agent.log"), (self.manager, "manager.log")):
            if proc is None or self.log_dir is None:
                continue
            with contextlib.suppress(OSError):
                self.log_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(proc.process.log_path, self.log_dir / logname)
        if self.agent is not None:
            self.agent.cleanup(self.client)
            self.agent = None
        if self.manager is not None:
            self.manager.cleanup()
            self.manager = None
        # The embedded etcd dies with its manager (PDEATHSIG); make sure of it.
        for pid, started in self._children.items():
            if start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._children.clear()


# ---- Docker Swarm mode --------------------------------------------------------------


class DockerSwarmSystem:
    """Docker Swarm mode on the same engine: initialised here, left in teardown."""

    name = "swarm"

    def __init__(
        self,
        docker_host: str,
        client: Any,
        image: str,
        *,
        poll_interval: float,
        timeout: float,
        by_id: bool,
        cli: bool,
    ) -> None:
        self.docker_host = docker_host
        self.api = client.api
        self.image = image
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.by_id = by_id
        self.cli = shutil.which("docker") if cli else None
        if cli and self.cli is None:
            raise BenchError("--swarm-client cli: no `docker` command on PATH")
        self.joined = False
        self._had_gwbridge = True
        self._service_ids: list[str] = []

    def check(self) -> None:
        """Refuse to run on an engine that is already part of a swarm."""
        state = self.api.info().get("Swarm", {}).get("LocalNodeState", "")
        if state != "inactive":
            raise BenchError(
                f"the Docker engine is already part of a swarm (LocalNodeState={state!r}). The "
                "benchmark inits a swarm of its own and leaves it afterwards, so it will not "
                "touch an existing one: leave it first (`docker swarm leave --force`) or run "
                "without Docker Swarm (--systems swarmlet,raw)"
            )

    def setup(self) -> None:
        self.check()
        self._had_gwbridge = bool(self.api.networks(names=["docker_gwbridge"]))
        port = free_port()
        self.joined = True  # from here on, teardown leaves (init may fail half-way)
        self.api.init_swarm(advertise_addr=f"127.0.0.1:{port}", listen_addr=f"127.0.0.1:{port}")

        def ready() -> bool:
            nodes = self.api.nodes()
            return bool(nodes) and all(n["Status"]["State"] == "ready" for n in nodes)

        poll(ready, 60, 0.1, "the swarm node to be ready")
        if self.by_id:
            # An image id skips the agent's pull attempt (see docs/performance.md).
            self.image = self.api.inspect_image(self.image)["Id"]

    def run(self, replicas: int, name: str) -> Sample:
        template = TaskTemplate(
            ContainerSpec(self.image, labels={BENCH_LABEL: BENCH_LABEL_VALUE}),
        )
        mode = ServiceMode("replicated", replicas=replicas)
        phases: dict[str, float] = {}
        order = {p: SWARM_STATES.index(p) for p in SWARM_PHASES}
        wall0 = time.time()
        t0 = time.perf_counter()
        service_id = self._create(template, mode, replicas, name)
        create_call = time.perf_counter() - t0
        self._service_ids.append(service_id)
        deadline = t0 + self.timeout
        while True:
            tasks = self.api.tasks(filters={"service": service_id})
            now = time.perf_counter() - t0
            live = [t for t in tasks if t.get("DesiredState") == "running"]
            if len(live) >= replicas:
                phases.setdefault("listed", now)
                ranks = (SWARM_STATES.index(t["Status"]["State"]) for t in live)
                first_all_at_least(phases, now, ranks, order)
            if sum(t["Status"]["State"] == "running" for t in live) >= replicas:
                seconds = now
                break
            if time.perf_counter() > deadline:
                states = sorted(t["Status"]["State"] for t in tasks)
                raise BenchError(
                    f"swarm: {name} not converged after {self.timeout:.0f}s (states {states})"
                )
            time.sleep(self.poll_interval)
        label = f"com.docker.swarm.service.id={service_id}"
        engine = last_started(self.api, label, wall0)
        t_rm = time.perf_counter()
        self.api.remove_service(service_id)
        self._service_ids.remove(service_id)
        wait_gone(self.api, label, what="Docker Swarm containers")
        cleanup = time.perf_counter() - t_rm
        return Sample(
            self.name,
            replicas,
            service_id,
            wall0,
            seconds,
            create_call,
            engine,
            phases,
            {},
            cleanup,
        )

    def _create(self, template: TaskTemplate, mode: ServiceMode, replicas: int, name: str) -> str:
        """Create the service; return its id."""
        if self.cli is None:
            created: dict[str, str] = self.api.create_service(template, name=name, mode=mode)
            return created["ID"]
        # What a user types, CLI start-up and its registry digest look-up included.
        args = [self.cli, "service", "create", "--detach", "--quiet", "--name", name]
        args += ["--replicas", str(replicas), "--container-label"]
        args += [f"{BENCH_LABEL}={BENCH_LABEL_VALUE}", self.image]
        env = {**os.environ, "DOCKER_HOST": self.docker_host}
        out = subprocess.run(args, capture_output=True, text=True, timeout=60, env=env, check=False)
        if out.returncode != 0 or not out.stdout.strip():
            raise BenchError(f"docker service create failed: {out.stderr.strip()}")
        return out.stdout.split()[-1]

    def teardown(self) -> None:
        if not self.joined:
            return
        for service_id in self._service_ids:
            with contextlib.suppress(docker.errors.APIError):
                self.api.remove_service(service_id)
        self._service_ids.clear()
        self.api.leave_swarm(force=True)
        self.joined = False
        # Leaving stops the service containers; what remains is the docker_gwbridge
        # network Swarm made, removed too unless it was there before.
        remove_labelled(
            self.api, [f"{BENCH_LABEL}={BENCH_LABEL_VALUE}", "com.docker.swarm.service.id"]
        )
        if not self._had_gwbridge:
            for _ in range(50):
                try:
                    for net in self.api.networks(names=["docker_gwbridge"]):
                        self.api.remove_network(net["Id"])
                    break
                except docker.errors.APIError:
                    time.sleep(0.1)


# ---- the raw engine floor -----------------------------------------------------------


class RawEngineSystem:
    """N containers created and started in parallel, one thread each."""

    name = "raw"

    def __init__(self, docker_host: str, image: str, *, threads: int, timeout: float) -> None:
        # A connection per thread, so no thread waits for another's connection.
        self.client = docker.DockerClient(
            base_url=docker_host, version="auto", timeout=120, max_pool_size=threads + 2
        )
        self.api = self.client.api
        self.image = image
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="raw")

    def setup(self) -> None:
        pass

    def run(self, replicas: int, name: str) -> Sample:
        label = f"{BENCH_LABEL}.run={name}"
        labels = {BENCH_LABEL: BENCH_LABEL_VALUE, f"{BENCH_LABEL}.run": name}

        def one(slot: int) -> float:
            created = self.api.create_container(self.image, name=f"{name}.{slot}", labels=labels)
            self.api.start(created["Id"])
            return time.perf_counter()

        wall0 = time.time()
        t0 = time.perf_counter()
        futures = [self.pool.submit(one, slot) for slot in range(1, replicas + 1)]
        done = [f.result() for f in futures]
        starts_returned = max(done) - t0
        deadline = t0 + self.timeout
        while len(self.api.containers(filters={"label": label, "status": "running"})) < replicas:
            if time.perf_counter() > deadline:
                raise BenchError(f"raw: {name} containers not running after {self.timeout:.0f}s")
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        engine = last_started(self.api, label, wall0)
        t_rm = time.perf_counter()
        ids = [c["Id"] for c in containers(self.api, label)]
        list(self.pool.map(lambda cid: self.api.remove_container(cid, force=True), ids))
        wait_gone(self.api, label, what="raw containers")
        cleanup = time.perf_counter() - t_rm
        marks = {"starts_returned": starts_returned}
        return Sample(
            self.name, replicas, name, wall0, seconds, starts_returned, engine, {}, marks, cleanup
        )

    def teardown(self) -> None:
        remove_labelled(self.api, f"{BENCH_LABEL}.run")
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()
