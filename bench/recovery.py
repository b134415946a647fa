"""Recovery benchmark: time from losing a host to all of its replicas running elsewhere,
swarmlet with its defaults against Docker Swarm mode, on the local 3-host cluster.

    python -m bench.recovery [--runs 5] [--replicas 6] [--quick]

(`make bench-recovery`.) It builds the local cluster (scripts/cluster.sh up 3: three
network-namespace hosts, each with its own dockerd, a swarmlet agent, the registry)
and takes it down at the end, whatever happens. Then:

- swarmlet: a service of N replicas of the registry's demo image (spread over the three
  hosts), `cluster.sh kill-host 3` (SIGKILL to the host's agent, dockerd, containerd
  and containers), and the control API polled until N tasks run on the other hosts.
  Meanwhile a load runs on the same manager, as in the scheduler benchmark: a farm of
  hollow nodes (`swarm-agent --executor hollow --count F`) and services of thousands of
  hollow replicas constrained to them, scaled up and down; every node status change is
  watched (the control API's event stream, and ListNodes polled), and a node other
  than the killed host declared down is reported as a false down.
- Docker Swarm: the same three dockerds joined as a swarm (`docker -H <host> swarm
  init` on h1 with its address, `swarm join` on h2 and h3 with the worker token), a
  service with the same replica count and image, the same kill-host, and the swarm's
  task list polled until N tasks run on the other hosts. The swarm is left at the end
  (`swarm leave --force` on every host), also after an error.

After each run the host is restored (`cluster.sh restore-host`), the service removed,
and the benchmark waits until every host is back and no container is left. Medians,
the ratio, whether the target (swarmlet <= 0.25x Docker Swarm) is met and whether any
node was falsely declared down are printed, and everything goes to
bench/results/recovery.json. A missed target is a result: the exit status is 0 unless
the benchmark could not run (1) or was interrupted (130).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.common import RESULTS, git_commit, raise_interrupt
from common.api import control_pb2
from tests.clusterlib import DOWN, READY, LocalCluster, running
from tests.harness import Agent

TARGET = 0.25
SYSTEMS = ("swarmlet", "swarm")
FARM_LABEL = "farm"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.recovery",
        description="Time from killing a host to all its replicas running elsewhere: swarmlet "
        "against Docker Swarm mode on the local 3-host cluster.",
    )
    p.add_argument("--runs", type=int, default=5, help="timed runs per system (5)")
    p.add_argument("--replicas", type=int, default=6, help="replicas of the service (6)")
    p.add_argument("--host", type=int, default=3, help="the host that is killed (3)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="swarmlet,swarm (both)")
    p.add_argument("--farm", type=int, default=300, help="hollow nodes of the load (300)")
    p.add_argument(
        "--load-replicas",
        default="1000,3000",
        help="the load's hollow service is scaled between these replica counts (1000,3000)",
    )
    p.add_argument("--no-load", action="store_true", help="swarmlet runs without the load")
    p.add_argument("--quick", action="store_true", help="smoke check: 2 runs, a farm of 50")
    p.add_argument("--poll-ms", type=float, default=50.0, help="task list poll interval (50)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-run timeout, seconds")
    p.add_argument("--output", type=Path, default=RESULTS / "recovery.json", help="JSON results")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 2
        args.farm = min(args.farm, 50)
        args.load_replicas = "200,500"
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not args.systems or set(args.systems) - set(SYSTEMS):
        p.error(f"--systems: choose from {', '.join(SYSTEMS)}")
    try:
        args.load_replicas = [int(n) for n in str(args.load_replicas).split(",")]
    except ValueError:
        p.error("--load-replicas: two numbers, e.g. 1000,3000")
    if args.runs < 1 or args.replicas < 1 or not 1 <= args.host <= 3:
        p.error("--runs and --replicas must be >= 1, --host 1..3")
    return args


@dataclass
class Run:
    system: str
    run: int
    seconds: float  # kill -> all replicas running on the other hosts
    declared_down: float | None  # kill -> the host seen down (node status)
    replaced: int  # tasks of the killed host that had to move
    on_hosts_before: dict[str, int] = field(default_factory=dict)


class NodeWatch:
    """Every node status change on the manager: its event stream and a ListNodes poll."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.downs: list[dict[str, Any]] = []  # {time, id, hostname, how}
        self.stop = threading.Event()
        self._call: Any = None
        self._threads = [
            threading.Thread(target=self._stream, daemon=True),
            threading.Thread(target=self._poll, daemon=True),
        ]

    def start(self) -> NodeWatch:
        for t in self._threads:
            t.start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self._call is not None:
            self._call.cancel()
        for t in self._threads:
            t.join(5)

    def _record(self, node_id: str, hostname: str, how: str) -> None:
        self.downs.append({"time": time.time(), "id": node_id, "hostname": hostname, "how": how})

    def _stream(self) -> None:
        while not self.stop.is_set():
            try:
                req = control_pb2.WatchEventsRequest(types=["node"])
                self._call = self.cluster.api(1).WatchEvents(req)
                for ev in self._call:
                    if "status=down" in ev.detail:
                        self._record(ev.id, ev.name, "event")
            except grpc.RpcError:
                if not self.stop.wait(0.5):
                    continue

    def _poll(self) -> None:
        was_down: set[str] = set()
        while not self.stop.wait(0.5):
            try:
                nodes = self.cluster.api(1).ListNodes(control_pb2.ListNodesRequest(), timeout=10)
            except grpc.RpcError:
                continue
            now_down = {n.id for n in nodes.nodes if n.status.state == DOWN}
            for n in nodes.nodes:
                if n.id in now_down - was_down:
                    self._record(n.id, n.description.hostname, "poll")
            was_down = now_down

    def false_downs(self, allowed: set[str]) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for d in self.downs:
            if d["id"] not in allowed:
                seen.setdefault(d["id"], d)
        return list(seen.values())


class Load:
    """The scheduler benchmark's kind of load on the manager: a hollow farm and hollow
    services of thousands of replicas on it, scaled up and down until stopped."""

    def __init__(self, cluster: LocalCluster, farm: int, replicas: list[int]) -> None:
        self.cluster = cluster
        self.farm_size = farm
        self.replicas = replicas
        self.farm: Agent | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.scalings = 0
        self.errors: list[str] = []

    def start(self) -> Load:
        token = self.cluster.ctl("join-token", "-q", "worker").strip()
        self.farm = Agent(
            [self.cluster.env["SWARMLET_CLUSTER_MANAGER"]],
            "unix:///nonexistent",
            join_token=token,
            extra=[
                "--executor", "hollow", "--count", str(self.farm_size),
                "--hollow-label", f"{FARM_LABEL}=1", "--hollow-prepare", "10ms",
                "--hollow-start", "10ms", "--log-level", "warning",
            ],
        ).start()  # fmt: skip
        deadline = time.monotonic() + 180
        while self._ready_farm() < self.farm_size:
            if time.monotonic() > deadline or not self.farm.process.running:
                raise RuntimeError(
                    f"the hollow farm did not come up: {self._ready_farm()} of "
                    f"{self.farm_size} nodes ready\n{self.farm.process.log()[-2000:]}"
                )
            time.sleep(1)
        self.cluster.ctl(
            "service", "create", "-d", "--name", "load", "--replicas", str(self.replicas[0]),
            "--constraint", f"engine.labels.{FARM_LABEL}==1", "busybox",
        )  # fmt: skip
        self.thread.start()
        return self

    def _ready_farm(self) -> int:
        nodes = self.cluster.nodes()
        return sum(
            1
            for n in nodes
            if n.status.state == READY and n.description.engine.labels.get(FARM_LABEL) == "1"
        )

    def _loop(self) -> None:
        i = 0
        while not self.stop.wait(4):
            i += 1
            n = self.replicas[i % len(self.replicas)]
            try:
                self.cluster.ctl("service", "scale", "-d", f"load={n}", timeout=60)
                self.scalings += 1
            except (AssertionError, subprocess.TimeoutExpired) as exc:
                self.errors.append(str(exc)[-300:])

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(70)
        with contextlib.suppress(Exception):
            self.cluster.ctl("service", "rm", "load", check=False)
        if self.farm is not None:
            self.farm.cleanup(None)


def wait(check: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (grpc.RpcError, OSError, KeyError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def docker_cli(cluster: LocalCluster, n: int, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", "-H", cluster.env[f"SWARMLET_CLUSTER_H{n}_DOCKER"], *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"docker -H h{n} {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cluster: LocalCluster | None = None
        self.runs: list[Run] = []
        self.false_downs: list[dict[str, Any]] = []
        self.load_info: dict[str, Any] = {}
        self.swarm_joined: list[int] = []

    @property
    def c(self) -> LocalCluster:
        assert self.cluster is not None
        return self.cluster

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # -- swarmlet --

    def swarmlet(self) -> None:
        host, n = self.args.host, self.args.replicas
        watch = NodeWatch(self.c).start()
        load: Load | None = None
        killed_id = self.c.node_ids()[f"h{host}"]
        try:
            if not self.args.no_load:
                self.say(
                    f"load: {self.args.farm} hollow nodes, a hollow service scaled between "
                    f"{self.args.load_replicas} replicas"
                )
                load = Load(self.c, self.args.farm, self.args.load_replicas).start()
            constraint = (
                [] if self.args.no_load else ["--constraint", f"engine.labels.{FARM_LABEL}!=1"]
            )
            for i in range(1, self.args.runs + 1):
                name = f"rec{i}"
                self.c.ctl(
                    "service", "create", "--name", name, "--replicas", str(n), *constraint,
                    self.c.image(), timeout=180,
                )  # fmt: skip
                before = self.c.running_on_hosts(name)
                started = time.monotonic()
                self.c.script("kill-host", str(host))
                down_at: float | None = None
                deadline = started + self.args.timeout
                while True:
                    now = time.monotonic()
                    if down_at is None and self.c.node_state(f"h{host}") == DOWN:
                        down_at = now - started
                    live = [t for t in self.c.tasks(name) if running(t) and t.node_id != killed_id]
                    if len(live) == n:
                        seconds = time.monotonic() - started
                        break
                    if now > deadline:
                        raise RuntimeError(f"swarmlet run {i}: {len(live)} of {n} running")
                    time.sleep(self.args.poll_ms / 1000)
                run = Run("swarmlet", i, seconds, down_at, before[host],
                          {f"h{k}": v for k, v in before.items()})  # fmt: skip
                self.runs.append(run)
                self.say(
                    f"swarmlet run {i}: {seconds:.2f}s (declared down after "
                    f"{down_at if down_at is not None else float('nan'):.2f}s, "
                    f"{before[host]} tasks moved)"
                )
                self.restore_swarmlet(name)
        finally:
            if load is not None:
                self.load_info = {
                    "farm": self.args.farm,
                    "replicas": self.args.load_replicas,
                    "scalings": load.scalings,
                    "errors": load.errors[-5:],
                }
                load.close()
            watch.close()
            self.false_downs = watch.false_downs({killed_id})

    def restore_swarmlet(self, name: str) -> None:
        self.c.script("restore-host", str(self.args.host))
        self.c.ctl("service", "rm", name)
        wait(
            lambda: (
                not any(self.c.running_on_hosts(name).values())
                and not [t for t in self.c.tasks() if t.service_name == name]
            ),
            60,
            f"{name} to be gone",
        )
        wait(
            lambda: all(self.c.node_state(f"h{k}") == READY for k in self.c.hosts),
            60,
            "every host ready",
        )
        time.sleep(1)

    # -- Docker Swarm --

    def swarm_up(self) -> None:
        for k in self.c.hosts:  # leftovers of an interrupted run
            docker_cli(self.c, k, "swarm", "leave", "--force", check=False)
        h1 = self.c.host_addr(1)
        docker_cli(self.c, 1, "swarm", "init", "--advertise-addr", h1)
        self.swarm_joined.append(1)
        token = docker_cli(self.c, 1, "swarm", "join-token", "-q", "worker")
        for k in self.c.hosts[1:]:
            docker_cli(self.c, k, "swarm", "join", "--token", token,
                       "--advertise-addr", self.c.host_addr(k), f"{h1}:2377")  # fmt: skip
            self.swarm_joined.append(k)
        wait(lambda: self.swarm_ready() == len(self.c.hosts), 60, "the swarm's nodes ready")

    def swarm_ready(self) -> int:
        nodes = self.c.docker(1).api.nodes()
        return sum(1 for nd in nodes if nd["Status"]["State"] == "ready")

    def swarm_down(self) -> None:
        for k in reversed(self.swarm_joined):
            with contextlib.suppress(Exception):
                docker_cli(self.c, k, "swarm", "leave", "--force", check=False)
        self.swarm_joined.clear()

    def swarm(self) -> None:
        host, n = self.args.host, self.args.replicas
        self.swarm_up()
        try:
            killed_id = self.c.docker(host).info()["Swarm"]["NodeID"]
            api = self.c.docker(1).api
            for i in range(1, self.args.runs + 1):
                name = f"rec{i}"
                docker_cli(self.c, 1, "service", "create", "--detach", "--name", name,
                           "--replicas", str(n), self.c.image())  # fmt: skip

                def live(name: str = name, exclude: str = "") -> list[dict[str, Any]]:
                    tasks = api.tasks(filters={"service": name})
                    return [
                        t for t in tasks
                        if t["Status"]["State"] == "running" and t["DesiredState"] == "running"
                        and t.get("NodeID") != exclude
                    ]  # fmt: skip

                wait(lambda: len(live()) == n, 180, f"Swarm's {name} running")
                before = {f"h{k}": v for k, v in self.running_swarm_containers(name).items()}
                started = time.monotonic()
                self.c.script("kill-host", str(host))
                down_at: float | None = None
                deadline = started + self.args.timeout
                while True:
                    now = time.monotonic()
                    if down_at is None:
                        state = api.inspect_node(killed_id)["Status"]["State"]
                        if state == "down":
                            down_at = now - started
                    if len(live(exclude=killed_id)) == n:
                        seconds = time.monotonic() - started
                        break
                    if now > deadline:
                        raise RuntimeError(f"Swarm run {i}: not recovered in {self.args.timeout}s")
                    time.sleep(self.args.poll_ms / 1000)
                self.runs.append(Run("swarm", i, seconds, down_at, before[f"h{host}"], before))
                self.say(
                    f"Swarm run {i}: {seconds:.2f}s (declared down after "
                    f"{down_at if down_at is not None else float('nan'):.2f}s, "
                    f"{before[f'h{host}']} tasks moved)"
                )
                self.c.script("restore-host", str(host))
                wait(lambda: self.swarm_ready() == len(self.c.hosts), 90, "the swarm's nodes back")
                docker_cli(self.c, 1, "service", "rm", name)
                wait(
                    lambda name=name: (
                        not any(self.running_swarm_containers(name, all=True).values())
                    ),
                    90,
                    f"Swarm's {name} containers gone",
                )
                time.sleep(1)
        finally:
            self.swarm_down()

    def running_swarm_containers(self, service: str, all: bool = False) -> dict[int, int]:
        label = f"com.docker.swarm.service.name={service}"
        return {
            k: len(self.c.docker(k).containers.list(all=all, filters={"label": label}))
            for k in self.c.hosts
        }

    # -- report --

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for system in SYSTEMS:
            runs = [r for r in self.runs if r.system == system]
            if not runs:
                continue
            secs = [r.seconds for r in runs]
            downs = [r.declared_down for r in runs if r.declared_down is not None]
            out[system] = {
                "median": statistics.median(secs),
                "min": min(secs),
                "max": max(secs),
                "declared_down_median": statistics.median(downs) if downs else None,
                "runs": len(runs),
            }
        if "swarmlet" in out and "swarm" in out:
            ratio = out["swarmlet"]["median"] / out["swarm"]["median"]
            out["ratio"] = ratio
            out["target"] = TARGET
            out["met"] = ratio <= TARGET
        if "swarmlet" in out and not self.args.no_load:
            out["false_downs"] = self.false_downs
        return out

    def report(self, s: dict[str, Any]) -> None:
        print()
        print(
            f"Recovery: kill host h{self.args.host} -> its replicas running elsewhere "
            f"({self.args.replicas} replicas, median of {self.args.runs} runs, seconds)"
        )
        print(f"{'system':<14}{'median':>9}{'min':>9}{'max':>9}{'declared down':>16}")
        for system, label in (("swarmlet", "swarmlet"), ("swarm", "Docker Swarm")):
            if system in s:
                r = s[system]
                d = r["declared_down_median"]
                print(
                    f"{label:<14}{r['median']:>9.2f}{r['min']:>9.2f}{r['max']:>9.2f}"
                    f"{(f'{d:.2f}' if d is not None else '-'):>16}"
                )
        if "ratio" in s:
            verdict = "met" if s["met"] else "MISSED"
            print(f"swarmlet / Docker Swarm: {s['ratio']:.2f}x (target <= {TARGET}x): {verdict}")
        if "false_downs" in s:
            if s["false_downs"]:
                names = ", ".join(f"{d['hostname']} ({d['id'][:12]})" for d in s["false_downs"])
                print(f"nodes falsely declared down under load: {names}: MISSED")
            else:
                print(
                    f"no node falsely declared down under load ({self.load_info.get('farm')} "
                    f"hollow nodes, {self.load_info.get('scalings')} scalings between "
                    f"{self.load_info.get('replicas')} replicas): met"
                )

    def write_json(self, s: dict[str, Any], started: datetime.datetime) -> Path:
        out: Path = self.args.output
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "benchmark": "recovery",
            "started": started.isoformat(timespec="seconds"),
            "commit": git_commit(),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "kernel": platform.release(),
                "loadavg": os.getloadavg(),
            },
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.args).items()},
            "load": self.load_info,
            "summary": s,
            "runs": [asdict(r) for r in self.runs],
        }
        out.write_text(json.dumps(doc, indent=2) + "\n")
        return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    bench = Benchmark(args)
    started = datetime.datetime.now(datetime.UTC)
    log = RESULTS / "recovery-cluster.log"
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        bench.say("building the local 3-host cluster (scripts/cluster.sh up 3)")
        bench.cluster = LocalCluster.up(3, log_path=log)
        if "swarmlet" in args.systems:
            bench.swarmlet()
        if "swarm" in args.systems:
            bench.swarm()
        s = bench.summary()
        bench.report(s)
        print(f"\nwritten: {bench.write_json(s, started)}")
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench.recovery: error: {exc}", file=sys.stderr)
        if bench.runs:
            bench.write_json(bench.summary(), started)
        return 1
    finally:
        previous = {
            sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            if bench.cluster is not None:
                with contextlib.suppress(Exception):
                    bench.swarm_down()
                bench.say("taking the cluster down")
                bench.cluster.down()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
