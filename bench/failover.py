"""Failover benchmark: time from killing the leader to a new service's tasks being placed.

    python -m bench.failover [--runs 5] [--nodes 20] [--replicas 20] [--new-replicas 5]

(`make bench-failover` runs it.) It starts a 3-member etcd cluster, three managers on
it and a farm of hollow agents (no containers: what is measured is the managers), and
a service of --replicas tasks that runs throughout. Then, --runs times:

1. find the leader (the manager whose own view says it leads) and kill it with SIGKILL;
2. at once create a new service of --new-replicas tasks through a surviving manager's
   control API (gRPC on its unix socket), retrying while it answers UNAVAILABLE;
3. poll that manager's ListTasks every --poll-ms until every task of the new service
   is placed (ASSIGNED or later): the time from the kill to then is the figure;
4. wait --settle seconds (longer than the grace every node gets after a leadership
   change) and check that the failover restarted nothing: the running task ids of the
   first service are the ones from before, no node was declared down, and the new
   service's tasks all run;
5. restart the killed manager on its state dir (it rejoins as a follower), wait until
   all three are reachable, and remove the new service.

The leader's etcd lease has the managers' default TTL (2 s) unless --leader-ttl is
given. Medians, min and max, whether the targets (<= 3 s, and zero restarts) are met,
and where the time goes (from the new leader's JSON log: elected, tasks created by the
orchestrator, placed by the scheduler) are printed; every run is written as JSON to
bench/results/failover.json, the daemons' logs beside it. A missed target is a result,
not an error: the exit status is 0 unless the benchmark itself could not run (1), or
was interrupted (130).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.common import RESULTS, STOP_SIGNALS, BenchError, git_commit, machine, raise_interrupt
from bench.timeline import read_events
from common import states
from common.api import control_pb2, specs_pb2, types_pb2
from tests.harness import Agent, EtcdCluster, Manager, wait_until

TARGET_SECONDS = 3.0
IMAGE = "swarmlet/sleeper:latest"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.failover",
        description="Time from killing the leading manager to a new service's tasks being "
        "placed, with 3 managers on a 3-member etcd cluster and a hollow farm.",
    )
    p.add_argument("--runs", type=int, default=5, help="leader kills (5)")
    p.add_argument("--nodes", type=int, default=20, help="hollow nodes in the farm (20)")
    p.add_argument(
        "--replicas", type=int, default=20, help="tasks of the service that runs throughout (20)"
    )
    p.add_argument(
        "--new-replicas", type=int, default=5, help="tasks of the service created per run (5)"
    )
    p.add_argument(
        "--leader-ttl",
        type=int,
        default=None,
        help="the managers' --leader-ttl, seconds (their default, 2, if not given)",
    )
    p.add_argument(
        "--etcd-election-ms",
        type=int,
        default=None,
        help="etcd's --election-timeout (and a tenth of it as --heartbeat-interval); etcd "
        "grants no lease TTL below 1.5 election timeouts (etcd's default, 1000)",
    )
    p.add_argument("--poll-ms", type=float, default=10.0, help="ListTasks poll interval (10)")
    p.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds after the kill before checking that nothing restarted: past the "
        "election (~2 s) plus the grace of 2 x 3 heartbeats every node gets after it (10)",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="per-run timeout, seconds (60)")
    p.add_argument("--quick", action="store_true", help="smoke check: --runs 2")
    p.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "failover.json",
        help="JSON results (bench/results/failover.json)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 2
    for name in ("runs", "nodes", "new_replicas"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.replicas < 0:
        p.error("--replicas must not be negative")
    return args


@dataclass
class Run:
    """One leader kill and what followed, seconds after the kill unless said otherwise."""

    run: int
    killed: str
    new_leader: str = ""
    via: str = ""
    wall0: float = 0.0  # the kill, wall clock (to place the daemons' log events)
    seconds: float | None = None  # the figure: every new task placed
    create_call: float | None = None  # CreateService returned (after retries)
    create_attempts: int = 0
    running: float | None = None  # every new task running (API poll)
    marks: dict[str, float] = field(default_factory=dict)  # from the new leader's log
    restarted_tasks: int = 0  # tasks of the first service no longer running, or new
    nodes_down: int = 0
    new_tasks_replaced: int = 0
    error: str = ""

    @property
    def restarts(self) -> int:
        return self.restarted_tasks + self.new_tasks_replaced


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.etcd: EtcdCluster | None = None
        self.managers: list[Manager] = []
        self.agents: Agent | None = None
        self.runs: list[Run] = []
        self.steady = ""
        self.steady_ids: set[str] = set()
        self.loadavg_start = list(os.getloadavg())

    # -- set-up and tear-down --

    def manager_id(self, m: Manager) -> str:
        return (m.state_dir / "manager_id").read_text().strip()

    def setup(self) -> None:
        a = self.args
        if shutil.which("etcd") is None:
            raise BenchError("no `etcd` binary on PATH (Debian: apt-get install etcd-server)")
        extra = [] if a.leader_ttl is None else ["--leader-ttl", str(a.leader_ttl)]
        print("starting a 3-member etcd cluster ...", flush=True)
        self.etcd = EtcdCluster(3)
        if a.etcd_election_ms is not None:
            for member in self.etcd.members.values():
                member.args += [
                    "--election-timeout", str(a.etcd_election_ms),
                    "--heartbeat-interval", str(max(10, a.etcd_election_ms // 10)),
                ]  # fmt: skip
        self.etcd.start()
        print("starting 3 managers ...", flush=True)
        first = Manager(etcd=self.etcd.endpoints, extra=extra)
        self.managers.append(first)
        first.start()
        token = first.join_token("manager")
        for _ in range(2):
            m = Manager(etcd=self.etcd.endpoints, extra=[*extra, "--join-token", token])
            self.managers.append(m)
            m.start()
        print(f"starting a farm of {a.nodes} hollow agents ...", flush=True)
        hollow = ["--executor", "hollow", "--count", str(a.nodes),
                  "--hollow-prepare", "10ms", "--hollow-start", "10ms"]  # fmt: skip
        self.agents = Agent(
            [first.addr], "unix:///nonexistent", join_token=first.join_token(), extra=hollow
        ).start()
        wait_until(lambda: self.ready_workers(first) == a.nodes, 120, what=f"{a.nodes} ready nodes")
        wait_until(lambda: self.reachable(first) == 3, 30, what="3 reachable managers")
        if a.replicas:
            print(f"creating a service of {a.replicas} tasks ...", flush=True)
            service = self.create(first, "steady", a.replicas)
            wait_until(
                lambda: len(first.running_tasks(service)) == a.replicas,
                60,
                what=f"{a.replicas} running tasks",
            )
            self.steady = service
            self.steady_ids = {t.id for t in first.running_tasks(service)}

    def teardown(self) -> None:
        if self.agents is not None:
            with contextlib.suppress(Exception):
                self.agents.cleanup(None)
        for m in self.managers:
            with contextlib.suppress(Exception):
                m.stop(signal.SIGKILL)
        if self.etcd is not None:
            with contextlib.suppress(Exception):
                self.etcd.cleanup()

    def keep_logs(self) -> Path:
        """Copy the daemons' logs beside the JSON (the state dirs go with the teardown)."""
        folder: Path = self.args.output.parent / f"{self.args.output.stem}-logs"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        for m in self.managers:
            with contextlib.suppress(OSError):
                shutil.copy(m.process.log_path, folder / f"manager-{self.manager_id(m)[:8]}.log")
        if self.agents is not None:
            with contextlib.suppress(OSError):
                shutil.copy(self.agents.process.log_path, folder / "agents.log")
        return folder

    def remove_state(self) -> None:
        for m in self.managers:
            shutil.rmtree(m.state_dir, ignore_errors=True)
        if self.agents is not None:
            shutil.rmtree(self.agents.state_dir, ignore_errors=True)

    # -- reading the cluster --

    def ready_workers(self, m: Manager) -> int:
        return sum(1 for n in m.nodes() if n.status.state == types_pb2.NODE_STATE_READY)

    def reachable(self, m: Manager) -> int:
        return sum(
            1
            for n in m.nodes(managers=True)
            if n.role == types_pb2.NODE_ROLE_MANAGER
            and n.manager_status.reachability == 2  # REACHABILITY_REACHABLE
        )

    def leader(self) -> Manager:
        def find() -> Manager | None:
            for m in self.managers:
                if not m.process.running:
                    continue
                me = self.manager_id(m)
                for n in m.nodes(managers=True):
                    if n.id == me and n.manager_status.leader:
                        return m
            return None

        found = wait_until(find, 30, what="a leader")
        assert found is not None
        return found

    def create(self, m: Manager, name: str, replicas: int) -> str:
        spec = specs_pb2.ServiceSpec()
        spec.annotations.name = name
        spec.task.container.image = IMAGE
        spec.replicated.replicas = replicas
        response = m.api().CreateService(control_pb2.CreateServiceRequest(spec=spec), timeout=10)
        return str(response.service.id)

    # -- one run --

    def run_once(self, k: int) -> Run:
        a = self.args
        old = self.leader()
        survivor = next(m for m in self.managers if m is not old and m.process.running)
        run = Run(k, killed=self.manager_id(old), via=self.manager_id(survivor))
        spec = specs_pb2.ServiceSpec()
        spec.annotations.name = f"after-kill-{k}"
        spec.task.container.image = IMAGE
        spec.replicated.replicas = a.new_replicas
        request = control_pb2.CreateServiceRequest(spec=spec)
        api = survivor.api()
        assert old.process.proc is not None
        poll = a.poll_ms / 1000

        # The kill, then at once the create, retried while the manager cannot serve it.
        run.wall0 = time.time()
        t0 = time.monotonic()
        old.process.proc.send_signal(signal.SIGKILL)
        service_id = ""
        while not service_id:
            run.create_attempts += 1
            try:
                service_id = api.CreateService(request, timeout=5).service.id
            except grpc.RpcError as err:
                if err.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                ):
                    raise
                if time.monotonic() - t0 > a.timeout:
                    raise BenchError(f"CreateService still refused: {err.details()}") from err
                time.sleep(0.02)
        run.create_call = time.monotonic() - t0
        old.stop(signal.SIGKILL)  # reap it

        filters = control_pb2.ListTasksRequest.Filters(service_ids=[service_id])
        listing = control_pb2.ListTasksRequest(filters=filters)
        placed_ids: set[str] = set()
        while run.running is None:
            elapsed = time.monotonic() - t0
            if elapsed > a.timeout:
                raise BenchError(
                    f"run {k}: the new service's tasks were not all placed within {a.timeout}s"
                )
            try:
                tasks = [
                    t
                    for t in api.ListTasks(listing, timeout=5).tasks
                    if t.desired_state == states.RUNNING
                ]
            except grpc.RpcError:
                time.sleep(poll)
                continue
            if run.seconds is None and (
                len(tasks) == a.new_replicas
                and all(t.status.state >= states.ASSIGNED for t in tasks)
            ):
                run.seconds = elapsed
                placed_ids = {t.id for t in tasks}
            if len(tasks) == a.new_replicas and all(
                t.status.state == states.RUNNING for t in tasks
            ):
                run.running = elapsed
            time.sleep(poll)

        # Nothing restarted: wait out the failover grace, then compare.
        time.sleep(max(0.0, a.settle - (time.monotonic() - t0)))
        new = self.leader()
        run.new_leader = self.manager_id(new)
        if self.steady_ids:
            now_running = {t.id for t in survivor.running_tasks(self.steady)}
            run.restarted_tasks = len(self.steady_ids ^ now_running)
        run.nodes_down = sum(
            1 for n in survivor.nodes() if n.status.state != types_pb2.NODE_STATE_READY
        )
        running_new = {t.id for t in survivor.running_tasks(service_id)}
        run.new_tasks_replaced = len(placed_ids - running_new)
        run.marks = self.log_marks(new, run.wall0)

        # Back to three managers, and the new service gone again.
        old.process.start()
        old.wait_ready(60)
        wait_until(lambda: self.reachable(survivor) == 3, 30, what="the killed manager back")
        api.RemoveService(control_pb2.RemoveServiceRequest(service_id=service_id), timeout=10)
        return run

    def log_marks(self, leader: Manager, wall0: float) -> dict[str, float]:
        """When the new leader was elected, created the tasks and placed them (its log)."""
        marks: dict[str, float] = {}
        created = placed = 0
        for e in read_events(leader.process.log_path):
            t = e["_t"] - wall0
            if t < 0 or t > self.args.timeout:
                continue
            event, component = e.get("event"), e.get("component")
            if event == "became the leader" and "elected" not in marks:
                marks["elected"] = t
            elif event == "reconciled" and component == "orchestrator" and "elected" in marks:
                created += int(e.get("created") or 0)
                marks.setdefault("orchestrator_first_pass", t)
                if created >= self.args.new_replicas:
                    marks.setdefault("tasks_created", t)
            elif event == "scheduled" and component == "scheduler" and "elected" in marks:
                placed += int(e.get("placed") or 0)
                if placed >= self.args.new_replicas:
                    marks.setdefault("tasks_placed", t)
        return marks

    def measure(self) -> None:
        for k in range(1, self.args.runs + 1):
            run = self.run_once(k)
            self.runs.append(run)
            verdict = "ok" if run.restarts == 0 and run.nodes_down == 0 else "RESTARTS"
            marks = ", ".join(f"{key} {v:.3f}" for key, v in run.marks.items())
            print(
                f"  run {k}: killed {run.killed[:8]}, new leader {run.new_leader[:8]}: placed "
                f"in {run.seconds:.3f} s (create returned {run.create_call:.3f} s, "
                f"{run.create_attempts} attempt(s)); {marks}; restarts {run.restarts}, "
                f"nodes down {run.nodes_down}: {verdict}",
                flush=True,
            )

    # -- results --

    def summary(self) -> dict[str, Any]:
        values = [r.seconds for r in self.runs if r.seconds is not None]
        restarts = sum(r.restarts for r in self.runs)
        down = sum(r.nodes_down for r in self.runs)
        med = statistics.median(values)
        breakdown: dict[str, float] = {}
        for key in ("create_call", "elected", "orchestrator_first_pass", "tasks_created",
                    "tasks_placed", "seconds", "running"):  # fmt: skip
            found = [v for v in (self.metric(r, key) for r in self.runs) if v is not None]
            if found:
                breakdown[key] = statistics.median(found)
        return {
            "median": med,
            "min": min(values),
            "max": max(values),
            "runs": values,
            "target_seconds": TARGET_SECONDS,
            "met": med <= TARGET_SECONDS,
            "restarts": restarts,
            "nodes_down": down,
            "no_restarts_met": restarts == 0 and down == 0,
            "breakdown_median": breakdown,
        }

    @staticmethod
    def metric(run: Run, key: str) -> float | None:
        if key in ("create_call", "seconds", "running"):
            value: float | None = getattr(run, key)
            return value
        return run.marks.get(key)

    def print_report(self, s: dict[str, Any]) -> None:
        a = self.args
        ttl = f"{a.leader_ttl} s" if a.leader_ttl is not None else "default (2 s)"
        if a.etcd_election_ms is not None:
            ttl += f", etcd election timeout {a.etcd_election_ms} ms"
        print()
        print(
            f"Failover: kill -9 the leader -> a new service's {a.new_replicas} tasks placed; "
            f"{a.runs} run(s), 3 managers, 3 etcd members, {a.nodes} hollow nodes, "
            f"{a.replicas} tasks running throughout, leader lease TTL {ttl}"
        )
        print(
            f"  median {s['median']:.3f} s [min {s['min']:.3f} - max {s['max']:.3f}]"
            f"  runs: {', '.join(f'{v:.3f}' for v in s['runs'])}"
        )
        print()
        print("where the time goes, median seconds after the kill")
        labels = {
            "create_call": "CreateService returned (on a surviving manager)",
            "elected": "new leader elected (its log)",
            "orchestrator_first_pass": "orchestrator's first pass as leader (its log)",
            "tasks_created": "orchestrator created the new tasks (its log)",
            "tasks_placed": "scheduler placed them (its log)",
            "seconds": "API: all placed (poll) = the figure",
            "running": "API: all running (poll)",
        }
        for key, label in labels.items():
            if key in s["breakdown_median"]:
                print(f"  {label:<52} {s['breakdown_median'][key]:7.3f}")
        print()
        verdict = "met" if s["met"] else "MISSED"
        print(
            f"target: placed <= {TARGET_SECONDS:.1f} s after the kill (median): "
            f"{s['median']:.3f} s -> {verdict}"
        )
        verdict = "met" if s["no_restarts_met"] else "MISSED"
        print(
            f"target: zero task restarts caused by the failover: {s['restarts']} restart(s), "
            f"{s['nodes_down']} node(s) declared down -> {verdict}"
        )

    def write_json(self, s: dict[str, Any], started: datetime.datetime) -> Path:
        a = self.args
        data = {
            "benchmark": "failover",
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(self.loadavg_start),
            "swarmlet_commit": git_commit(),
            "settings": {
                "runs": a.runs,
                "nodes": a.nodes,
                "replicas": a.replicas,
                "new_replicas": a.new_replicas,
                "leader_ttl": a.leader_ttl,
                "etcd_election_ms": a.etcd_election_ms,
                "poll_ms": a.poll_ms,
                "settle_s": a.settle,
            },
            "summary": s,
            "runs": [{**asdict(r), "restarts": r.restarts} for r in self.runs],
        }
        a.output.parent.mkdir(parents=True, exist_ok=True)
        output: Path = a.output
        output.write_text(json.dumps(data, indent=2) + "\n")
        return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    bench = Bench(args)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"note: the load average is {load:.2f} before starting; other work on this machine "
            "shows in the figures"
        )
    try:
        bench.setup()
        print(f"{args.runs} run(s):", flush=True)
        bench.measure()
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        _cleanup(bench)
        return 130
    except (BenchError, AssertionError, grpc.RpcError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        _cleanup(bench)
        return 1
    except BaseException:
        _cleanup(bench)
        raise
    _cleanup(bench)
    summary = bench.summary()
    bench.print_report(summary)
    path = bench.write_json(summary, started)
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    print(f"\nper-run figures: {path}")
    return 0


def _cleanup(bench: Bench) -> None:
    """Stop everything and keep the logs; a second Ctrl-C does not cut it short."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        bench.teardown()
        with contextlib.suppress(Exception):
            bench.keep_logs()
        bench.remove_state()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
