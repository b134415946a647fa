"""What clients were told: every create, scale, update and rm that swarmctl reported as
done (acknowledged), and the ones whose outcome a client never learnt (swarmctl failed,
e.g. because the manager it talked to was killed). The services stored in etcd must
match the last acknowledged state of each, or one of the unacknowledged changes made
after it."""

from __future__ import annotations

import base64
import json
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from common.api import objects_pb2


@dataclass(frozen=True)
class Expect:
    """The part of a service a client changes: whether it exists, its replicas, its
    `gen` label."""

    exists: bool = True
    replicas: int | None = None
    gen: str = ""

    def __str__(self) -> str:
        if not self.exists:
            return "absent"
        return f"replicas={self.replicas} gen={self.gen!r}"


def observed(svc: objects_pb2.Service) -> Expect:
    replicas = svc.spec.replicated.replicas if svc.spec.HasField("replicated") else None
    return Expect(True, replicas, svc.spec.annotations.labels.get("gen", ""))


def services_in_etcd(endpoints: str, prefix: str = "/swarmlet/") -> dict[str, objects_pb2.Service]:
    """The services stored in etcd, by name, read with etcdctl (not through a manager)."""
    out = subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=10s", "-w", "json",
         "get", f"{prefix}services/", "--prefix"],
        capture_output=True, text=True, timeout=30, check=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin:/usr/local/bin"},
    ).stdout  # fmt: skip
    services = {}
    for kv in json.loads(out).get("kvs", []):
        svc = objects_pb2.Service()
        svc.ParseFromString(base64.b64decode(kv["value"]))
        services[svc.spec.annotations.name] = svc
    return services


@dataclass
class Ledger:
    acked: dict[str, Expect] = field(default_factory=dict)
    # Changes issued after the last acknowledged one whose outcome is unknown.
    unknown: dict[str, list[Expect]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def apply(
        self,
        run: Callable[..., subprocess.CompletedProcess[str]],
        name: str,
        expect: Expect,
        *args: str,
    ) -> bool:
        """Run swarmctl ARGS through `run`; record `expect` as acknowledged if it
        succeeded, as possible if it failed."""
        started = time.monotonic()
        try:
            result = run(*args)
            ok, detail = result.returncode == 0, (result.stderr or result.stdout).strip()
        except subprocess.TimeoutExpired:
            ok, detail = False, "timed out"
        with self.lock:
            if ok:
                self.acked[name] = expect
                self.unknown[name] = []
            else:
                self.unknown.setdefault(name, []).append(expect)
            self.log.append(
                f"{'ack' if ok else 'UNACKNOWLEDGED'} {name} -> {expect} "
                f"({time.monotonic() - started:.1f}s): swarmctl "
                f"{' '.join(args)}{'' if ok else ': ' + detail[-200:]}"
            )
        return ok

    def current(self, name: str) -> Expect:
        return self.acked.get(name, Expect(exists=False))

    def problems(self, stored: dict[str, objects_pb2.Service]) -> list[str]:
        out = []
        with self.lock:
            names = set(self.acked) | set(self.unknown) | set(stored)
            for name in sorted(names):
                actual = observed(stored[name]) if name in stored else Expect(exists=False)
                allowed = [self.current(name), *self.unknown.get(name, [])]
                if actual not in allowed:
                    maybe = ", ".join(map(str, allowed[1:]))
                    told = f"{self.current(name)}" + (
                        f" (or unacknowledged: {maybe})" if maybe else ""
                    )
                    out.append(f"service {name}: etcd has {actual}, clients were last told {told}")
        return out
