"""Scheduler benchmark: placement decisions per second for 10,000 pending tasks onto
500, 1,000 and 5,000 hollow nodes (node objects only: no agents, no containers).

    python -m bench.scheduler [--quick] [--tasks 10000] [--nodes 500,1000,5000]

(a) In memory: the real placement code, `schedule_group` with a Pipeline of the
    default filters over NodeInfos, for the tasks of 10 services of 1,000 replicas,
    as one scheduler pass places them; three variants (`spread`, `reservations`,
    `constraint`: bench/scheduler_workload.py). Decisions per second, median of runs.
(b) With the etcd commits: a real etcd (EmbeddedEtcd in a temporary directory), a real
    Store and Cache, the nodes and pending tasks written first (not timed), then the
    real Scheduler loop started as the manager starts it, timed until the cache has
    seen every task ASSIGNED through its watch (bench/scheduler_etcd.py). Placements
    committed per second, median of runs.

Node counts are interleaved round by round so drift on a busy machine hits them alike;
in (a) the node counts of one variant run back to back.
A table and the targets (>= 20,000 decisions/s in memory at 5,000 nodes, >= 3,750
placements/s committed, 5,000 nodes >= 0.8x 500 nodes for both) are printed, and
everything is written to bench/results/scheduler.json. A missed target is a result,
not an error: the exit status is 0 unless the benchmark could not run (1) or was
interrupted (130). The etcd and the temporary directory are removed on exit, also after
an error, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from google.protobuf.internal import api_implementation

from bench.common import RESULTS, BenchError, git_commit, machine, raise_interrupt
from bench.scheduler_etcd import CommittedBench, EtcdSample
from bench.scheduler_workload import (
    ALL_VARIANTS,
    VARIANTS,
    MemorySample,
    Workload,
    hollow_nodes,
    place_in_memory,
    workload,
)
from common.log import setup_logging

TARGET_MEMORY_RATE = 20_000.0
TARGET_COMMITTED_RATE = 3_750.0
TARGET_SCALING = 0.8
TARGET_NODES = 5_000
DEFAULT_NODES = "500,1000,5000"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scheduler",
        description="Placement decisions per second of swarmlet's scheduler for pending tasks "
        "onto hollow nodes, in memory and committed to a real etcd.",
    )
    p.add_argument("--tasks", type=int, default=10_000, help="pending tasks (10000)")
    p.add_argument("--services", type=int, default=10, help="services sharing them (10)")
    p.add_argument(
        "--nodes", default=DEFAULT_NODES, metavar="N,N", help=f"node counts ({DEFAULT_NODES})"
    )
    p.add_argument("--runs", type=int, default=11, help="timed in-memory runs per case (11)")
    p.add_argument("--etcd-runs", type=int, default=5, help="timed runs with etcd per case (5)")
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"in-memory workload variants, of {','.join(ALL_VARIANTS)} ({','.join(VARIANTS)})",
    )
    p.add_argument(
        "--etcd-variants", default="spread", help="workload variants run with etcd (spread)"
    )
    p.add_argument("--no-etcd", action="store_true", help="only the in-memory part")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke check: --nodes 500,5000 --runs 5 --etcd-runs 2",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="per etcd run, seconds (120)")
    p.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "scheduler.json",
        help="JSON results (bench/results/scheduler.json)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.runs = min(args.runs, 5)
        args.etcd_runs = min(args.etcd_runs, 2)
        if args.nodes == DEFAULT_NODES:
            args.nodes = "500,5000"
    try:
        args.nodes = sorted({int(n) for n in str(args.nodes).split(",") if n.strip()})
    except ValueError:
        p.error(f"--nodes: not a list of numbers: {args.nodes!r}")
    if not args.nodes or args.nodes[0] < 1:
        p.error("--nodes: give positive numbers")
    if args.tasks < 1 or args.services < 1:
        p.error("--tasks and --services must be at least 1")
    if args.runs < 1 or args.etcd_runs < 1:
        p.error("--runs and --etcd-runs must be at least 1")
    for name in ("variants", "etcd_variants"):
        chosen = [v.strip() for v in getattr(args, name).split(",") if v.strip()]
        unknown = sorted(set(chosen) - set(ALL_VARIANTS))
        if unknown or not chosen:
            p.error(f"--{name.replace('_', '-')}: choose from {', '.join(ALL_VARIANTS)}")
        setattr(args, name, [v for v in ALL_VARIANTS if v in chosen])
    return args


def etcd_version() -> str:
    try:
        out = subprocess.run(
            ["etcd", "--version"], check=False, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.splitlines()[0] if out.stdout else ""


def spread(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": list(values),
    }


def rotated(items: list[int], by: int) -> list[int]:
    k = by % len(items)
    return items[k:] + items[:k]


def say(text: str) -> None:
    print(text, flush=True)


class Benchmark:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.memory: list[MemorySample] = []
        self.committed: list[EtcdSample] = []
        self.loadavg_start = list(os.getloadavg())

    # -- (a) in memory --

    def measure_memory(self) -> None:
        a = self.args
        say(f"(a) in memory: {len(a.variants)} variant(s) x {len(a.nodes)} node count(s)")
        nodes = {n: hollow_nodes(n) for n in a.nodes}
        works: dict[str, Workload] = {v: workload(v, a.tasks, a.services) for v in a.variants}
        for work in works.values():  # warm-up, not timed
            self.memory.append(place_in_memory(nodes[a.nodes[0]], work, timed=False))
        for r in range(a.runs):
            line = []
            # The node counts of one variant run back to back (a pass takes tens of
            # milliseconds), so that the ratio between them compares runs made in the
            # same state of this machine, whose speed drifts.
            for variant, work in works.items():
                for n in rotated(a.nodes, r):
                    sample = place_in_memory(nodes[n], work)
                    self.memory.append(sample)
                    line.append(f"{variant}@{n} {sample.rate:,.0f}")
            say(f"  round {r + 1}/{a.runs}: " + ", ".join(line) + " decisions/s")

    # -- (b) with etcd --

    async def measure_committed(self) -> None:
        a = self.args
        bench = CommittedBench(self.workdir, a.timeout)
        say(f"(b) with etcd: starting an embedded etcd in {self.workdir}")
        try:
            await bench.start()
            first = a.etcd_variants[0]
            warm = await bench.run(first, a.nodes[0], a.tasks, a.services, timed=False)
            self.committed.append(warm)
            say(f"  warm-up: {first}@{a.nodes[0]} {warm.rate:,.0f} placements/s (not timed)")
            for r in range(a.etcd_runs):
                line = []
                for n in rotated(a.nodes, r):
                    for variant in a.etcd_variants:
                        sample = await bench.run(variant, n, a.tasks, a.services)
                        self.committed.append(sample)
                        line.append(f"{variant}@{n} {sample.rate:,.0f}")
                say(f"  round {r + 1}/{a.etcd_runs}: " + ", ".join(line) + " placements/s")
        finally:
            await bench.stop()

    # -- results --

    def memory_rows(self) -> list[dict[str, Any]]:
        rows = []
        for variant in self.args.variants:
            for n in self.args.nodes:
                samples = [
                    s for s in self.memory if s.timed and s.variant == variant and s.nodes == n
                ]
                last = samples[-1]
                rows.append(
                    {
                        "variant": variant,
                        "nodes": n,
                        "tasks": last.tasks,
                        "decisions_per_s": spread([s.rate for s in samples]),
                        "seconds": spread([s.seconds for s in samples]),
                        "cpu_ms": spread([s.cpu_seconds * 1000 for s in samples]),
                        "placed": last.placed,
                        "unplaced": last.unplaced,
                        "tasks_per_node": [last.per_node_min, last.per_node_max],
                        "nodes_used": last.nodes_used,
                        "overcommitted_nodes": max(s.overcommitted for s in samples),
                        "explanations": last.explanations,
                    }
                )
        return rows

    def committed_rows(self) -> list[dict[str, Any]]:
        rows = []
        for variant in self.args.etcd_variants:
            for n in self.args.nodes:
                samples = [
                    s for s in self.committed if s.timed and s.variant == variant and s.nodes == n
                ]
                if not samples:
                    continue
                last = samples[-1]

                def med(get: Callable[[EtcdSample], float], of: list[EtcdSample]) -> float:
                    return statistics.median(get(s) for s in of)

                rows.append(
                    {
                        "variant": variant,
                        "nodes": n,
                        "tasks": last.tasks,
                        "placements_per_s": spread([s.rate for s in samples]),
                        "seconds": spread([s.seconds for s in samples]),
                        "first_seen_s": med(lambda s: s.first_seen, samples),
                        "placement_s": med(lambda s: s.placement, samples),
                        "passes": med(lambda s: s.passes, samples),
                        "txns": med(lambda s: s.txns, samples),
                        "placed": last.placed,
                        "unplaced": last.unplaced,
                        "tasks_per_node": [last.per_node_min, last.per_node_max],
                        "write_s": med(lambda s: s.write_seconds, samples),
                        "list_s": med(lambda s: s.list_seconds, samples),
                    }
                )
        return rows

    def targets(
        self, memory: list[dict[str, Any]], committed: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        lo, hi = self.args.nodes[0], self.args.nodes[-1]
        out: list[dict[str, Any]] = []

        def rate(rows: list[dict[str, Any]], key: str, variant: str, n: int) -> float:
            row = next(r for r in rows if r["variant"] == variant and r["nodes"] == n)
            value: float = row[key]["median"]
            return value

        for variant in self.args.variants:
            value = rate(memory, "decisions_per_s", variant, hi)
            out.append(
                {
                    "name": f"(a) in memory, {variant}: decisions/s at {hi:,} nodes",
                    "value": value,
                    "target": f">= {TARGET_MEMORY_RATE:,.0f}",
                    "met": value >= TARGET_MEMORY_RATE,
                }
            )
        if lo != hi:
            for variant in self.args.variants:
                ratio = rate(memory, "decisions_per_s", variant, hi) / rate(
                    memory, "decisions_per_s", variant, lo
                )
                out.append(
                    {
                        "name": f"(a) in memory, {variant}: {hi:,} nodes / {lo:,} nodes",
                        "value": ratio,
                        "target": f">= {TARGET_SCALING}x",
                        "met": ratio >= TARGET_SCALING,
                    }
                )
        for variant in sorted({r["variant"] for r in committed}, key=ALL_VARIANTS.index):
            for n in self.args.nodes:
                value = rate(committed, "placements_per_s", variant, n)
                out.append(
                    {
                        "name": f"(b) with etcd, {variant}: placements/s at {n:,} nodes",
                        "value": value,
                        "target": f">= {TARGET_COMMITTED_RATE:,.0f}",
                        "met": value >= TARGET_COMMITTED_RATE,
                    }
                )
            if lo != hi:
                ratio = rate(committed, "placements_per_s", variant, hi) / rate(
                    committed, "placements_per_s", variant, lo
                )
                out.append(
                    {
                        "name": f"(b) with etcd, {variant}: {hi:,} nodes / {lo:,} nodes",
                        "value": ratio,
                        "target": f">= {TARGET_SCALING}x",
                        "met": ratio >= TARGET_SCALING,
                    }
                )
        return out

    def print_report(
        self,
        memory: list[dict[str, Any]],
        committed: list[dict[str, Any]],
        targets: list[dict[str, Any]],
    ) -> None:
        a = self.args
        per = a.tasks // a.services
        say("")
        say(
            f"Scheduler: {a.tasks:,} pending tasks ({a.services} services x ~{per:,} replicas) "
            "onto hollow nodes"
        )
        say("")
        say(
            f"(a) in memory: schedule_group, default filters, over NodeInfos; decisions/s, "
            f"median of {a.runs} [min-max]"
        )
        cols = "".join(f"  {f'{n:,} nodes':>26}" for n in a.nodes)
        ratio_col = f"  {f'{a.nodes[-1]}/{a.nodes[0]}':>10}" if len(a.nodes) > 1 else ""
        say(f"  {'variant':<13}{cols}{ratio_col}")
        for variant in a.variants:
            rows = [r for r in memory if r["variant"] == variant]
            line = f"  {variant:<13}"
            for r in rows:
                d = r["decisions_per_s"]
                cell = f"{d['median']:,.0f} [{d['min']:,.0f}-{d['max']:,.0f}]"
                line += f"  {cell:>26}"
            if len(rows) > 1:
                ratio = rows[-1]["decisions_per_s"]["median"] / rows[0]["decisions_per_s"]["median"]
                line += f"  {f'{ratio:.2f}x':>10}"
            say(line)
        # Wall-clock medians move with whatever else runs on the machine; the best CPU
        # time of a pass much less: the figure to compare commits by (side by side).
        say(f"  CPU time of a pass, ms, best of {a.runs} (median)")
        for variant in a.variants:
            rows = [r for r in memory if r["variant"] == variant]
            line = f"  {variant:<13}"
            for r in rows:
                c = r["cpu_ms"]
                cell = f"{c['min']:.1f} ({c['median']:.1f})"
                line += f"  {cell:>26}"
            say(line)
        notes = [
            f"{r['variant']}@{r['nodes']}: {r['unplaced']} unplaced ({r['explanations'][0]})"
            for r in memory
            if r["unplaced"]
        ]
        notes += [
            f"{r['variant']}@{r['nodes']}: {r['overcommitted_nodes']} node(s) OVERCOMMITTED"
            for r in memory
            if r["overcommitted_nodes"]
        ]
        for note in notes:
            say(f"  note: {note}")
        if committed:
            say("")
            say(
                "(b) with etcd: Scheduler.run() on a real etcd until the cache has seen every "
                f"task ASSIGNED; median of {a.etcd_runs}"
            )
            say(
                f"  {'variant':<13}{'nodes':>7}  {'placements/s [min-max]':>26}  {'seconds':>8}"
                f"  {'placing':>8}  {'1st seen':>8}  {'txns':>5}  {'tasks/node':>10}"
            )
            for r in committed:
                p = r["placements_per_s"]
                cell = f"{p['median']:,.0f} [{p['min']:,.0f}-{p['max']:,.0f}]"
                per_node = "-".join(str(x) for x in r["tasks_per_node"])
                say(
                    f"  {r['variant']:<13}{r['nodes']:>7,}  {cell:>26}"
                    f"  {r['seconds']['median']:8.3f}  {r['placement_s']:8.3f}"
                    f"  {r['first_seen_s']:8.3f}  {r['txns']:>5.0f}  {per_node:>10}"
                )
            say(
                "  seconds: scheduler started -> all seen ASSIGNED; placing: inside "
                "schedule_group; 1st seen: the first ASSIGNED seen through the watch"
            )
        say("")
        say("targets:")
        for t in targets:
            value = f"{t['value']:.3f}x" if "x" in t["target"] else f"{t['value']:,.0f}"
            verdict = "met" if t["met"] else "MISSED"
            say(f"  {t['name']}: {value} (target {t['target']}) -> {verdict}")
        if a.nodes[-1] != TARGET_NODES:
            say(
                f"  (the targets are set at {TARGET_NODES:,} nodes; this run's largest is "
                f"{a.nodes[-1]:,})"
            )

    def write_json(
        self,
        memory: list[dict[str, Any]],
        committed: list[dict[str, Any]],
        targets: list[dict[str, Any]],
        started: datetime.datetime,
    ) -> Path:
        a = self.args
        data = {
            "benchmark": "scheduler",
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(
                self.loadavg_start, protobuf=api_implementation.Type(), etcd=etcd_version()
            ),
            "swarmlet_commit": git_commit(),
            "settings": {
                "tasks": a.tasks,
                "services": a.services,
                "nodes": a.nodes,
                "runs": a.runs,
                "etcd_runs": 0 if a.no_etcd else a.etcd_runs,
                "variants": a.variants,
                "etcd_variants": [] if a.no_etcd else a.etcd_variants,
            },
            "targets": targets,
            "memory": memory,
            "committed": committed,
            "runs": {
                "memory": [asdict(s) for s in self.memory],
                "committed": [asdict(s) for s in self.committed],
            },
        }
        a.output.parent.mkdir(parents=True, exist_ok=True)
        output: Path = a.output
        output.write_text(json.dumps(data, indent=2) + "\n")
        return output


def _kill_leftover_etcd(workdir: Path) -> None:
    """Stop the benchmark's etcd if it is still running (an interrupted stop), by the
    pid EmbeddedEtcd recorded, after checking the process is that etcd."""
    try:
        pid = int((workdir / "etcd.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if str(workdir).encode() not in cmdline:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        for _ in range(50):
            if not Path(f"/proc/{pid}").exists():
                return
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.UTC)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    # The daemons' info logs (a "scheduled" line per pass) would only get in the way.
    setup_logging("warning")
    if not args.no_etcd and shutil.which("etcd") is None:
        print(
            "error: no `etcd` binary on PATH (Debian: apt-get install etcd-server); "
            "--no-etcd runs only the in-memory part",
            file=sys.stderr,
        )
        return 1
    say(
        f"scheduler benchmark: {args.tasks:,} tasks, {args.services} services, nodes "
        f"{', '.join(f'{n:,}' for n in args.nodes)}; {args.runs} in-memory run(s), "
        f"{0 if args.no_etcd else args.etcd_runs} etcd run(s) per case"
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        say(
            f"note: the load average is {load:.2f} before starting; other work on this "
            "machine shows in the figures"
        )
    workdir = Path(tempfile.mkdtemp(prefix="swl-bench-sched-"))
    bench = Benchmark(args, workdir)
    try:
        bench.measure_memory()
        if not args.no_etcd:
            asyncio.run(bench.measure_committed())
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            _kill_leftover_etcd(workdir)
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    memory = bench.memory_rows()
    committed = bench.committed_rows()
    targets = bench.targets(memory, committed)
    bench.print_report(memory, committed, targets)
    path = bench.write_json(memory, committed, targets, started)
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    say(f"\nper-run figures: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
