"""The local multi-host cluster (scripts/cluster.sh) driven from Python, and the checks
that the cluster tests, the chaos suite and the recovery benchmark make on it.

`LocalCluster.up()` runs `scripts/cluster.sh up`, reads `.run/cluster/env` and gives
swarmctl runs, control API stubs on the managers' sockets and Docker clients on the
hosts' engines; `down()` removes all of it. The checks return a list of problems
(empty when all is well), so a caller can wait until a check passes and still say
what was wrong when it never does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import grpc

from common.api import control_pb2, control_pb2_grpc, objects_pb2, types_pb2
from manager.domain import constraints
from tests.harness import swarmctl

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "cluster.sh"
RUN = ROOT / ".run" / "cluster"
BIN = Path(sys.executable).parent

ASSIGNED, STARTING, RUNNING = 192, 448, 512
READY = types_pb2.NODE_STATE_READY
DOWN = types_pb2.NODE_STATE_DOWN
LABEL_TASK = "swarmlet.task.id"
LABEL_NODE = "swarmlet.node.id"


class ClusterUnavailableError(Exception):
    """The machine cannot host the local cluster; the message says why."""


def machine_problem() -> str | None:
    """Why this machine cannot build the local cluster, or None if it looks able to."""
    if os.geteuid() != 0:
        return "the local cluster needs root (network namespaces, links, daemons)"
    missing = [
        c
        for c in ("ip", "nsenter", "dockerd", "docker", "docker-registry", "iptables", "etcd")
        if shutil.which(c) is None
    ]
    if missing:
        return f"missing {', '.join(missing)} (scripts/install-deps.sh installs them)"
    probe = f"swl-probe-{os.getpid()}"
    made = subprocess.run(
        ["ip", "netns", "add", probe], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "delete", probe], capture_output=True, check=False)
    listed = subprocess.run(
        ["iptables", "-w", "-S", "FORWARD"], capture_output=True, text=True, check=False
    )
    if listed.returncode != 0:
        return f"iptables does not work here: {listed.stderr.strip()}"
    return None


def read_env(path: Path) -> dict[str, str]:
    """The `export K=V` lines of .run/cluster/env."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip('"')
    return env


@dataclass
class LocalCluster:
    """The cluster scripts/cluster.sh built, as its env file describes it."""

    env: dict[str, str]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    _dockers: dict[int, Any] = field(default_factory=dict)

    # -- life cycle --

    @classmethod
    def up(
        cls, nodes: int = 3, extra_env: dict[str, str] | None = None, log_path: Path | None = None
    ) -> LocalCluster:
        """Build the cluster; if that fails, take down what was built and raise."""
        problem = machine_problem()
        if problem:
            raise ClusterUnavailableError(f"cannot build the local cluster: {problem}")
        log = log_path or Path("/tmp") / f"swl-cluster-{os.getpid()}.log"
        env = dict(extra_env or {})
        try:
            result = run_script(["up", str(nodes)], env, log, timeout=600)
        except BaseException:
            run_script(["down"], env, log, timeout=300)
            raise
        if result.returncode != 0:
            run_script(["down"], env, log, timeout=300)
            raise ClusterUnavailableError(
                f"scripts/cluster.sh up {nodes} failed (exit {result.returncode}); last lines "
                f"of its output ({log}):\n{tail(log, 40)}"
            )
        return cls(read_env(RUN / "env"), log, env)

    def down(self) -> None:
        self.close()
        result = run_script(["down"], self.extra_env, self.log_path, timeout=300)
        if result.returncode != 0:
            raise AssertionError(f"scripts/cluster.sh down failed:\n{tail(self.log_path, 30)}")

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()
        for client in self._dockers.values():
            with contextlib.suppress(Exception):
                client.close()
        self._dockers.clear()

    def script(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        """Run scripts/cluster.sh ARGS (kill-host 2, restore-host 2, ...)."""
        result = run_script(list(args), self.extra_env, self.log_path, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"scripts/cluster.sh {' '.join(args)} failed:\n{tail(self.log_path, 30)}"
            )
        return result.stdout

    # -- what is there --

    @property
    def hosts(self) -> list[int]:
        return [int(h.removeprefix("h")) for h in self.env["SWARMLET_CLUSTER_HOSTS"].split()]

    @property
    def manager_count(self) -> int:
        return len(self.env.get("SWARMLET_CLUSTER_MANAGERS", "x").split())

    def control(self, manager: int = 1) -> str:
        return self.env.get(f"SWARMLET_CLUSTER_M{manager}_CONTROL", self.env["SWARMCTL_HOST"])

    def host_addr(self, n: int) -> str:
        return self.env[f"SWARMLET_CLUSTER_H{n}_ADDR"]

    @property
    def registry(self) -> str:
        return self.env["SWARMLET_CLUSTER_REGISTRY"]

    def image(self, name: str = "demo") -> str:
        return f"{self.registry}/swarmlet/{name}:latest"

    def docker(self, n: int) -> Any:
        if n not in self._dockers:
            self._dockers[n] = docker.DockerClient(
                base_url=self.env[f"SWARMLET_CLUSTER_H{n}_DOCKER"], version="auto", timeout=20
            )
        return self._dockers[n]

    # -- swarmctl and the control API --

    def ctl(self, *args: str, check: bool = True, manager: int = 0, timeout: float = 120) -> str:
        """swarmctl ARGS on manager `manager` (0: the first one that answers)."""
        candidates = [manager] if manager else list(range(1, self.manager_count + 1))
        result: subprocess.CompletedProcess[str] | None = None
        for m in candidates:
            result = swarmctl(self.control(m), *args, timeout=timeout)
            if result.returncode == 0 or "does not answer" not in result.stderr:
                break
        assert result is not None
        if check and result.returncode != 0:
            raise AssertionError(
                f"swarmctl {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result.stdout + result.stderr

    def api(self, manager: int = 0) -> control_pb2_grpc.ControlStub:
        """A control API stub on manager `manager` (0: the first one that answers)."""
        candidates = [manager] if manager else list(range(1, self.manager_count + 1))
        last: Exception | None = None
        for m in candidates:
            target = self.control(m).removeprefix("unix://")
            if target not in self._channels:
                self._channels[target] = grpc.insecure_channel(f"unix:{target}")
            stub = control_pb2_grpc.ControlStub(self._channels[target])
            if len(candidates) == 1:
                return stub
            try:
                stub.GetCluster(control_pb2.GetClusterRequest(), timeout=2)
            except grpc.RpcError as exc:
                last = exc
                continue
            return stub
        raise AssertionError(f"no manager answers: {last}")

    def tasks(self, service: str = "") -> list[objects_pb2.Task]:
        filters = control_pb2.ListTasksRequest.Filters(service_ids=[service] if service else [])
        req = control_pb2.ListTasksRequest(filters=filters)
        try:
            # The stream: a list of any length (ListTasks stops at gRPC's 4 MiB).
            parts = self.api().ListTasksStream(req, timeout=20)
            return [t for part in parts for t in part.tasks]
        except grpc.RpcError as exc:
            if service and exc.code() == grpc.StatusCode.NOT_FOUND:
                return []  # the service is gone, and so are its tasks
            raise

    def services(self) -> list[objects_pb2.Service]:
        req = control_pb2.ListServicesRequest()
        parts = self.api().ListServicesStream(req, timeout=20)
        return [s for part in parts for s in part.services]

    def nodes(self) -> list[objects_pb2.Node]:
        parts = self.api().ListNodesStream(control_pb2.ListNodesRequest(), timeout=20)
        return [n for part in parts for n in part.nodes]

    def node_ids(self) -> dict[str, str]:
        """Hostname -> node id of the hosts' nodes (h1, h2, ...)."""
        hosts = {f"h{n}" for n in self.hosts}
        return {
            n.description.hostname: n.id for n in self.nodes() if n.description.hostname in hosts
        }

    def node_state(self, hostname: str) -> int:
        states = [n.status.state for n in self.nodes() if n.description.hostname == hostname]
        return READY if READY in states else (states[0] if states else -1)

    # -- the hosts' engines --

    def containers(self, n: int, *, all: bool = True) -> list[Any]:
        """swarmlet's containers on host n's engine."""
        return list(self.docker(n).containers.list(all=all, filters={"label": LABEL_TASK}))

    def running_on_hosts(self, service: str) -> dict[int, int]:
        """Host number -> running containers of `service` on its engine."""
        out = {}
        for n in self.hosts:
            out[n] = len(
                self.docker(n).containers.list(
                    filters={"label": f"swarmlet.service.name={service}", "status": "running"}
                )
            )
        return out


def run_script(
    args: list[str], extra_env: dict[str, str], log: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SWARMLET_BIN": str(BIN),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        **extra_env,
    }
    with log.open("a") as f:
        f.write(f"\n=== {time.strftime('%H:%M:%S')} cluster.sh {' '.join(args)}\n")
        f.flush()
        result = subprocess.run(
            [str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=f,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        f.write(result.stdout)
    return result


def daemon_pids() -> dict[str, int]:
    """The cluster's daemons by pid file (`manager/manager.pid`, `h1/agent.pid`, ...),
    the manager's embedded etcd and the hosts' dockerds included."""
    pids = {}
    for pid_file in sorted(RUN.glob("*/*.pid")):
        with contextlib.suppress(OSError, ValueError):
            pids[str(pid_file.relative_to(RUN))] = int(pid_file.read_text().split()[0])
    return pids


def leftovers() -> list[str]:
    """What of the local cluster is still there (empty after a clean `cluster.sh down`):
    network namespaces swl-*, the bridge swl0, processes started for it (by their
    command line, or by the cgroups of the hosts' containers), .run/cluster."""
    problems = []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = [line.split()[0] for line in netns.stdout.splitlines() if line.strip()]
    problems += [f"network namespace {n}" for n in names if n.startswith("swl-")]
    if Path("/sys/class/net/swl0").exists():
        problems.append("bridge swl0")
    marker = str(RUN).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            cgroup = (proc / "cgroup").read_text()
        except OSError:
            continue  # gone meanwhile
        if marker in cmdline or "/swl-h" in cgroup:
            shown = cmdline.replace(b"\0", b" ").decode(errors="replace")[:120]
            problems.append(f"process {proc.name}: {shown}")
    if RUN.exists():
        problems.append(f"directory {RUN}")
    return problems


def tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def fetch(addr: str, port: int, timeout: float = 5) -> str:
    """GET http://addr:port/ (the hosts are this machine's own namespaces)."""
    with urllib.request.urlopen(f"http://{addr}:{port}/", timeout=timeout) as resp:
        body: bytes = resp.read()
        return body.decode(errors="replace")


# ---------------------------------------------------------------- checks


def running(task: objects_pb2.Task) -> bool:
    return task.status.state == RUNNING and task.desired_state == RUNNING


def eligible_nodes(service: objects_pb2.Service, nodes: list[objects_pb2.Node]) -> set[str]:
    """The nodes a global service should have a task on."""
    placement = service.spec.task.placement
    wanted = constraints.parse_all(list(placement.constraints))
    out = set()
    for node in nodes:
        if node.role == types_pb2.NODE_ROLE_MANAGER and not node.description.engine.engine_version:
            continue
        if node.status.state != READY:
            continue
        if node.spec.availability != types_pb2.NODE_AVAILABILITY_ACTIVE:
            continue
        if all(c.matches(node) for c in wanted):
            out.add(node.id)
    return out


def slot_problems(
    services: list[objects_pb2.Service],
    tasks: list[objects_pb2.Task],
    nodes: list[objects_pb2.Node],
) -> list[str]:
    """Every slot of a replicated service has exactly one running task; a global
    service has exactly one on each eligible node and none elsewhere."""
    problems = []
    by_service: dict[str, list[objects_pb2.Task]] = defaultdict(list)
    for t in tasks:
        by_service[t.service_id].append(t)
    for svc in services:
        name = svc.spec.annotations.name
        live = [t for t in by_service.get(svc.id, []) if running(t)]
        if svc.spec.HasField("replicated"):
            n = svc.spec.replicated.replicas
            per_slot: dict[int, int] = defaultdict(int)
            for t in live:
                per_slot[t.slot] += 1
            for slot in range(1, n + 1):
                if per_slot.get(slot, 0) != 1:
                    problems.append(f"{name}.{slot}: {per_slot.get(slot, 0)} running tasks")
            extra = sorted(s for s in per_slot if not 1 <= s <= n)
            if extra:
                problems.append(f"{name}: running tasks in slots {extra} beyond {n} replicas")
        elif svc.spec.HasField("global"):
            want = eligible_nodes(svc, nodes)
            per_node: dict[str, int] = defaultdict(int)
            for t in live:
                per_node[t.node_id] += 1
            for node_id in want:
                if per_node.get(node_id, 0) != 1:
                    problems.append(f"{name} on {node_id}: {per_node.get(node_id, 0)} running")
            for node_id in set(per_node) - want:
                problems.append(f"{name}: a task runs on ineligible node {node_id}")
    return problems


def container_problems(
    cluster: LocalCluster,
    tasks: list[objects_pb2.Task],
    *,
    hosts: list[int] | None = None,
    running_only: bool = False,
) -> list[str]:
    """No container on the hosts' engines that no running task owns: each swarmlet
    container belongs to a task that runs (desired and observed) on that host's node.
    With running_only, stopped containers are not looked at. And the other way round:
    every task running on a host's node has its container running there."""
    by_id = {t.id: t for t in tasks}
    node_ids = cluster.node_ids()
    problems = []
    for n in hosts or cluster.hosts:
        containers = cluster.containers(n, all=not running_only)
        up = {c.labels.get(LABEL_TASK, "") for c in containers if c.status == "running"}
        for t in tasks:
            if running(t) and t.node_id == node_ids.get(f"h{n}") and t.id not in up:
                problems.append(
                    f"h{n}: task {t.annotations.name} ({t.id}) runs without a container"
                )
        for c in containers:
            tid = c.labels.get(LABEL_TASK, "")
            task = by_id.get(tid)
            what = f"h{n}: container {c.name} ({c.status})"
            if task is None:
                problems.append(f"{what}: no such task")
            elif task.node_id != node_ids.get(f"h{n}"):
                problems.append(f"{what}: its task is on node {task.node_id}")
            elif not running(task):
                state = types_pb2.TaskState.Name(task.status.state)
                desired = types_pb2.TaskState.Name(task.desired_state)
                problems.append(f"{what}: its task is {state}, desired {desired}")
            elif c.status != "running":
                problems.append(f"{what}: its task is running but the container is not")
    return problems


def stuck_tasks(tasks: list[objects_pb2.Task], bound: float) -> list[str]:
    """Tasks wanted running that have sat in ASSIGNED..STARTING for over `bound` s."""
    now = time.time()
    out = []
    for t in tasks:
        if t.desired_state != RUNNING or not ASSIGNED <= t.status.state <= STARTING:
            continue
        age = now - (t.status.timestamp.seconds + t.status.timestamp.nanos / 1e9)
        if age > bound:
            state = types_pb2.TaskState.Name(t.status.state)
            out.append(f"{t.annotations.name} ({t.id}) {state} for {age:.0f}s on {t.node_id}")
    return out
