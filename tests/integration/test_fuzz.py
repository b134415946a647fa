"""Fuzzing the manager's gRPC surfaces with one real manager (embedded etcd) and a
farm of hollow agents.

- Control API: hypothesis-generated service specs, updates (spec edits, right, stale,
  zero and huge versions, rollback, dry run) and calls naming random objects (get,
  list, remove, rebalance, node and cluster updates), sent over the manager's unix
  socket; also valid requests with their bytes corrupted, on every method.
- Dispatcher: a node with a valid certificate opens sessions with odd descriptions and
  sends heartbeats and status reports (unknown states, times out of range, huge texts)
  for its own tasks and others'.
- Raw bytes: garbage, cut HTTP/2 prefaces and TLS records on the dispatcher port, the
  CA port (dispatcher port + 1) and the control socket, some left open half-spoken;
  then well-formed gRPC calls whose request message is random bytes, on every method
  path of the CA and the dispatcher.

What must hold: the manager process stays up, logs no error and no crashed background
task, and keeps answering; every failure is a proper status code (never UNKNOWN or
INTERNAL; a request that does not decode is INVALID_ARGUMENT, an unknown method
UNIMPLEMENTED, one over gRPC's 4 MiB limit RESOURCE_EXHAUSTED); no call hangs; and
afterwards everything under the etcd prefix, read from etcd itself, parses as its
protobuf type, holds only known enum values, converts to JSON as `swarmctl --format
json` does, every stored service spec passes `validate_service_spec`, and service
names are unique (with one name key per service). Each test prints the status codes
it saw (`pytest -s`).

Every loop is bounded by example counts and by time (SWARMLET_FUZZ_SECONDS per test,
20 by default), so the module takes about a minute. `test_what_the_fuzzing_found`
replays, deterministically, what earlier runs found.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import pki
from common.api import (
    ca_pb2,
    control_pb2,
    dispatcher_pb2,
    dispatcher_pb2_grpc,
    objects_pb2,
    specs_pb2,
    types_pb2,
)
from manager.controlapi.validation import validate_service_spec
from manager.grpc_errors import InvalidArgumentError
from manager.store.etcd import EtcdConfig, connect
from manager.store.keys import KeySpace, Kind, decode
from manager.store.store import Store
from tests.harness import Agent, Manager, tls_channel, wait_until

pytestmark = pytest.mark.slow

PREFIX = "/swarmlet/"
NODES = 2
HOLLOW = [
    "--executor", "hollow", "--count", str(NODES), "--hollow-prepare", "10ms",
    "--hollow-start", "10ms", "--hollow-fail-rate", "0.2", "--hollow-fail-after", "300ms",
    "--hollow-job-duration", "200ms",
]  # fmt: skip
# Wall-clock budget of each hypothesis-driven test (examples past it are skipped).
FUZZ_SECONDS = float(os.environ.get("SWARMLET_FUZZ_SECONDS", "20"))
CALL_TIMEOUT = 15.0

Code = grpc.StatusCode
# What a request the manager refuses may be answered with.
PROPER = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.ALREADY_EXISTS,
    Code.FAILED_PRECONDITION,
    Code.UNAVAILABLE,
    Code.PERMISSION_DENIED,
    Code.UNAUTHENTICATED,
    # gRPC's own: a request over its 4 MiB message limit.
    Code.RESOURCE_EXHAUSTED,
}


# ---- the cluster under test ----------------------------------------------------------


@dataclass
class Target:
    manager: Manager
    agents: Agent
    etcd: str
    # Status codes seen, per surface, for the report at the end of each test.
    seen: Counter[tuple[str, str]] = field(default_factory=Counter)

    def call(self, surface: str, fn: Callable[..., Any], request: Any) -> Code:
        """Call `fn(request)`; the status code, checked to be a proper one."""
        try:
            fn(request, timeout=CALL_TIMEOUT)
            code = Code.OK
            details = ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        self.seen[(surface, code.name)] += 1
        assert code is not Code.DEADLINE_EXCEEDED, f"{surface}: no answer in {CALL_TIMEOUT}s"
        assert code in PROPER, f"{surface}: {code.name}: {details}\nrequest: {request!r:.2000}"
        return code

    def alive(self) -> None:
        """The manager process runs and answers a normal call."""
        assert self.manager.process.running, self.manager.process.log()[-3000:]
        self.manager.api().GetCluster(control_pb2.GetClusterRequest(), timeout=CALL_TIMEOUT)

    def report(self, title: str) -> None:
        print(f"\n{title}: status codes seen")
        for (surface, code), n in sorted(self.seen.items()):
            print(f"  {surface:<40} {code:<20} {n}")
        self.seen.clear()


def _etcd_endpoint(manager: Manager) -> str:
    for line in manager.process.log().splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "manager ready":
                return str(entry["etcd"])
    raise AssertionError("the manager did not log its etcd endpoint")


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    manager = Manager().start()
    agents: Agent | None = None
    try:
        agents = Agent(
            [manager.addr], "unix:///nonexistent", join_token=manager.join_token(), extra=HOLLOW
        ).start()
        wait_until(
            lambda: (
                sum(n.status.state == types_pb2.NODE_STATE_READY for n in manager.nodes()) == NODES
            ),
            30,
            what=f"{NODES} ready hollow nodes",
        )
        yield Target(manager, agents, _etcd_endpoint(manager))
        log = manager.process.log()
        assert "background task crashed" not in log, _crashes(log)
        assert '"level": "error"' not in log, _errors(log)
    finally:
        if agents is not None:
            agents.cleanup(None)
        manager.cleanup()


def _crashes(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if "crashed" in line)[-5000:]


def _errors(log: str) -> str:
    return "\n".join(line for line in log.splitlines() if '"level": "error"' in line)[-5000:]


# ---- what is stored ------------------------------------------------------------------


def _unknown_enums(msg: Message, path: str = "") -> list[str]:
    """Paths of enum fields (at any depth) holding a number their enum does not name."""
    out: list[str] = []
    for fd, value in msg.ListFields():
        where = f"{path}.{fd.name}" if path else fd.name
        if fd.type == FieldDescriptor.TYPE_ENUM:
            for v in value if fd.is_repeated else [value]:
                assert fd.enum_type is not None
                if v not in fd.enum_type.values_by_number:
                    out.append(f"{where}={v}")
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            assert fd.message_type is not None
            if fd.message_type.GetOptions().map_entry:
                items = (
                    value.values() if isinstance(next(iter(value.values()), ""), Message) else []
                )
            elif fd.is_repeated:
                items = list(value)
            else:
                items = [value]
            for item in items:
                out.extend(_unknown_enums(item, where))
    return out


async def _read_prefix(endpoint: str) -> list[tuple[bytes, bytes, int]]:
    async with connect(EtcdConfig([endpoint])) as client:
        store = Store(client, KeySpace(PREFIX), endpoints=endpoint)
        kvs, _ = await store.list_raw(PREFIX.encode())
        return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]


def check_stored(target: Target) -> int:
    """Read every key under the prefix from etcd itself and check what it holds."""
    keys = KeySpace(PREFIX)
    kvs = asyncio.run(_read_prefix(target.etcd))
    problems: list[str] = []
    services: dict[str, objects_pb2.Service] = {}
    name_keys: dict[str, str] = {}
    for key, value, revision in kvs:
        text = key.decode(errors="replace")
        parsed = keys.parse(key)
        if parsed is None:
            rest = key[len(PREFIX) :].decode()
            if rest.startswith("names/services/"):
                name_keys[rest.removeprefix("names/services/")] = value.decode()
            elif rest.startswith("names/networks/"):
                pass  # a network's name (the allocator makes "ingress" on every cluster)
            elif rest not in ("names/clusters/default", "leader"):
                problems.append(f"{text}: an unexpected key")
            continue
        kind, obj_id = parsed
        try:
            obj = decode(kind, value, revision)
        except Exception as exc:
            problems.append(f"{text}: does not parse as {kind.message.__name__}: {exc}")
            continue
        if obj.id != obj_id:
            problems.append(f"{text}: holds id {obj.id!r}")
        problems.extend(f"{text}: unknown enum value {e}" for e in _unknown_enums(obj))
        try:
            json_format.MessageToDict(obj)  # what `swarmctl ... --format json` does
        except Exception as exc:
            problems.append(f"{text}: does not convert to JSON: {exc}")
        if kind is Kind.SERVICE:
            services[obj.id] = obj
            for which in ("spec", "previous_spec"):
                if which == "spec" or obj.HasField(which):
                    try:
                        validate_service_spec(getattr(obj, which))
                    except InvalidArgumentError as exc:
                        problems.append(f"{text}: stored {which} is invalid: {exc}")
    names = Counter(s.spec.annotations.name for s in services.values())
    problems.extend(f"service name {n!r} is used {k} times" for n, k in names.items() if k > 1)
    for s in services.values():
        if name_keys.get(s.spec.annotations.name) != s.id:
            problems.append(f"service {s.id} ({s.spec.annotations.name!r}) has no name key")
    for name, sid in name_keys.items():
        if sid not in services:
            problems.append(f"name key {name!r} names a service that does not exist ({sid})")
    assert not problems, "\n".join(problems[:50])
    return len(kvs)


# ---- strategies ----------------------------------------------------------------------

INT64 = st.one_of(
    st.sampled_from([-(2**63), -1, 0, 1, 2**31, 2**62, 2**63 - 1]),
    st.integers(-(2**63), 2**63 - 1),
)
UINT64_HUGE = st.one_of(
    st.sampled_from([2**64 - 1, 2**63, 2**32, 10**9]), st.integers(10**7, 2**64 - 1)
)
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT32 = st.one_of(st.sampled_from([0, 65535, 65536, 2**32 - 1]), st.integers(0, 2**32 - 1))
# Enum numbers beyond (and below) what any of our enums names: proto3 enums are open,
# so protobuf keeps them and they reach the manager.
BAD_ENUM = st.one_of(st.sampled_from([-1, 3, 7, 99, 12345, 2**31 - 1, -(2**31)]), INT32)

WEIRD_TEXT = st.one_of(
    st.text(max_size=30),
    st.just(""),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "Zl"]), max_size=8),
    st.sampled_from(
        [
            " ",
            "\x00",
            "a\x00b",
            "web\n",
            "\t",
            "../..",
            "a/b",
            "/",
            "名前",
            "\u202eevil",
            "🙂",
            "-a",
            "a-",
            "A" * 63,
            "a" * 64,
            "é",
            "ß",
            "\ufeff",
            "%s%n",
            "' OR 1=1 --",
        ]
    ),
    st.integers(64, 5000).map(lambda n: "x" * n),
)
# Bigger than etcd takes in one request (1.5 MiB), smaller than gRPC's 4 MiB message limit.
HUGE_TEXT = st.integers(1_600_000, 3_000_000).map(lambda n: "y" * n)
LABEL_TEXT = st.one_of(st.from_regex(r"\A[a-z][a-z0-9._-]{0,12}\Z"), st.text(max_size=12))
NAMES = st.sampled_from([f"fz-{c}" for c in "abcdefgh"])
IMAGES = st.sampled_from(
    ["busybox", "busybox:1.36", "swarmlet/demo:latest", "registry.local:5000/team/app:v1.2",
     "alpine@sha256:" + "a" * 64, "ghcr.io/a_b/c-d:latest"]
)  # fmt: skip
CONSTRAINTS = st.sampled_from(
    ["node.role==worker", "node.role!=manager", "node.labels.zone==east", "node.ip==127.0.0.1",
     "node.ip!=10.0.0.0/8", "node.platform.os==linux", "engine.labels.x!=y",
     "node.hostname!=nothing", "node.id!=abc"]
)  # fmt: skip
BAD_CONSTRAINTS = st.one_of(
    WEIRD_TEXT,
    st.sampled_from(
        ["node.role==boss", "node.ip==300.1.1.1", "node.ip==1.2.3.4/99", "node.ip==fe80::1%eth0",
         "node.labels.==x", "==", "node.hostname==", "node.bogus==1", "node.labels.a=b",
         "node.ip==::/0", "engine.labels.==z", "node.labels.k==v==w"]
    ),
)  # fmt: skip


def durations(valid: bool) -> st.SearchStrategy[tuple[int, int]]:
    """(seconds, nanos) of a Duration: sane ones, or what the Duration rules forbid."""
    if valid:
        return st.tuples(st.integers(0, 3), st.integers(0, 999_999_999))
    return st.one_of(
        st.tuples(st.integers(-(2**63), -1), st.integers(-999_999_999, 0)),  # negative
        st.tuples(st.just(0), st.integers(-(2**31), -1)),  # negative nanos only
        st.tuples(st.integers(0, 10), st.integers(1_000_000_000, 2**31 - 1)),  # nanos too big
        st.tuples(st.integers(1, 100), st.integers(-999_999_999, -1)),  # mixed signs
        st.tuples(st.integers(315_576_000_001, 2**63 - 1), st.integers(0, 999_999_999)),
        st.tuples(st.just(2**63 - 1), st.just(2**31 - 1)),
        st.tuples(st.integers(10**6, 10**10), st.just(0)),  # valid per protobuf, absurd here
    )


FIELDS = (
    "name", "labels", "image", "command", "env", "container_labels", "strings",
    "stop_grace", "healthcheck", "resources", "restart_condition", "restart_times",
    "restart_attempts", "constraints", "preferences", "max_replicas", "platforms",
    "strategy", "mode", "update", "ports", "huge",
)  # fmt: skip


@st.composite
def service_specs(draw: st.DrawFn, name: str | None = None) -> specs_pb2.ServiceSpec:
    """A service spec that is sane but for a few fields (`bad`) drawn to be wrong."""
    bad = draw(st.sets(st.sampled_from(FIELDS), max_size=3))
    spec = specs_pb2.ServiceSpec()

    def pick(what: str, good: st.SearchStrategy[Any], wrong: st.SearchStrategy[Any]) -> Any:
        return draw(wrong if what in bad else good)

    def set_duration(d: Any, what: str) -> None:
        seconds, nanos = draw(durations(valid=what not in bad))
        d.seconds, d.nanos = seconds, nanos

    spec.annotations.name = name if name is not None else pick("name", NAMES, WEIRD_TEXT)
    spec.annotations.labels.update(
        pick(
            "labels",
            st.dictionaries(
                LABEL_TEXT.filter(lambda k: k.strip() == k and k), WEIRD_TEXT, max_size=2
            ),
            st.dictionaries(WEIRD_TEXT, WEIRD_TEXT, min_size=1, max_size=3),
        )
    )
    c = spec.task.container
    c.image = pick("image", IMAGES, WEIRD_TEXT)
    c.command.extend(pick("command", st.lists(st.text(max_size=10), max_size=2),
                          st.lists(WEIRD_TEXT, max_size=4)))  # fmt: skip
    c.args.extend(draw(st.lists(WEIRD_TEXT, max_size=3)))
    c.env.extend(
        pick(
            "env",
            st.lists(st.from_regex(r"\A[A-Z_]{1,8}=[^\x00]{0,10}\Z"), max_size=3),
            st.lists(WEIRD_TEXT, min_size=1, max_size=3),
        )
    )
    c.labels.update(
        pick(
            "container_labels",
            st.dictionaries(st.from_regex(r"\A[a-z.]{1,10}\Z"), st.text(max_size=10), max_size=2),
            st.dictionaries(WEIRD_TEXT, WEIRD_TEXT, min_size=1, max_size=2),
        )
    )
    if "strings" in bad:
        c.dir, c.user, c.hostname, c.stop_signal = (draw(WEIRD_TEXT) for _ in range(4))
    if draw(st.booleans()) or "stop_grace" in bad:
        set_duration(c.stop_grace_period, "stop_grace")
    c.tty, c.init = draw(st.booleans()), draw(st.booleans())
    if draw(st.booleans()) or "healthcheck" in bad:
        h = c.healthcheck
        h.test.extend(pick("healthcheck", st.sampled_from([["CMD", "true"], ["NONE"], []]),
                           st.lists(WEIRD_TEXT, max_size=3)))  # fmt: skip
        for d in (h.interval, h.timeout, h.start_period):
            set_duration(d, "healthcheck")
        h.retries = pick("healthcheck", st.integers(0, 5), INT32)
    res = spec.task.resources
    if "resources" in bad:
        for r in (res.limits, res.reservations):
            r.nano_cpus, r.memory_bytes = draw(INT64), draw(INT64)
    elif draw(st.booleans()):
        res.reservations.nano_cpus = draw(st.integers(0, 10**9))
        res.reservations.memory_bytes = draw(st.integers(0, 2**20))
        res.limits.memory_bytes = draw(st.sampled_from([0, 2**30]))
    restart = spec.task.restart
    if draw(st.booleans()) or "restart_condition" in bad:
        restart.condition = pick(
            "restart_condition", st.sampled_from(specs_pb2.RestartCondition.values()), BAD_ENUM
        )
    for d in (restart.delay, restart.window):
        if draw(st.booleans()) or "restart_times" in bad:
            set_duration(d, "restart_times")
    restart.max_attempts = pick("restart_attempts", st.integers(0, 3), UINT64_HUGE)
    p = spec.task.placement
    p.constraints.extend(
        pick(
            "constraints",
            st.lists(CONSTRAINTS, max_size=2),
            st.lists(BAD_CONSTRAINTS, min_size=1, max_size=3),
        )
    )
    for descriptor in pick(
        "preferences",
        st.lists(st.sampled_from(["node.labels.zone", "engine.labels.rack"]), max_size=2),
        st.lists(WEIRD_TEXT, min_size=1, max_size=2),
    ):
        p.preferences.add().spread.spread_descriptor = descriptor
    p.max_replicas = pick("max_replicas", st.integers(0, 2), UINT64_HUGE)
    for os_, arch in pick(
        "platforms",
        st.lists(
            st.sampled_from([("linux", ""), ("linux", "x86_64"), ("", "aarch64")]), max_size=2
        ),
        st.lists(st.tuples(WEIRD_TEXT, WEIRD_TEXT), min_size=1, max_size=2),
    ):
        p.platforms.add(os=os_, architecture=arch)
    p.strategy = pick("strategy", st.sampled_from(specs_pb2.PlacementStrategy.values()), BAD_ENUM)
    spec.task.force_update = draw(st.one_of(st.integers(0, 3), UINT64_HUGE))
    mode = draw(st.sampled_from(["none", "replicated", "global", "replicated_job", "global_job"]))
    if mode == "replicated":
        spec.replicated.replicas = pick("mode", st.integers(0, 3), UINT64_HUGE)
    elif mode == "global":
        getattr(spec, "global").SetInParent()
    elif mode == "replicated_job":
        spec.replicated_job.total_completions = pick("mode", st.integers(0, 3), UINT64_HUGE)
        spec.replicated_job.max_concurrent = pick("mode", st.integers(0, 3), UINT64_HUGE)
    elif mode == "global_job":
        spec.global_job.SetInParent()
    for cfg in (spec.update, spec.rollback):
        if not draw(st.booleans()) and "update" not in bad:
            continue
        cfg.parallelism = pick("update", st.integers(0, 3), UINT64_HUGE)
        set_duration(cfg.delay, "update")
        set_duration(cfg.monitor, "update")
        cfg.failure_action = pick(
            "update", st.sampled_from(specs_pb2.UpdateFailureAction.values()), BAD_ENUM
        )
        cfg.order = pick("update", st.sampled_from(specs_pb2.UpdateOrder.values()), BAD_ENUM)
        cfg.max_failure_ratio = pick(
            "update",
            st.floats(0, 1, width=32),
            st.sampled_from([math.nan, math.inf, -math.inf, -0.5, 1.5, 3.4e38]),
        )
    if "ports" in bad:
        for _ in range(draw(st.integers(1, 3))):
            spec.endpoint.ports.add(
                name=draw(WEIRD_TEXT),
                protocol=draw(st.one_of(BAD_ENUM, st.integers(0, 2))),
                target_port=draw(UINT32),
                published_port=draw(UINT32),
                publish_mode=draw(st.one_of(BAD_ENUM, st.integers(0, 1))),
            )
    elif draw(st.booleans()):
        spec.endpoint.ports.add(
            protocol=draw(st.sampled_from(types_pb2.PortProtocol.values())),
            target_port=draw(st.integers(1, 65535)),
            published_port=0,
            publish_mode=types_pb2.PUBLISH_MODE_HOST,
        )
    if "huge" in bad:
        c.env.append("BIG=" + draw(HUGE_TEXT))
    return spec


# ---- the control API -----------------------------------------------------------------


def _budget(seconds: float = FUZZ_SECONDS) -> Callable[[], bool]:
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def _settings(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                               HealthCheck.function_scoped_fixture],
    )  # fmt: skip


def _spec(name: str = "found", **changes: Any) -> specs_pb2.ServiceSpec:
    spec = specs_pb2.ServiceSpec()
    spec.annotations.name = name
    spec.task.container.image = "busybox"
    spec.replicated.replicas = 1
    for path, value in changes.items():
        *owners, field_name = path.split("__")
        owner: Any = spec
        for o in owners:
            owner = getattr(owner, o)
        setattr(owner, field_name, value)
    return spec


def test_what_the_fuzzing_found(target: Target) -> None:
    """Each request the fuzzing found mishandled, with the answer it gets now."""
    api = target.manager.api()
    bad_port = _spec()
    bad_port.endpoint.ports.add(protocol=-1, target_port=80, publish_mode=1)
    big = _spec()
    big.task.container.env.append("BIG=" + "y" * 1_600_000)
    bad_nanos = _spec()
    bad_nanos.task.container.stop_grace_period.nanos = 1_310_535_959
    node = target.manager.nodes()[0]
    bad_role = control_pb2.UpdateNodeRequest(node_id=node.id, node_version=node.meta.version)
    bad_role.spec.CopyFrom(node.spec)
    bad_role.spec.desired_role = 7  # type: ignore[assignment]
    cluster = api.GetCluster(control_pb2.GetClusterRequest()).cluster
    bad_period = control_pb2.UpdateClusterRequest(cluster_version=cluster.meta.version)
    bad_period.spec.CopyFrom(cluster.spec)
    bad_period.spec.dispatcher.heartbeat_period.seconds = 315_576_000_001
    manager_id = (target.manager.state_dir / "manager_id").read_text().strip()
    cases: list[tuple[str, Callable[..., Any], Message, Code]] = [
        ("unknown port protocol", api.CreateService,
         control_pb2.CreateServiceRequest(spec=bad_port), Code.INVALID_ARGUMENT),
        ("1.6 MB environment variable", api.CreateService,
         control_pb2.CreateServiceRequest(spec=big), Code.INVALID_ARGUMENT),
        ("453116288 replicas", api.CreateService,
         control_pb2.CreateServiceRequest(spec=_spec(replicated__replicas=453116288)),
         Code.INVALID_ARGUMENT),
        ("nanos out of range", api.CreateService,
         control_pb2.CreateServiceRequest(spec=bad_nanos), Code.INVALID_ARGUMENT),
        ("unknown desired role", api.UpdateNode, bad_role, Code.INVALID_ARGUMENT),
        ("heartbeat period out of range", api.UpdateCluster, bad_period, Code.INVALID_ARGUMENT),
        ("removing the running manager", api.RemoveNode,
         control_pb2.RemoveNodeRequest(node_id=manager_id, force=True), Code.FAILED_PRECONDITION),
    ]  # fmt: skip
    for what, call, request, expected in cases:
        assert target.call(what, call, request) is expected, what
    with grpc.insecure_channel(f"unix:{target.manager.socket}") as channel:
        corrupt = _raw_unary(channel, "/swarmlet.Control/UpdateNode")
        with pytest.raises(grpc.RpcError) as err:
            corrupt(b"\x89\xeb/\x1e{\xd5\xd4~Do\xce", timeout=CALL_TIMEOUT)
        assert err.value.code() is Code.INVALID_ARGUMENT, err.value.details()
    target.alive()
    check_stored(target)
    target.seen.clear()


def test_create_service_fuzz(target: Target) -> None:
    api = target.manager.api()
    over = _budget()

    @_settings(250)
    @given(spec=service_specs(), dry_run=st.booleans())
    def create(spec: specs_pb2.ServiceSpec, dry_run: bool) -> None:
        if over():
            return
        request = control_pb2.CreateServiceRequest(spec=spec, dry_run=dry_run)
        target.call("CreateService", api.CreateService, request)
        assert target.manager.process.running

    create()
    target.alive()
    check_stored(target)
    target.report("CreateService")


def _services(target: Target) -> list[objects_pb2.Service]:
    response = target.manager.api().ListServices(control_pb2.ListServicesRequest())
    return list(response.services)


def _ensure_services(target: Target) -> None:
    """A few valid services to update, whatever the create fuzzing left."""
    api = target.manager.api()
    have = {s.spec.annotations.name for s in _services(target)}
    for name, mode in (("up-rep", "replicated"), ("up-glob", "global"), ("up-job", "job")):
        if name in have:
            continue
        spec = specs_pb2.ServiceSpec()
        spec.annotations.name = name
        spec.task.container.image = "busybox"
        if mode == "replicated":
            spec.replicated.replicas = 2
        elif mode == "global":
            getattr(spec, "global").SetInParent()
        else:
            spec.replicated_job.total_completions = 2
        api.CreateService(control_pb2.CreateServiceRequest(spec=spec), timeout=CALL_TIMEOUT)


INDEX = st.integers(0, 2**16)
NODE_FIELDS = ("ref", "version", "role", "availability", "labels", "name")
CLUSTER_FIELDS = ("version", "name", "history", "heartbeat", "expiry")


def pick_one(draw: Callable[[Any], Any], items: list[Any]) -> Any:
    """One of `items`, drawn the same way whatever their number (the cluster changes
    between examples; hypothesis wants the same draws when it replays one)."""
    i = draw(INDEX)
    return items[i % len(items)] if items else None


def draw_ref(draw: Callable[[Any], Any], ids: list[str], names: list[str]) -> str:
    """How an operator may name an object: id, prefix, name, or anything at all."""
    kind, text, short = draw(st.integers(0, 5)), draw(WEIRD_TEXT), draw(SHORT_REF)
    obj_id, name, cut = pick_one(draw, ids), pick_one(draw, names), draw(st.integers(1, 25))
    if kind == 2 and obj_id:
        return str(obj_id)
    if kind == 3 and obj_id:
        return str(obj_id)[:cut]
    if kind == 4 and obj_id:
        return f" {obj_id}\n"
    if kind == 5 and name:
        return str(name)
    return str(short if kind == 1 else text)


SHORT_REF = st.from_regex(r"\A[0-9a-z]{1,3}\Z")


def test_update_service_fuzz(target: Target) -> None:
    _ensure_services(target)
    api = target.manager.api()
    over = _budget()

    @_settings(250)
    @given(data=st.data())
    def update(data: st.DataObject) -> None:
        services = _services(target)
        service = pick_one(data.draw, services)
        request = control_pb2.UpdateServiceRequest()
        if service is not None and data.draw(st.integers(0, 9)) > 0:
            request.service_id = data.draw(
                st.sampled_from([service.id, service.spec.annotations.name, service.id[:6]])
            )
            current = service.meta.version
            request.service_version = data.draw(
                st.sampled_from([current, current, current, current - 1, 0, -1, 2**63 - 1,
                                 current + 1000])
            )  # fmt: skip
            if data.draw(st.booleans()):
                # An edit: the current spec with some fields replaced by generated ones.
                edited = specs_pb2.ServiceSpec()
                edited.CopyFrom(service.spec)
                generated = data.draw(service_specs(name=service.spec.annotations.name))
                for fd, _ in generated.ListFields():
                    if data.draw(st.booleans()):
                        cleared: Message = edited  # any field, by name
                        cleared.ClearField(fd.name)
                        if fd.type == FieldDescriptor.TYPE_MESSAGE:
                            getattr(edited, fd.name).CopyFrom(getattr(generated, fd.name))
                        else:
                            setattr(edited, fd.name, getattr(generated, fd.name))
                request.spec.CopyFrom(edited)
            else:
                request.spec.CopyFrom(data.draw(service_specs()))
        else:
            request.service_id = draw_ref(data.draw, [s.id for s in services], [])
            request.service_version = data.draw(INT64)
            request.spec.CopyFrom(data.draw(service_specs()))
        request.rollback = data.draw(st.integers(0, 4)) == 0
        request.dry_run = data.draw(st.integers(0, 4)) == 0
        if over():  # after the draws: hypothesis wants the same draws when it replays
            return
        target.call("UpdateService", api.UpdateService, request)
        assert target.manager.process.running

    update()
    target.alive()
    check_stored(target)
    target.report("UpdateService")


def test_other_calls_fuzz(target: Target) -> None:
    _ensure_services(target)
    api = target.manager.api()
    over = _budget()
    workers = [n.id for n in target.manager.nodes()]

    @_settings(300)
    @given(data=st.data())
    def calls(data: st.DataObject) -> None:
        services = _services(target)
        nodes = target.manager.nodes(managers=True)
        tasks = target.manager.tasks()
        sids, snames = [s.id for s in services], [s.spec.annotations.name for s in services]
        nids, nnames = [n.id for n in nodes], [n.description.hostname for n in nodes]
        tids, tnames = [t.id for t in tasks], [t.annotations.name for t in tasks]

        def sref() -> str:
            return draw_ref(data.draw, sids, snames)

        def nref() -> str:
            return draw_ref(data.draw, nids, nnames)

        texts = st.lists(WEIRD_TEXT, max_size=3)
        enums = st.lists(st.one_of(BAD_ENUM, st.integers(0, 3)), max_size=3)
        which = data.draw(st.sampled_from(
            ["GetService", "RemoveService", "ListTasks", "ListNodes", "GetNode", "GetTask",
             "UpdateNode", "UpdateCluster", "ListServices", "RebalanceService", "RemoveNode"]
        ))  # fmt: skip
        request: Message
        if which == "GetService":
            request = control_pb2.GetServiceRequest(service_id=sref())
        elif which == "RemoveService":
            # Only the services the create fuzzing left: the update fixtures stay.
            request = control_pb2.RemoveServiceRequest(service_id=sref())
            if request.service_id.startswith("up-"):
                return
        elif which == "RebalanceService":
            request = control_pb2.RebalanceServiceRequest(service_id=sref())
        elif which == "ListTasks":
            request = control_pb2.ListTasksRequest()
            f = request.filters
            f.names.extend(data.draw(texts))
            f.id_prefixes.extend(data.draw(texts))
            f.service_ids.extend(sref() for _ in range(data.draw(st.integers(0, 2))))
            f.node_ids.extend(nref() for _ in range(data.draw(st.integers(0, 2))))
            f.desired_states.extend(map(types_pb2.TaskState.ValueType, data.draw(enums)))
            f.labels.update(data.draw(st.dictionaries(WEIRD_TEXT, WEIRD_TEXT, max_size=2)))
        elif which == "ListNodes":
            request = control_pb2.ListNodesRequest()
            f2 = request.filters
            f2.names.extend(data.draw(texts))
            f2.id_prefixes.extend(data.draw(texts))
            f2.labels.update(data.draw(st.dictionaries(WEIRD_TEXT, WEIRD_TEXT, max_size=2)))
            f2.roles.extend(map(types_pb2.NodeRole.ValueType, data.draw(enums)))
            f2.availabilities.extend(map(types_pb2.NodeAvailability.ValueType, data.draw(enums)))
        elif which == "ListServices":
            request = control_pb2.ListServicesRequest()
            f3 = request.filters
            f3.names.extend(data.draw(texts))
            f3.name_prefixes.extend(data.draw(texts))
            f3.id_prefixes.extend(data.draw(texts))
            f3.labels.update(data.draw(st.dictionaries(WEIRD_TEXT, WEIRD_TEXT, max_size=2)))
        elif which == "GetNode":
            request = control_pb2.GetNodeRequest(node_id=nref())
        elif which == "GetTask":
            request = control_pb2.GetTaskRequest(task_id=draw_ref(data.draw, tids, tnames))
        elif which == "RemoveNode":
            # Never forced: a random prefix must not take the hollow nodes away.
            request = control_pb2.RemoveNodeRequest(node_id=nref())
        elif which == "UpdateNode":
            # Sane but for a field or two. Never drain or pause: the other tests need nodes.
            bad = data.draw(st.sets(st.sampled_from(NODE_FIELDS), max_size=2))
            node = pick_one(data.draw, nodes)
            version = node.meta.version
            request = control_pb2.UpdateNodeRequest(
                node_id=nref() if "ref" in bad else node.id,
                node_version=data.draw(st.one_of(st.just(version - 1), INT64))
                if "version" in bad
                else version,
            )
            request.spec.CopyFrom(node.spec)
            if "role" in bad:
                request.spec.desired_role = types_pb2.NodeRole.ValueType(data.draw(BAD_ENUM))
            if "availability" in bad:
                request.spec.availability = types_pb2.NodeAvailability.ValueType(
                    data.draw(st.sampled_from([3, -1, 12345, 2**31 - 1]))
                )
            request.spec.annotations.labels.update(
                data.draw(st.dictionaries(WEIRD_TEXT, WEIRD_TEXT, min_size=1, max_size=2))
                if "labels" in bad
                else data.draw(st.dictionaries(SHORT_REF, st.text(max_size=8), max_size=2))
            )
            if "name" in bad:
                request.spec.annotations.name = data.draw(WEIRD_TEXT)
        else:  # UpdateCluster
            bad = data.draw(st.sets(st.sampled_from(CLUSTER_FIELDS), max_size=2))
            cluster = api.GetCluster(control_pb2.GetClusterRequest()).cluster
            version = cluster.meta.version
            request = control_pb2.UpdateClusterRequest(
                cluster_version=data.draw(st.one_of(st.just(version - 1), INT64))
                if "version" in bad
                else version,
                rotate_worker_token=data.draw(st.booleans()),
                rotate_manager_token=data.draw(st.booleans()),
            )
            spec = request.spec
            spec.CopyFrom(cluster.spec)
            if "name" in bad:
                spec.annotations.name = data.draw(WEIRD_TEXT)
            spec.orchestration.task_history_retention_limit = data.draw(
                INT64 if "history" in bad else st.integers(1, 10)
            )
            spec.orchestration.auto_rebalance = data.draw(st.booleans())
            if "heartbeat" in bad:
                # Read at the next manager start only: bad values are refused or harmless.
                d = spec.dispatcher.heartbeat_period
                d.seconds, d.nanos = data.draw(durations(valid=False))
            expiry = spec.ca_config.node_cert_expiry
            expiry.seconds, expiry.nanos = data.draw(
                durations(valid=False)
                if "expiry" in bad
                else st.tuples(st.integers(3600, 10**8), st.integers(0, 999_999_999))
            )
        if over():  # after the draws: hypothesis wants the same draws when it replays
            return
        target.call(which, getattr(api, which), request)
        assert target.manager.process.running

    calls()
    target.alive()
    # The hollow nodes are still there and ready (only unforced removals were sent).
    ready = [n.id for n in target.manager.nodes() if n.status.state == types_pb2.NODE_STATE_READY]
    assert sorted(ready) == sorted(workers)
    check_stored(target)
    target.report("other control calls")


# ---- corrupted requests and raw bytes ------------------------------------------------


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """`data` with a few bytes flipped, cut short, or with garbage spliced in."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        if choice == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif choice == 1 and b:
            del b[rng.randrange(len(b)) :]
        elif choice == 2:
            at = rng.randrange(len(b) + 1)
            b[at:at] = rng.randbytes(rng.randint(1, 16))
        elif choice == 3:
            # A field with a huge length prefix, or an unknown field number.
            b += rng.choice([b"\x0a\xff\xff\xff\xff\x0f", b"\xf8\xff\xff\xff\x0f\x01", b"\x82\x01"])
        else:
            b += rng.randbytes(rng.randint(1, 32))
    return bytes(b)


CONTROL_METHODS = [m.name for m in control_pb2.DESCRIPTOR.services_by_name["Control"].methods]
# Methods that answer with a stream, which may stay open (logs -f, events) by design.
STREAMING = {
    m.name for m in control_pb2.DESCRIPTOR.services_by_name["Control"].methods if m.server_streaming
}


def _raw_unary(channel: grpc.Channel, path: str) -> Callable[..., Any]:
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


def _raw_stream(channel: grpc.Channel, path: str) -> Callable[..., Any]:
    return channel.unary_stream(path, request_serializer=None, response_deserializer=None)


def _check_raw(
    target: Target,
    surface: str,
    fn: Callable[..., Any],
    payload: bytes,
    *,
    open_ended: bool = False,
) -> None:
    """Like Target.call, for raw bytes (UNIMPLEMENTED is fine for unknown methods).

    With `open_ended` (a stream that legitimately stays open, like events), running
    into the deadline means the request was understood and is being served."""
    try:
        result = fn(payload, timeout=CALL_TIMEOUT)
        if not isinstance(result, bytes):  # a stream: its first message, or its status
            with contextlib.suppress(StopIteration):
                next(iter(result))
            result.cancel()
        code, details = Code.OK, ""
    except grpc.RpcError as err:
        code, details = err.code(), err.details() or ""
    target.seen[(surface, code.name)] += 1
    if open_ended and code is Code.DEADLINE_EXCEEDED:
        return
    assert code is not Code.DEADLINE_EXCEEDED, f"{surface}: no answer in {CALL_TIMEOUT}s"
    assert code in PROPER | {Code.UNIMPLEMENTED}, (
        f"{surface}: {code.name}: {details}\npayload: {payload[:200]!r}"
    )


def test_corrupted_control_requests(target: Target) -> None:
    """Valid requests with their bytes corrupted, and random bytes, on every method."""
    _ensure_services(target)
    rng = random.Random(int(os.environ.get("SWARMLET_FUZZ_SEED", "1")))
    over = _budget()
    services = _services(target)
    channel = grpc.insecure_channel(f"unix:{target.manager.socket}")
    seeds: dict[str, list[bytes]] = {m: [b""] for m in CONTROL_METHODS}
    for s in services:
        seeds["CreateService"].append(
            control_pb2.CreateServiceRequest(spec=s.spec).SerializeToString()
        )
        seeds["UpdateService"].append(
            control_pb2.UpdateServiceRequest(
                service_id=s.id, service_version=s.meta.version, spec=s.spec
            ).SerializeToString()
        )
        seeds["GetService"].append(
            control_pb2.GetServiceRequest(service_id=s.id).SerializeToString()
        )
    try:
        for i in range(1500):
            if over():
                break
            method = rng.choice(CONTROL_METHODS)
            base = rng.choice(seeds[method])
            payload = rng.randbytes(rng.randint(0, 64)) if i % 5 == 0 else _mutate(base, rng)
            path = f"/swarmlet.Control/{method}"
            if method in STREAMING:
                _check_raw(target, f"Control/{method} (corrupted)", _raw_stream(channel, path),
                           payload, open_ended=True)  # fmt: skip
            else:
                _check_raw(
                    target, f"Control/{method} (corrupted)", _raw_unary(channel, path), payload
                )
            if i % 50 == 0:
                assert target.manager.process.running
        for path in ["/swarmlet.Control/Nope", "/nope.Nope/Nope", "/", "/swarmlet.Control/"]:
            _check_raw(target, "Control (unknown method)", _raw_unary(channel, path), b"\x00")
    finally:
        channel.close()
    target.alive()
    check_stored(target)
    target.report("corrupted control requests")


# ---- the dispatcher, as an authenticated but misbehaving agent ------------------------


@st.composite
def descriptions(draw: st.DrawFn) -> objects_pb2.NodeDescription:
    d = objects_pb2.NodeDescription()
    d.hostname = draw(st.one_of(st.just("fuzz-node"), WEIRD_TEXT))
    d.platform.os = draw(st.one_of(st.just("linux"), WEIRD_TEXT))
    d.platform.architecture = draw(st.one_of(st.just("x86_64"), WEIRD_TEXT))
    d.resources.nano_cpus = draw(st.one_of(st.just(4 * 10**9), INT64))
    d.resources.memory_bytes = draw(st.one_of(st.just(2**33), INT64))
    d.engine.engine_version = draw(st.one_of(st.just("hollow"), WEIRD_TEXT))
    d.engine.labels.update(draw(st.dictionaries(WEIRD_TEXT, WEIRD_TEXT, max_size=2)))
    return d


TASK_STATES = types_pb2.TaskState.values()


@st.composite
def task_statuses(draw: st.DrawFn) -> objects_pb2.TaskStatus:
    """A status report as an agent sends it, but for a field or two drawn to be odd."""
    bad = draw(st.sets(st.sampled_from(["state", "time", "text", "ports"]), max_size=2))
    s = objects_pb2.TaskStatus()
    s.state = types_pb2.TaskState.ValueType(
        draw(BAD_ENUM if "state" in bad else st.sampled_from(TASK_STATES))
    )
    s.timestamp.GetCurrentTime()
    if "time" in bad:
        s.timestamp.seconds, s.timestamp.nanos = draw(INT64), draw(INT32)
    text = st.one_of(WEIRD_TEXT, HUGE_TEXT) if "text" in bad else st.text(max_size=20)
    s.message, s.err = draw(text), draw(text)
    c = s.container_status
    c.container_id, c.pid, c.exit_code = draw(text), draw(INT32), draw(INT32)
    for _ in range(draw(st.integers(0, 2))):
        enum = BAD_ENUM if "ports" in bad else st.integers(0, 1)
        s.port_status.ports.add(
            name=draw(WEIRD_TEXT),
            protocol=draw(enum),
            target_port=draw(UINT32),
            published_port=draw(UINT32),
            publish_mode=draw(enum),
        )
    return s


def test_dispatcher_fuzz(target: Target) -> None:
    """Sessions with odd node descriptions, heartbeats and status reports (odd states,
    times, huge messages) for the node's own tasks and others', from a node with a
    valid certificate."""
    _ensure_services(target)  # the global one gives the new node a task of its own
    worker = target.manager.join_worker()
    node_id = worker.node_id
    over = _budget()
    channel = worker.channel(target.manager.addr)
    stub = dispatcher_pb2_grpc.DispatcherStub(channel)

    @_settings(120)
    @given(data=st.data())
    def agent(data: st.DataObject) -> None:
        request = dispatcher_pb2.SessionRequest(
            node_id=data.draw(st.sampled_from([node_id, "", "x" + node_id[1:]])),
            description=data.draw(descriptions()),
        )
        other_session = data.draw(st.one_of(st.just("nope"), WEIRD_TEXT))
        heartbeat_own = data.draw(st.booleans())
        # (kind: 0-1 own task, 2 another node's, 3 none; index; status)
        updates = data.draw(
            st.lists(st.tuples(st.integers(0, 3), INDEX, task_statuses()), min_size=1, max_size=3)
        )
        if over():  # after the draws: hypothesis wants the same draws when it replays
            return
        stream = stub.Session(request, timeout=CALL_TIMEOUT)
        try:
            try:
                session_id = next(iter(stream)).session_id
                target.seen[("Session", "OK")] += 1
            except grpc.RpcError as err:
                target.seen[("Session", err.code().name)] += 1
                assert err.code() in PROPER, f"Session: {err.code().name}: {err.details()}"  # noqa: PT017
                session_id = other_session
            target.call(
                "Heartbeat",
                stub.Heartbeat,
                dispatcher_pb2.HeartbeatRequest(
                    session_id=session_id if heartbeat_own else other_session
                ),
            )
            tasks = target.manager.tasks()
            own = [t.id for t in tasks if t.node_id == node_id]
            others = [t.id for t in tasks if t.node_id != node_id]
            report = dispatcher_pb2.UpdateTaskStatusRequest(session_id=session_id)
            for kind, index, status in updates:
                pool = own if kind < 2 else others if kind == 2 else []
                task_id = pool[index % len(pool)] if pool else "x"
                report.updates.add(task_id=task_id, status=status)
            target.call("UpdateTaskStatus", stub.UpdateTaskStatus, report)
        finally:
            stream.cancel()
        assert target.manager.process.running

    try:
        agent()
    finally:
        channel.close()
    time.sleep(1)  # status reports are written in the background
    target.alive()
    check_stored(target)
    target.report("dispatcher")


def _garbage(rng: random.Random) -> bytes:
    """Random bytes, or the start of a protocol the servers speak, cut or spoilt."""
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    settings_frame = (
        struct.pack(">I", 6)[1:] + b"\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64"
    )
    tls_hello = bytes.fromhex("16030100a5010000a10303") + rng.randbytes(32)
    options = [
        rng.randbytes(rng.randint(1, 4096)),
        preface[: rng.randint(1, len(preface))],
        preface + rng.randbytes(rng.randint(1, 200)),
        preface + settings_frame + rng.randbytes(rng.randint(0, 100)),
        # A HEADERS frame announcing an absurd length.
        preface + b"\xff\xff\xff\x01\x05\x00\x00\x00\x01" + rng.randbytes(50),
        tls_hello[: rng.randint(1, len(tls_hello))],
        tls_hello + rng.randbytes(rng.randint(1, 300)),
        # A TLS record header announcing 16 KiB that never comes.
        b"\x16\x03\x03\x40\x00" + rng.randbytes(10),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00" * rng.randint(1, 100),
    ]
    return rng.choice(options)


def _blast(
    addr: str | None, path: str | None, rng: random.Random, keep: list[socket.socket]
) -> None:
    family = socket.AF_UNIX if path else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        if path:
            s.connect(path)
        else:
            assert addr is not None
            host, _, port = addr.rpartition(":")
            s.connect((host, int(port)))
        s.sendall(_garbage(rng))
        s.settimeout(0.2)  # whatever the server answers, if anything
        with contextlib.suppress(OSError):
            s.recv(4096)
    except OSError:
        s.close()
        return
    if rng.random() < 0.3:
        keep.append(s)  # left open, half-spoken, while the others go on
    else:
        s.close()


def test_random_bytes_on_the_ports(target: Target) -> None:
    rng = random.Random(int(os.environ.get("SWARMLET_FUZZ_SEED", "1")))
    manager = target.manager
    over = _budget(FUZZ_SECONDS / 2)
    ca_cert = manager.api().GetCluster(control_pb2.GetClusterRequest()).cluster.root_ca.ca_cert
    ca_addr = manager.ca_addr
    admin = manager.state_dir / "admin"
    admin_key, admin_cert = (admin / "key.pem").read_bytes(), (admin / "cert.pem").read_bytes()

    def normal_calls() -> None:
        """A normal call on each of the three surfaces succeeds."""
        target.alive()
        for addr, key, cert in ((manager.addr, admin_key, admin_cert), (ca_addr, None, None)):
            with tls_channel(addr, ca_cert, key, cert) as ch:
                got = _raw_unary(ch, "/swarmlet.NodeCA/GetRootCACertificate")(b"", timeout=10)
                assert ca_pb2.GetRootCACertificateResponse.FromString(got).certificate == ca_cert

    # 1. Raw TCP (and unix socket) garbage: random bytes, cut HTTP/2 and TLS.
    kept: list[socket.socket] = []
    try:
        for i in range(300):
            if over():
                break
            which = i % 3
            _blast(
                manager.addr if which == 0 else ca_addr if which == 1 else None,
                str(manager.socket) if which == 2 else None,
                rng,
                kept,
            )
            if i % 60 == 0:
                normal_calls()
        normal_calls()  # with the half-spoken connections still open
    finally:
        for s in kept:
            s.close()
    normal_calls()

    # 2. Well-formed gRPC calls whose request is random bytes, on every method path.
    over = _budget(FUZZ_SECONDS / 2)
    token = manager.join_token()
    key = pki.new_key()
    with tls_channel(ca_addr, ca_cert) as ch:
        issued = ca_pb2.IssueNodeCertificateResponse.FromString(
            _raw_unary(ch, "/swarmlet.NodeCA/IssueNodeCertificate")(
                ca_pb2.IssueNodeCertificateRequest(
                    csr=pki.make_csr(key), token=token
                ).SerializeToString(),
                timeout=10,
            )
        )
    worker_key, worker_cert = pki.key_pem(key), issued.certificate
    bad_csr = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
    ca_seeds = [b""] + [
        r.SerializeToString()
        for r in (
            ca_pb2.IssueNodeCertificateRequest(csr=pki.make_csr(pki.new_key()), token=token),
            ca_pb2.IssueNodeCertificateRequest(csr=bad_csr, token=token),
            ca_pb2.IssueNodeCertificateRequest(csr=pki.make_csr(pki.new_key()), token="SWMTKN-1-x"),
        )
    ]
    session = dispatcher_pb2.SessionRequest(node_id=issued.node_id)
    session.description.hostname = "fuzz"
    dispatcher_seeds = [b"", session.SerializeToString()]
    surfaces = [
        # (name, address, key, cert, service, methods with kinds, seeds)
        ("CA port", ca_addr, None, None, "NodeCA", ca_seeds),
        ("dispatcher port, worker cert", manager.addr, worker_key, worker_cert, "NodeCA", ca_seeds),
        ("dispatcher port, worker cert", manager.addr, worker_key, worker_cert, "Dispatcher",
         dispatcher_seeds),
        ("dispatcher port, admin cert", manager.addr, admin_key, admin_cert, "Dispatcher",
         dispatcher_seeds),
    ]  # fmt: skip
    streams = {"Session"}
    for name, addr, k, c, service, seeds in surfaces:
        methods = (
            (ca_pb2 if service == "NodeCA" else dispatcher_pb2)
            .DESCRIPTOR.services_by_name[service]
            .methods
        )
        with tls_channel(addr, ca_cert, k, c) as ch:
            for i in range(120):
                if over():
                    break
                m = rng.choice(methods)
                path = f"/swarmlet.{service}/{m.name}"
                fn = _raw_stream(ch, path) if m.name in streams else _raw_unary(ch, path)
                payload = (
                    rng.randbytes(rng.randint(0, 64))
                    if i % 4 == 0
                    else _mutate(rng.choice(seeds), rng)
                )
                _check_raw(target, f"{name} {service}/{m.name}", fn, payload)
            _check_raw(
                target, f"{name} (unknown method)", _raw_unary(ch, f"/swarmlet.{service}/X"), b""
            )
    normal_calls()
    check_stored(target)
    target.report("random bytes on the ports")
