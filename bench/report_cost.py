"""What one task status report costs the manager: as an UpdateTaskStatus call, and as a
message on the session's Heartbeats stream (what agents send).

    python -m bench.report_cost [--sessions 50] [--reports 5000] [--rounds 3]

A manager with its embedded etcd; S worker nodes joined with the token (their
certificates issued by the manager's CA) open real sessions over TLS. Per round, R
reports go to the manager the one way and then the other, spread over the S sessions
and many in flight at once, as a busy cluster's agents send them; the figure is the
manager process's CPU time (from /proc) per report. Each report names a task that is
not there, so the manager takes it and drops it: what is measured is the transport
and the dispatcher's handling, not the etcd write that follows for a real task (the
same either way). This is the per-task cost at scale: a cluster of thousands of nodes
starting tasks sends about one report per task (0.78 at 500 nodes / 15,000 tasks).

Prints the medians over the rounds and the ratio, and writes bench/results/report_cost.json.
Everything it starts is stopped on exit, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import queue
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench.common import RESULTS, STOP_SIGNALS, BenchError, git_commit, machine, raise_interrupt
from common import states
from common.api import dispatcher_pb2, dispatcher_pb2_grpc, objects_pb2
from tests.harness import Manager

_TICK = os.sysconf("SC_CLK_TCK")
# Sessions must outlive a round without heartbeats of their own.
HEARTBEAT = "60s"
# Unary calls in flight at once (across the sessions).
IN_FLIGHT = 500


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.report_cost",
        description="Manager CPU per task status report: UpdateTaskStatus calls vs "
        "messages on the Heartbeats stream.",
    )
    p.add_argument("--sessions", type=int, default=50, help="worker sessions (50)")
    p.add_argument("--reports", type=int, default=5000, help="reports per way and round (5000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    p.add_argument(
        "--output", type=Path, default=RESULTS / "report_cost.json", help="where the JSON goes"
    )
    args = p.parse_args(argv)
    if args.sessions < 1 or args.reports < args.sessions or args.rounds < 1:
        p.error("need --sessions >= 1, --reports >= --sessions and --rounds >= 1")
    return args


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class Node:
    """One worker's channel and session."""

    def __init__(self, manager: Manager, index: int) -> None:
        worker = manager.join_worker()
        self.channel = worker.channel(manager.addr)
        self.stub = dispatcher_pb2_grpc.DispatcherStub(self.channel)
        request = dispatcher_pb2.SessionRequest(node_id=worker.node_id)
        request.description.hostname = f"report-cost-{index}"
        self.session = self.stub.Session(request, timeout=3600)
        self.session_id = next(self.session).session_id

    def close(self) -> None:
        self.session.cancel()
        self.channel.close()


def _report() -> objects_pb2.TaskStatus:
    status = objects_pb2.TaskStatus(state=states.RUNNING, message="started")
    status.timestamp.GetCurrentTime()
    return status


def by_calls(nodes: list[Node], reports: int) -> None:
    status = _report()
    pending: list[Any] = []
    for i in range(reports):
        node = nodes[i % len(nodes)]
        request = dispatcher_pb2.UpdateTaskStatusRequest(session_id=node.session_id)
        request.updates.add(task_id=f"gone-{i}", status=status)
        pending.append(node.stub.UpdateTaskStatus.future(request, timeout=60))
        if len(pending) >= IN_FLIGHT:
            for f in pending:
                f.result()
            pending.clear()
    for f in pending:
        f.result()


def by_stream(nodes: list[Node], reports: int) -> None:
    status = _report()
    streams = []
    for node in nodes:
        requests: queue.Queue[dispatcher_pb2.HeartbeatRequest | None] = queue.Queue()
        answers = node.stub.Heartbeats(iter(requests.get, None), timeout=3600)
        streams.append((node, requests, answers))
    for i in range(reports):
        node, requests, _ = streams[i % len(streams)]
        request = dispatcher_pb2.HeartbeatRequest(session_id=node.session_id)
        request.updates.add(task_id=f"gone-{i}", status=status)
        requests.put(request)
    # A heartbeat after the reports on each stream: its answer says they were all read.
    for node, requests, _ in streams:
        requests.put(dispatcher_pb2.HeartbeatRequest(session_id=node.session_id))
    for _, requests, answers in streams:
        next(answers)
        requests.put(None)


def measure(pid: int, way: Callable[[list[Node], int], None], nodes: list[Node], n: int) -> float:
    """Manager CPU microseconds per report."""
    time.sleep(1.0)  # let what came before settle
    before = cpu_seconds(pid)
    way(nodes, n)
    time.sleep(0.5)  # the last reports' handling
    return (cpu_seconds(pid) - before) / n * 1e6


def run(args: argparse.Namespace) -> list[dict[str, float]]:
    """The rounds' figures; everything started is stopped again."""
    manager: Manager | None = None
    nodes: list[Node] = []
    rounds: list[dict[str, float]] = []
    try:
        print(f"starting a manager and {args.sessions} worker sessions ...", flush=True)
        manager = Manager(heartbeat=HEARTBEAT).start()
        assert manager.process.proc is not None
        pid = manager.process.proc.pid
        nodes = [Node(manager, i) for i in range(args.sessions)]
        for r in range(args.rounds):
            calls = measure(pid, by_calls, nodes, args.reports)
            stream = measure(pid, by_stream, nodes, args.reports)
            rounds.append({"calls_us": calls, "stream_us": stream})
            print(f"round {r + 1}/{args.rounds}: UpdateTaskStatus call {calls:.0f} us, "
                  f"Heartbeats stream message {stream:.0f} us", flush=True)  # fmt: skip
    except grpc.RpcError as exc:
        raise BenchError(f"a call failed: {exc.code().name}: {exc.details()}") from None
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        for node in nodes:
            node.close()
        if manager is not None:
            manager.cleanup()
    return rounds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_interrupt)
    started = datetime.datetime.now(datetime.UTC)
    load = list(os.getloadavg())
    try:
        rounds = run(args)
    except BenchError as exc:
        print(f"report_cost: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    calls = statistics.median(r["calls_us"] for r in rounds)
    stream = statistics.median(r["stream_us"] for r in rounds)
    print(f"\nmanager CPU per status report, median of {len(rounds)} round(s) of "
          f"{args.reports} reports over {args.sessions} sessions:")  # fmt: skip
    print(f"  as an UpdateTaskStatus call          {calls:6.0f} us")
    print(f"  as a message on the Heartbeats stream {stream:5.0f} us   ({stream / calls:.2f}x)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "report_cost",
                "started": started.isoformat(),
                "swarmlet_commit": git_commit(),
                "machine": machine(load),
                "settings": {"sessions": args.sessions, "reports": args.reports},
                "rounds": rounds,
                "calls_us": calls,
                "stream_us": stream,
            },
            indent=2,
        )
    )
    print(f"\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
