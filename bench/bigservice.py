"""One huge service: 100,000 replicas on a few hollow nodes, and `service ps` of it.

    python -m bench.bigservice [--replicas N] [--nodes N] [--timeout S]

(`make bench-bigservice` runs it.) It starts a `swarm-manager` with its embedded etcd
and one hollow agent process of --nodes nodes, creates one service of --replicas
replicas with `swarmctl service create -d`, waits until every task runs (the running
count `service ls` shows), then runs `swarmctl service ps` of it. It reports:

- how long the create call took, and the time to all running;
- the manager's event-loop stalls while it worked, from its
  `swarmlet_event_loop_lag_seconds` histogram (a timer every 250 ms, observed for how
  late it ran): how many went past 100 ms (the target is none), 250 ms, 1 s, and the
  bucket the longest fell in;
- how long `service ps` took and how many rows it printed (it failed past ~14,000
  tasks before the control API's lists were streamed).

Results go to bench/results/bigservice.json. Every process and state dir is removed
on exit, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, STOP_SIGNALS, BenchError, git_commit, machine, raise_interrupt
from bench.scale import proc_stats, scrape, summed
from common.api import control_pb2
from tests.harness import Agent, Manager, free_port, swarmctl, wait_until

IMAGE = "swarmlet/sleeper:latest"  # hollow agents run nothing; any name will do
LAG = "swarmlet_event_loop_lag_seconds"
# Bounds the stalls are counted above (the histogram's buckets).
STALL_BOUNDS = (0.1, 0.25, 1.0)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=100_000, help="replicas (100000)")
    p.add_argument("--nodes", type=int, default=4, help="hollow nodes (4)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to all running (600)")
    p.add_argument(
        "--asyncio-debug",
        action="store_true",
        help="run the manager with PYTHONASYNCIODEBUG=1: asyncio logs each callback that "
        "held the loop over 100 ms, naming it (slower; for finding stalls)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "bigservice.json", help="JSON results")
    return p.parse_args(argv)


def lag_buckets(metrics: dict[str, float]) -> dict[float, float]:
    """Cumulative counts of the lag histogram by upper bound (inf included)."""
    prefix = f'{LAG}_bucket{{le="'
    return {float(k[len(prefix) : -2]): v for k, v in metrics.items() if k.startswith(prefix)}


def stalls(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the lag histogram saw between two scrapes: counts above STALL_BOUNDS, and
    the bucket the longest lag fell in ("<= X s")."""
    b, a = lag_buckets(before), lag_buckets(after)
    seen = {le: a[le] - b.get(le, 0.0) for le in a}
    total = seen.get(float("inf"), 0.0)
    out: dict[str, Any] = {"samples": int(total)}
    for bound in STALL_BOUNDS:
        out[f"over_{int(bound * 1000)}ms"] = int(total - seen.get(bound, 0.0))
    longest = min((le for le, n in seen.items() if n >= total), default=float("inf"))
    out["longest_at_most_s"] = longest if longest != float("inf") else None
    return out


def running(manager: Manager, service: str) -> int:
    parts = manager.api().ListServicesStream(
        control_pb2.ListServicesRequest(
            filters=control_pb2.ListServicesRequest.Filters(names=[service])
        ),
        timeout=30,
    )
    return int(sum(c.running for part in parts for c in part.statuses.values()))


def manager_pid(manager: Manager) -> int:
    assert manager.process.proc is not None
    return manager.process.proc.pid


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"replicas": args.replicas, "nodes": args.nodes}
    metrics_port = free_port()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    manager = Manager(extra=["--metrics-addr", f"127.0.0.1:{metrics_port}"])
    if args.asyncio_debug:
        manager.process.env["PYTHONASYNCIODEBUG"] = "1"
    farm: Agent | None = None
    try:
        print("starting a manager and its etcd ...", flush=True)
        manager.start()
        farm = Agent(
            [manager.addr],
            "unix:///nonexistent",
            join_token=manager.join_token(),
            extra=[
                "--executor",
                "hollow",
                "--count",
                str(args.nodes),
                "--hollow-prepare",
                "10ms",
                "--hollow-start",
                "10ms",
            ],
        ).start()
        wait_until(
            lambda: scrape(url).get('swarmlet_nodes{status="ready"}', 0) >= args.nodes,
            120,
            interval=0.5,
            what=f"{args.nodes} ready nodes",
        )
        before = scrape(url)
        cpu_before = proc_stats(manager_pid(manager))[0]
        print(f"creating a service of {args.replicas} replicas ...", flush=True)
        started = time.monotonic()
        out = swarmctl(
            manager.host, "service", "create", "-d", "--name", "big",
            "--replicas", str(args.replicas), IMAGE, timeout=120,
        )  # fmt: skip
        result["create_seconds"] = round(time.monotonic() - started, 2)
        if out.returncode != 0:
            raise BenchError(f"service create failed: {out.stderr.strip()}")
        last = [0, time.monotonic()]

        def all_running() -> bool:
            count = running(manager, "big")
            if time.monotonic() - last[1] >= 5:
                print(f"  {count} running after {time.monotonic() - started:.0f} s", flush=True)
                last[1] = time.monotonic()
            last[0] = count
            return bool(count >= args.replicas)

        wait_until(all_running, args.timeout, interval=1.0, what="every task running")
        result["all_running_seconds"] = round(time.monotonic() - started, 1)
        after = scrape(url)
        result["manager_cpu_seconds"] = round(proc_stats(manager_pid(manager))[0] - cpu_before, 1)
        result["rss_peak_mib"] = round(proc_stats(manager_pid(manager))[2] / 2**20)
        result["stalls"] = stalls(before, after)
        result["placements"] = int(summed(after, "swarmlet_placements_total"))
        print("service ps ...", flush=True)
        started = time.monotonic()
        ps = swarmctl(manager.host, "service", "ps", "big", timeout=300)
        result["ps_seconds"] = round(time.monotonic() - started, 2)
        result["ps_rows"] = max(0, len(ps.stdout.splitlines()) - 1)
        if ps.returncode != 0:
            result["ps_error"] = ps.stderr.strip()[-500:]
        log = manager.process.log()
        result["manager_log_late_loop_warnings"] = log.count("event loop running late")
        if args.asyncio_debug:
            slow = [line for line in log.splitlines() if "Executing" in line and "took" in line]
            result["slow_callbacks"] = slow[-200:]
            print("\n".join(slow[-60:]))
    finally:
        if farm is not None:
            farm.cleanup(None)
        manager.cleanup()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for sig in STOP_SIGNALS:
        signal.signal(sig, raise_interrupt)
    loadavg = list(__import__("os").getloadavg())
    try:
        result = run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (BenchError, AssertionError) as exc:
        print(f"bigservice: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    result["commit"] = git_commit()
    result["machine"] = machine(loadavg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    s, failed = result["stalls"], result.get("ps_error")
    print(
        f"{args.replicas} replicas on {args.nodes} hollow nodes:"
        f" create {result['create_seconds']} s,"
        f" all running after {result['all_running_seconds']} s; event-loop stalls over 100 ms:"
        f" {s['over_100ms']} (over 250 ms: {s['over_250ms']}, over 1 s: {s['over_1000ms']};"
        f" longest <= {s['longest_at_most_s']} s); service ps: {result['ps_rows']} rows in"
        f" {result['ps_seconds']} s" + (f" FAILED: {failed}" if failed else "")
    )
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
