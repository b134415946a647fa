"""The chaos suite's cluster: a 3-member etcd cluster, three managers on it (2 and 3
joined with the manager join token), the local cluster's three namespace hosts (each
with its dockerd and an agent that knows all three managers), and a hollow farm.

The short version runs in `make test`; `SWARMLET_CHAOS=long` (`make chaos`) runs more
rounds, a bigger farm and longer loops. Either is bounded: every wait has a timeout,
and the faults stop once the time budget (SWARMLET_CHAOS_MINUTES) is spent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.api import types_pb2
from tests.chaos.ledger import Expect, Ledger, services_in_etcd
from tests.clusterlib import (
    RUN,
    ClusterUnavailableError,
    LocalCluster,
    container_problems,
    slot_problems,
    stuck_tasks,
)
from tests.harness import Agent, EtcdCluster, short_tmpdir, swarmctl

LONG = os.environ.get("SWARMLET_CHAOS", "") == "long"
ROUNDS = int(os.environ.get("SWARMLET_CHAOS_ROUNDS", "3" if LONG else "1"))
FARM = int(os.environ.get("SWARMLET_CHAOS_FARM", "100" if LONG else "20"))
KILL_LOOP = int(os.environ.get("SWARMLET_CHAOS_KILLS", "10" if LONG else "3"))
BUDGET = float(os.environ.get("SWARMLET_CHAOS_MINUTES", "30" if LONG else "8")) * 60
CONVERGE_TIMEOUT = 120.0
# Once converged, no task may have sat in ASSIGNED..STARTING for longer than this.
STUCK_BOUND = 30.0

HOLLOW = "busybox"  # hollow tasks pull nothing
FARM_ONLY = "engine.labels.farm==1"
HOSTS_ONLY = "engine.labels.farm!=1"
# Replicas of the hollow and the real service between faults.
HOL_BASE, REAL_BASE = 10, 3


@dataclass
class Chaos:
    cluster: LocalCluster
    etcd: EtcdCluster
    farm: Agent
    ledger: Ledger
    deadline: float

    # -- clients --

    def swarmctl(self, *args: str, manager: int = 0) -> subprocess.CompletedProcess[str]:
        """swarmctl on manager `manager`, or on the first that answers."""
        candidates = [manager] if manager else [1, 2, 3]
        result: subprocess.CompletedProcess[str] | None = None
        for m in candidates:
            result = swarmctl(self.cluster.control(m), *args, timeout=60)
            if result.returncode == 0 or "does not answer" not in result.stderr:
                break
        assert result is not None
        return result

    def change(self, name: str, expect: Expect, *args: str, manager: int = 0) -> bool:
        """A client's change, recorded in the ledger: acknowledged or not."""
        return self.ledger.apply(lambda *a: self.swarmctl(*a, manager=manager), name, expect, *args)

    def scale(self, name: str, replicas: int, manager: int = 0) -> bool:
        current = self.ledger.current(name)
        return self.change(
            name, Expect(True, replicas, current.gen), "service", "scale", "-d",
            f"{name}={replicas}", manager=manager,
        )  # fmt: skip

    def relabel(self, name: str, gen: str) -> bool:
        current = self.ledger.current(name)
        return self.change(
            name, Expect(True, current.replicas, gen), "service", "update", "-d",
            "--label-add", f"gen={gen}", name,
        )  # fmt: skip

    # -- managers --

    def manager_ids(self) -> dict[int, str]:
        out = {}
        for m in (1, 2, 3):
            d = RUN / ("manager" if m == 1 else f"manager{m}")
            out[m] = (d / "manager_id").read_text().strip()
        return out

    def leader(self) -> int:
        ids = {v: k for k, v in self.manager_ids().items()}
        for node in self.cluster.nodes():
            if node.role == types_pb2.NODE_ROLE_MANAGER and node.manager_status.leader:
                return ids[node.id]
        raise AssertionError("no leader")

    def pid(self, path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    # -- checks --

    def problems(self) -> list[str]:
        c = self.cluster
        tasks, services, nodes = c.tasks(), c.services(), c.nodes()
        return (
            self.ledger.problems(services_in_etcd(self.etcd.endpoints))
            + slot_problems(services, tasks, nodes)
            + container_problems(c, tasks, running_only=True)
        )

    def assert_converged(self, after: str) -> float:
        """Wait (bounded) until every check passes; then no task may be stuck. Returns
        how long convergence took."""
        started = time.monotonic()
        last: list[str] | str = []
        while time.monotonic() - started < CONVERGE_TIMEOUT:
            try:
                last = self.problems()
            except Exception as exc:  # a manager or engine still coming back
                last = f"{type(exc).__name__}: {exc}"
            if not last:
                break
            time.sleep(1)
        else:
            detail = last if isinstance(last, str) else "\n  ".join(last[:30])
            raise AssertionError(
                f"not converged {CONVERGE_TIMEOUT:.0f}s after {after}:\n  {detail}\n"
                f"ledger (last 10):\n  " + "\n  ".join(self.ledger.log[-10:])
            )
        took = time.monotonic() - started
        stuck = stuck_tasks(self.cluster.tasks(), STUCK_BOUND)
        assert not stuck, f"tasks stuck after {after}: {stuck}"
        return took


def _hollow_farm(cluster: LocalCluster, token: str, state_dir: Path | None = None) -> Agent:
    managers = cluster.env["SWARMLET_CLUSTER_MANAGERS"].split()
    return Agent(
        managers,
        "unix:///nonexistent",
        state_dir=state_dir,
        join_token=token,
        extra=[
            "--executor", "hollow", "--count", str(FARM), "--hollow-label", "farm=1",
            "--hollow-prepare", "20ms", "--hollow-start", "20ms", "--log-level", "warning",
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    log = tmp_path_factory.mktemp("chaos") / "cluster.log"
    etcd = EtcdCluster().start()
    cluster: LocalCluster | None = None
    farm: Agent | None = None
    try:
        try:
            cluster = LocalCluster.up(
                3,
                extra_env={
                    "SWARMLET_CLUSTER_ETCD": etcd.endpoints,
                    "SWARMLET_CLUSTER_MANAGERS": "3",
                },
                log_path=log,
            )
        except ClusterUnavailableError as exc:
            pytest.fail(str(exc), pytrace=False)
        token = cluster.ctl("join-token", "-q", "worker").strip()
        farm = _hollow_farm(cluster, token, short_tmpdir("swl-farm-")).start()
        c = Chaos(cluster, etcd, farm, Ledger(), time.monotonic() + BUDGET)

        def farm_ready() -> int:
            return sum(
                1
                for n in cluster.nodes()
                if n.status.state == types_pb2.NODE_STATE_READY
                and n.description.engine.labels.get("farm") == "1"
            )

        deadline = time.monotonic() + 120
        while farm_ready() < FARM:
            assert time.monotonic() < deadline, f"farm not ready:\n{farm.process.log()[-2000:]}"
            time.sleep(1)
        image, sleeper = cluster.image("demo"), cluster.image("sleeper")
        services: list[tuple[str, Expect, list[str]]] = [
            ("hol", Expect(True, HOL_BASE),
             ["--replicas", str(HOL_BASE), "--constraint", FARM_ONLY, HOLLOW]),
            ("real", Expect(True, REAL_BASE),
             ["--replicas", str(REAL_BASE), "--constraint", HOSTS_ONLY, "--restart-delay", "1s",
              image]),
            ("glob", Expect(True, None), ["--mode", "global", "--constraint", HOSTS_ONLY, sleeper]),
        ]  # fmt: skip
        for name, expect, args in services:
            assert c.change(name, expect, "service", "create", "-d", "--name", name, *args)
        c.assert_converged("setting up")
        yield c
        unacked = [line for line in c.ledger.log if line.startswith("UNACK")]
        print(f"\nledger: {len(c.ledger.log)} changes, {len(unacked)} unacknowledged")
        for line in unacked:
            print(f"  {line}")
    finally:
        if farm is not None:
            farm.cleanup(None)
        if cluster is not None:
            cluster.down()
        etcd.cleanup()


def signal_pid(pid: int | None, sig: int = signal.SIGTERM) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until the processes have exited; returns those still there."""
    deadline = time.monotonic() + timeout
    left = pids
    while left and time.monotonic() < deadline:
        left = [p for p in left if _alive(p)]
        time.sleep(0.2)
    return left


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return False
