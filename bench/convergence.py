"""Convergence benchmark: time from create to N tasks running, swarmlet against Docker
Swarm mode and the raw Docker engine, on the same engine with the same image.

    python -m bench.convergence [--runs 5] [--replicas 3,20] [--quick]

(`make bench-convergence` runs it with DOCKER_HOST set and the images built.) For each
N and each run, in rounds that interleave the systems so drift hits them alike:

- swarmlet: CreateService on the control API (gRPC over the manager's unix socket, so
  no swarmctl start-up is counted), then ListTasks every few ms until N tasks are
  RUNNING. One manager (embedded etcd) and one agent serve the whole benchmark.
- swarm: Docker Swarm mode initialised on the engine for the benchmark; the service is
  created through the Docker API (as `docker service create --detach` does, without
  the CLI's start-up and registry digest look-up), then its tasks are listed every
  ~20 ms until N are running. The swarm is left at the end, whatever happens.
- raw: N containers created and started through the Docker API by N threads; done
  when every start call returned and the engine lists N running containers.

Medians, ratios and whether the targets (swarmlet <= 0.65x Docker Swarm, <= 1.15x the
raw engine) are met are printed, and everything, per run, is written as JSON to
bench/results/convergence.json. A missed target is a result, not an error: the exit
status is 0 unless the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import signal
import statistics
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import docker
import docker.errors

from bench.common import RESULTS, STOP_SIGNALS, BenchError, git_commit, machine, raise_interrupt
from bench.systems import (
    BENCH_LABEL,
    BENCH_LABEL_VALUE,
    DockerSwarmSystem,
    RawEngineSystem,
    Sample,
    SwarmletSystem,
    System,
    remove_labelled,
)
from bench.timeline import add_log_marks

DEFAULT_IMAGE = "swarmlet/sleeper:latest"
SYSTEMS = ("swarmlet", "swarm", "raw")
TARGET_VS_SWARM = 0.65
TARGET_VS_RAW = 1.15


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.convergence",
        description="Time from create to N tasks running: swarmlet, Docker Swarm mode and "
        "the raw Docker engine on the engine at $DOCKER_HOST.",
    )
    p.add_argument("--runs", type=int, default=5, help="timed runs per system and N (5)")
    p.add_argument(
        "--replicas", default="3,20", help="comma-separated values of N (3,20)", metavar="N,N"
    )
    p.add_argument("--quick", action="store_true", help="smoke check: --runs 2 --replicas 3")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="which of swarmlet,swarm,raw to run (all three)",
    )
    p.add_argument("--image", default=DEFAULT_IMAGE, help=f"image to run ({DEFAULT_IMAGE})")
    p.add_argument(
        "--output",
        type=Path,
        default=RESULTS / "convergence.json",
        help="JSON results (bench/results/convergence.json)",
    )
    p.add_argument(
        "--poll-ms", type=float, default=5.0, help="swarmlet ListTasks poll interval (5)"
    )
    p.add_argument(
        "--swarm-poll-ms", type=float, default=20.0, help="Docker Swarm task poll interval (20)"
    )
    p.add_argument(
        "--swarm-image-ref",
        choices=("tag", "id"),
        default="tag",
        help="give Docker Swarm the image by tag (as users do; its agent then tries a pull "
        "first) or by id (no pull attempt) (tag)",
    )
    p.add_argument(
        "--swarm-client",
        choices=("api", "cli"),
        default="api",
        help="create Docker Swarm services through the Docker API, like swarmlet through its "
        "API, or with `docker service create --detach` (CLI start-up and registry look-up "
        "included) (api)",
    )
    p.add_argument("--settle", type=float, default=1.0, help="pause between runs, in seconds (1.0)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-run timeout, seconds")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    args = p.parse_args(argv)
    if args.quick:
        args.runs = 2
        args.replicas = "3"
    try:
        args.replicas = [int(n) for n in str(args.replicas).split(",") if n.strip()]
    except ValueError:
        p.error(f"--replicas: not a list of numbers: {args.replicas!r}")
    if not args.replicas or min(args.replicas) < 1:
        p.error("--replicas: give positive numbers")
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown or not args.systems:
        p.error(f"--systems: unknown {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def log_dir(output: Path) -> Path:
    """Where the swarmlet daemons' logs are kept: beside the JSON, named after it."""
    return output.parent / f"{output.stem}-logs"


def median(values: list[float]) -> float:
    return statistics.median(values)


def metric(sample: Sample, key: str) -> float | None:
    """A number of `sample` by name: a field, a phase or a mark."""
    if key in ("seconds", "create_call", "engine_started"):
        value: float | None = getattr(sample, key)
        return value
    return sample.phases.get(key, sample.marks.get(key))


# What the report breaks each system's time into: (label, key for `metric`).
BREAKDOWN: dict[str, list[tuple[str, str]]] = {
    "swarmlet": [
        ("CreateService returned", "create_call"),
        ("orchestrator created the N tasks (tasks' created_at)", "tasks_created"),
        ("scheduler placed the N tasks (manager log)", "log_tasks_placed"),
        ("API: all N assigned (poll)", "assigned"),
        ("agent accepted the first task (agent log)", "log_first_accepted"),
        ("agent accepted the last task (agent log)", "log_last_accepted"),
        ("agent created the last container (agent log)", "log_last_created"),
        ("agent asked the engine to start the last (agent log)", "log_last_starting"),
        ("engine: the last container's StartedAt", "engine_started"),
        ("agent saw the last one running (agent log)", "log_last_running"),
        ("API: all N running (poll) = the figure", "seconds"),
    ],
    "swarm": [
        ("create_service returned", "create_call"),
        ("API: all N pending (poll)", "pending"),
        ("API: all N assigned (poll)", "assigned"),
        ("API: all N accepted (poll)", "accepted"),
        ("API: all N preparing (poll)", "preparing"),
        ("API: all N starting (poll)", "starting"),
        ("engine: the last container's StartedAt", "engine_started"),
        ("API: all N running (poll) = the figure", "seconds"),
    ],
    "raw": [
        ("every create + start call returned", "create_call"),
        ("engine: the last container's StartedAt", "engine_started"),
        ("engine lists N running = the figure", "seconds"),
    ],
}


class Benchmark:
    def __init__(self, args: argparse.Namespace, docker_host: str) -> None:
        self.args = args
        self.docker_host = docker_host
        self.client = docker.DockerClient(base_url=docker_host, version="auto", timeout=120)
        self.api: Any = self.client.api
        self.systems: list[System] = []
        self.started: list[System] = []
        self.samples: list[Sample] = []
        self.engine: dict[str, Any] = {}
        self.loadavg_start = list(os.getloadavg())

    # -- set-up and tear-down --

    def preflight(self) -> None:
        try:
            version = self.api.version()
        except (docker.errors.DockerException, OSError) as exc:
            raise BenchError(
                f"no Docker engine answers at {self.docker_host} ({exc}): export DOCKER_HOST "
                "or run `make bench-convergence`, which starts one"
            ) from exc
        try:
            image = self.api.inspect_image(self.args.image)
        except docker.errors.ImageNotFound:
            raise BenchError(
                f"image {self.args.image} is not on the engine at {self.docker_host}: run "
                "scripts/build-images.sh (`make bench-convergence` does); nothing is pulled"
            ) from None
        info = self.api.info()
        self.engine = {
            "docker_host": self.docker_host,
            "version": version.get("Version", ""),
            "api_version": version.get("ApiVersion", ""),
            "storage_driver": info.get("Driver", ""),
            "cpus": info.get("NCPU"),
            "memory_bytes": info.get("MemTotal"),
            "image": self.args.image,
            "image_id": image["Id"],
        }
        left = remove_labelled(self.api, f"{BENCH_LABEL}={BENCH_LABEL_VALUE}")
        if left:
            print(f"removed {left} container(s) left by an earlier benchmark run")

    def build(self) -> None:
        a = self.args
        for name in a.systems:
            if name == "swarmlet":
                self.systems.append(
                    SwarmletSystem(
                        self.docker_host,
                        self.client,
                        a.image,
                        poll_interval=a.poll_ms / 1000,
                        timeout=a.timeout,
                        log_dir=log_dir(a.output),
                    )
                )
            elif name == "swarm":
                swarm = DockerSwarmSystem(
                    self.docker_host,
                    self.client,
                    a.image,
                    poll_interval=a.swarm_poll_ms / 1000,
                    timeout=a.timeout,
                    by_id=a.swarm_image_ref == "id",
                    cli=a.swarm_client == "cli",
                )
                swarm.check()  # refuse before anything is started
                self.systems.append(swarm)
            else:
                self.systems.append(
                    RawEngineSystem(
                        self.docker_host, a.image, threads=max(a.replicas), timeout=a.timeout
                    )
                )

    def setup(self) -> None:
        for system in self.systems:
            print(f"setting up {system.name} ...", flush=True)
            self.started.append(system)
            system.setup()

    def teardown(self) -> None:
        for system in reversed(self.started):
            try:
                system.teardown()
            except Exception as exc:
                print(f"cleaning up {system.name} failed: {exc}", file=sys.stderr)
        self.started.clear()
        with contextlib.suppress(Exception):
            left = remove_labelled(self.api, f"{BENCH_LABEL}={BENCH_LABEL_VALUE}")
            if left:
                print(f"removed {left} leftover container(s)", file=sys.stderr)
        with contextlib.suppress(Exception):
            self.client.close()

    # -- runs --

    def run_one(self, system: System, replicas: int, timed: bool) -> None:
        name = f"bench-{system.name}-{uuid.uuid4().hex[:8]}"
        sample = system.run(replicas, name)
        sample.timed = timed
        self.samples.append(sample)
        extra = ""
        if sample.engine_started is not None:
            extra = f"  (engine: last container started at {sample.engine_started:.3f} s)"
        kind = "" if timed else "  warm-up"
        print(f"  N={replicas:<3} {system.name:<9} {sample.seconds:7.3f} s{extra}{kind}")
        time.sleep(self.args.settle)

    def measure(self) -> None:
        a = self.args
        if not a.no_warmup:
            print("warm-up (not timed):")
            for n in a.replicas:
                for system in self.systems:
                    self.run_one(system, n, timed=False)
        for r in range(a.runs):
            # Interleaved, and each round starts with another system.
            k = r % len(self.systems)
            order = self.systems[k:] + self.systems[:k]
            print(f"round {r + 1}/{a.runs}:", flush=True)
            for n in a.replicas:
                for system in order:
                    self.run_one(system, n, timed=True)

    # -- results --

    def timed(self, system: str, n: int) -> list[Sample]:
        return [s for s in self.samples if s.timed and s.system == system and s.replicas == n]

    def summary(self) -> list[dict[str, Any]]:
        rows = []
        names = [s.name for s in self.systems]
        for n in self.args.replicas:
            row: dict[str, Any] = {"replicas": n}
            for name in names:
                samples = self.timed(name, n)
                values = [s.seconds for s in samples]
                row[name] = {
                    "median": median(values),
                    "min": min(values),
                    "max": max(values),
                    "runs": values,
                }
            for key, other, target in (
                ("swarmlet_vs_swarm", "swarm", TARGET_VS_SWARM),
                ("swarmlet_vs_raw", "raw", TARGET_VS_RAW),
            ):
                if "swarmlet" in names and other in names:
                    ratio = row["swarmlet"]["median"] / row[other]["median"]
                    row[key] = {"ratio": ratio, "target": target, "met": ratio <= target}
            rows.append(row)
        return rows

    def breakdown(self, system: str, n: int) -> dict[str, float]:
        """Median of every mark the runs of `system` with N=`n` have."""
        samples = self.timed(system, n)
        keys: dict[str, None] = dict.fromkeys(["create_call"])
        for s in samples:
            keys.update(dict.fromkeys(s.phases))
            keys.update(dict.fromkeys(s.marks))
        keys.update(dict.fromkeys(["engine_started", "seconds"]))
        out = {}
        for key in keys:
            values = [v for v in (metric(s, key) for s in samples) if v is not None]
            if values:
                out[key] = median(values)
        return out

    def print_report(self, rows: list[dict[str, Any]]) -> None:
        a = self.args
        names = [s.name for s in self.systems]
        print()
        print(
            f"Convergence: create -> N tasks running, median of {a.runs} run(s), seconds [min-max]"
        )
        if a.swarm_client == "api":
            swarm = "create_service on the Docker API (no CLI start-up or registry look-up)"
        else:
            swarm = "`docker service create --detach` (CLI start-up and registry look-up counted)"
        if a.swarm_image_ref == "id":
            swarm += ", image by id"
        described = {
            "swarmlet": "CreateService on its control API (no swarmctl start-up), ListTasks "
            f"every {a.poll_ms:g} ms",
            "swarm": f"{swarm}, task list every {a.swarm_poll_ms:g} ms",
            "raw": "N threads each create + start a container on the Docker API",
        }
        for name in names:
            print(f"  {name + ':':<9} {described[name]}")
        print()
        header = f"{'N':>4}" + "".join(f"  {name:>21}" for name in names)
        keys = [k for k in ("swarmlet_vs_swarm", "swarmlet_vs_raw") if k in rows[0]]
        header += "".join(f"  {k.replace('_vs_', '/'):>22}" for k in keys)
        print(header)
        for row in rows:
            line = f"{row['replicas']:>4}"
            for name in names:
                r = row[name]
                cell = f"{r['median']:.3f} [{r['min']:.2f}-{r['max']:.2f}]"
                line += f"  {cell:>21}"
            for key in keys:
                t = row[key]
                verdict = "met" if t["met"] else "MISSED"
                cell = f"{t['ratio']:.2f}x (<={t['target']:.2f}) {verdict}"
                line += f"  {cell:>22}"
            print(line)
        for name in names:
            print()
            print(f"{name}: where the time goes, median seconds after the create call")
            table = {n: self.breakdown(name, n) for n in a.replicas}
            print(f"  {'':<52}" + "".join(f"  {f'N={n}':>7}" for n in a.replicas))
            for label, mark in BREAKDOWN[name]:
                cells = [table[n].get(mark) for n in a.replicas]
                if all(c is None for c in cells):
                    continue
                print(
                    f"  {label:<52}"
                    + "".join(f"  {c:7.3f}" if c is not None else f"  {'-':>7}" for c in cells)
                )
        print()
        for row in rows:
            for key in keys:
                t = row[key]
                other = "Docker Swarm" if key == "swarmlet_vs_swarm" else "the raw engine"
                verdict = "met" if t["met"] else "MISSED"
                print(
                    f"target N={row['replicas']}: swarmlet <= {t['target']:.2f}x {other}: "
                    f"{t['ratio']:.2f}x -> {verdict}"
                )

    def write_json(self, rows: list[dict[str, Any]], started: datetime.datetime) -> Path:
        a = self.args
        data = {
            "benchmark": "convergence",
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(self.loadavg_start),
            "engine": self.engine,
            "swarmlet_commit": git_commit(),
            "settings": {
                "runs": a.runs,
                "replicas": a.replicas,
                "systems": a.systems,
                "warmup": not a.no_warmup,
                "swarmlet_poll_ms": a.poll_ms,
                "swarm_poll_ms": a.swarm_poll_ms,
                "swarm_image_ref": a.swarm_image_ref,
                "swarm_client": a.swarm_client,
                "settle_s": a.settle,
            },
            "targets": {"swarmlet_vs_swarm": TARGET_VS_SWARM, "swarmlet_vs_raw": TARGET_VS_RAW},
            "summary": rows,
            "breakdown": {
                name: {str(n): self.breakdown(name, n) for n in a.replicas} for name in a.systems
            },
            "runs": [asdict(s) for s in self.samples],
        }
        a.output.parent.mkdir(parents=True, exist_ok=True)
        output: Path = a.output
        output.write_text(json.dumps(data, indent=2) + "\n")
        return output


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    docker_host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    started = datetime.datetime.now(datetime.UTC)
    # SIGTERM and SIGHUP clean up like Ctrl-C does.
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)
    bench = Benchmark(args, docker_host)
    print(
        f"convergence benchmark on {docker_host}: N={','.join(map(str, args.replicas))}, "
        f"{args.runs} run(s) each, systems {', '.join(args.systems)}, image {args.image}"
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        print(
            f"note: the load average is {load:.2f} before starting; other work on this machine "
            "shows in the figures"
        )
    try:
        bench.preflight()
        bench.build()
        bench.setup()
        bench.measure()
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        _cleanup(bench)
        return 130
    except (BenchError, docker.errors.DockerException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        _cleanup(bench)
        return 1
    except BaseException:
        _cleanup(bench)
        raise
    _cleanup(bench)
    add_log_marks(log_dir(args.output), bench.samples)
    rows = bench.summary()
    bench.print_report(rows)
    path = bench.write_json(rows, started)
    with contextlib.suppress(ValueError):
        path = path.relative_to(Path.cwd())
    print(f"\nper-run figures: {path}")
    return 0


def _cleanup(bench: Benchmark) -> None:
    """Tear everything down; a second Ctrl-C does not cut it short (every step has a
    timeout)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}
    try:
        bench.teardown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
