"""The Docker executor: tasks as containers on the local engine, through the docker SDK.

Every SDK call is blocking, so each runs in a dedicated thread pool off the event loop.
Container exits are learnt from one engine event stream (a thread of its own) rather
than a blocked `wait` call per container, so a node with hundreds of tasks does not
need hundreds of threads. Containers are named `<service>.<slot>.<task id>` and labelled
so that a restarted agent finds and adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.utils import parse_repository_tag

from agent.executor.base import (
    AdoptedContainer,
    ExecutorError,
    ExitStatus,
    LogLine,
    RunningInfo,
)
from agent.metrics import ENGINE_CALLS
from agent.network.controller import NetworkController
from agent.network.view import NetworkInfo
from common.api import objects_pb2, types_pb2
from common.log import get_logger
from common.timeutil import duration_seconds

_log = get_logger("executor.docker")
T = TypeVar("T")

LABEL_SERVICE_ID = "swarmlet.service.id"
LABEL_SERVICE_NAME = "swarmlet.service.name"
LABEL_TASK_ID = "swarmlet.task.id"
LABEL_NODE_ID = "swarmlet.node.id"
LABEL_SLOT = "swarmlet.slot"

_PROTOCOLS = {
    types_pb2.PORT_PROTOCOL_TCP: "tcp",
    types_pb2.PORT_PROTOCOL_UDP: "udp",
    types_pb2.PORT_PROTOCOL_SCTP: "sctp",
}
_PROTOCOL_BY_NAME = {v: k for k, v in _PROTOCOLS.items()}


def container_name(task: objects_pb2.Task) -> str:
    suffix = str(task.slot) if task.slot else task.node_id
    return f"{task.service_name}.{suffix}.{task.id}"


def _engine_message(exc: Exception) -> str:
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode(errors="replace")
        return str(explanation or exc)
    return str(exc) or type(exc).__name__


def _parse_log_line(raw: bytes, stderr: bool) -> LogLine:
    """A line as the engine sends it with timestamps: `<RFC 3339 time> <text>`."""
    stamp, _, text = raw.partition(b" ")
    try:
        when = datetime.datetime.fromisoformat(stamp.decode()[:26].rstrip("Z") + "+00:00")
        return LogLine(when.timestamp(), stderr, text)
    except ValueError:
        return LogLine(time.time(), stderr, raw)


def ports_from_inspect(attrs: dict[str, Any]) -> list[types_pb2.PortConfig]:
    """The host ports the engine bound for a container, as PortConfigs."""
    out = []
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for key, bindings in sorted(ports.items()):
        if not bindings:
            continue
        target, _, proto = key.partition("/")
        seen = set()
        for b in bindings:
            host_port = int(b.get("HostPort") or 0)
            if host_port in seen:
                continue  # the same port bound on IPv4 and IPv6
            seen.add(host_port)
            out.append(
                types_pb2.PortConfig(
                    protocol=_PROTOCOL_BY_NAME.get(proto, types_pb2.PORT_PROTOCOL_TCP),
                    target_port=int(target),
                    published_port=host_port,
                    publish_mode=types_pb2.PUBLISH_MODE_HOST,
                )
            )
    return out


class DockerExecutor:
    """Runs tasks on the Docker engine at `base_url`."""

    def __init__(self, base_url: str, *, hostname: str = "", threads: int = 32) -> None:
        self.base_url = base_url
        self.hostname_override = hostname
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="docker")
        # As many pooled connections as threads, so parallel calls do not queue or churn.
        self._client = docker.DockerClient(
            base_url=base_url, version="auto", timeout=120, max_pool_size=threads
        )
        self._exit_waiters: dict[str, list[asyncio.Future[ExitStatus]]] = {}
        self._health_waiters: dict[str, list[asyncio.Future[str]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events_thread: threading.Thread | None = None
        self._events_stream: Any = None
        self._closing = threading.Event()
        self._node_id = ""
        self._rechecks: set[asyncio.Future[None]] = set()
        # The node's network data plane, when the agent runs one (tasks that join
        # networks need it): set by the agent before any task is prepared.
        self.networks: NetworkController | None = None

    @property
    def api(self) -> Any:
        return self._client.api

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking SDK call in the pool; connection failures become ExecutorError."""
        loop = asyncio.get_running_loop()
        try:
            with ENGINE_CALLS.time():
                return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            if isinstance(exc, docker.errors.APIError):
                raise
            raise ExecutorError(f"Docker engine at {self.base_url} unreachable: {exc}") from exc

    # ---- node ---------------------------------------------------------------------

    async def describe(self) -> objects_pb2.NodeDescription:
        info = await self.call(self.api.info)
        desc = objects_pb2.NodeDescription(hostname=self.hostname_override or info.get("Name", ""))
        desc.platform.os = info.get("OSType", "linux")
        desc.platform.architecture = info.get("Architecture", "")
        desc.resources.nano_cpus = int(info.get("NCPU", 0)) * 1_000_000_000
        desc.resources.memory_bytes = int(info.get("MemTotal", 0))
        desc.engine.engine_version = info.get("ServerVersion", "")
        for label in info.get("Labels") or []:
            key, _, value = label.partition("=")
            desc.engine.labels[key] = value
        return desc

    async def adopt(self, node_id: str) -> list[AdoptedContainer]:
        """Start watching exits, then list this node's containers (in that order, so no
        exit falls between the two)."""
        self._node_id = node_id
        self._start_events()
        found = await self.call(
            self.api.containers, all=True, filters={"label": f"{LABEL_NODE_ID}={node_id}"}
        )
        adopted = []
        for summary in found:
            try:
                attrs = await self.call(self.api.inspect_container, summary["Id"])
            except docker.errors.NotFound:
                continue
            state = attrs["State"]
            if state.get("Running"):
                kind = "running"
            elif state.get("Status") == "created":
                kind = "created"
            else:
                kind = "exited"
            adopted.append(
                AdoptedContainer(
                    task_id=attrs["Config"]["Labels"].get(LABEL_TASK_ID, ""),
                    container_id=attrs["Id"],
                    state=kind,
                    exit_code=int(state.get("ExitCode") or 0),
                    pid=int(state.get("Pid") or 0),
                    ports=ports_from_inspect(attrs),
                )
            )
        return adopted

    async def node_containers(self, node_id: str) -> dict[str, str]:
        found = await self.call(
            self.api.containers, all=True, filters={"label": f"{LABEL_NODE_ID}={node_id}"}
        )
        return {c["Id"]: (c.get("Labels") or {}).get(LABEL_TASK_ID, "") for c in found}

    async def ping(self) -> None:
        try:
            await self.call(self.api.ping)
        except docker.errors.APIError as exc:
            raise ExecutorError(_engine_message(exc)) from exc

    def controller(
        self, task: objects_pb2.Task, node_id: str, container_id: str = ""
    ) -> DockerController:
        controller = DockerController(self, task, node_id)
        controller.container_id = container_id
        return controller

    async def close(self) -> None:
        self._closing.set()
        stream = self._events_stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self._client.close()

    # ---- exits --------------------------------------------------------------------

    def exit_future(self, container_id: str) -> asyncio.Future[ExitStatus]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ExitStatus] = loop.create_future()
        self._exit_waiters.setdefault(container_id, []).append(fut)
        return fut

    def _resolve_exit(self, container_id: str, status: ExitStatus) -> None:
        for fut in self._exit_waiters.pop(container_id, []):
            if not fut.done():
                fut.set_result(status)

    def health_future(self, container_id: str) -> asyncio.Future[str]:
        """Resolves with the container's next health status ("healthy", "unhealthy")."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._health_waiters.setdefault(container_id, []).append(fut)
        return fut

    def _resolve_health(self, container_id: str, status: str) -> None:
        for fut in self._health_waiters.pop(container_id, []):
            if not fut.done():
                fut.set_result(status)

    def _start_events(self) -> None:
        if self._events_thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._events_thread = threading.Thread(
            target=self._events_loop, name="docker-events", daemon=True
        )
        self._events_thread.start()

    def _events_loop(self) -> None:
        """Follow the engine's container events; after a reconnect, check every container
        someone waits for, since exits may have happened while the stream was down."""
        assert self._loop is not None
        backoff = 0.2
        first = True
        while not self._closing.is_set():
            try:
                self._events_stream = self.api.events(
                    decode=True,
                    filters={
                        "type": "container",
                        "event": ["die", "destroy", "health_status"],
                        "label": [f"{LABEL_NODE_ID}={self._node_id}"],
                    },
                )
                if not first:
                    self._loop.call_soon_threadsafe(self._recheck_waiters)
                first = False
                backoff = 0.2
                for event in self._events_stream:
                    cid = event.get("id") or event.get("Actor", {}).get("ID", "")
                    attrs = event.get("Actor", {}).get("Attributes", {})
                    action = str(event.get("Action", ""))
                    if action.startswith("health_status"):
                        health = action.partition(":")[2].strip()
                        self._loop.call_soon_threadsafe(self._resolve_health, cid, health)
                        continue
                    if action == "die":
                        status = ExitStatus(int(attrs.get("exitCode", "0") or 0))
                    else:
                        status = ExitStatus(-1, "container was removed")
                    self._loop.call_soon_threadsafe(self._resolve_exit, cid, status)
            except Exception as exc:  # the stream breaks when the engine restarts
                if self._closing.is_set():
                    return
                _log.warning(
                    "docker event stream lost; reconnecting", error=str(exc), retry_in=backoff
                )
            if self._closing.is_set():
                return
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
            first = False

    def _recheck_waiters(self) -> None:
        for cid in list(self._exit_waiters):
            task = asyncio.ensure_future(self._recheck(cid))
            self._rechecks.add(task)
            task.add_done_callback(self._rechecks.discard)

    async def _recheck(self, container_id: str) -> None:
        try:
            attrs = await self.call(self.api.inspect_container, container_id)
        except docker.errors.NotFound:
            self._resolve_exit(container_id, ExitStatus(-1, "container was removed"))
            return
        except ExecutorError:
            return
        state = attrs["State"]
        if not state.get("Running"):
            self._resolve_exit(container_id, _exit_from_state(state))


def _exit_from_state(state: dict[str, Any]) -> ExitStatus:
    error = state.get("Error") or ""
    if state.get("OOMKilled"):
        error = "container killed: out of memory"
    return ExitStatus(int(state.get("ExitCode") or 0), error)


@dataclass(frozen=True)
class Join:
    """An engine network a task's container joins, and its address there."""

    engine_network: str
    address: str
    aliases: list[str]
    network: NetworkInfo


class DockerController:
    """One task's container."""

    def __init__(self, executor: DockerExecutor, task: objects_pb2.Task, node_id: str) -> None:
        self.executor = executor
        self.task = task
        self.node_id = node_id
        self.name = container_name(task)
        self.container_id = ""

    @property
    def api(self) -> Any:
        return self.executor.api

    async def _find(self) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = await self.executor.call(
                self.api.inspect_container, self.container_id or self.name
            )
        except docker.errors.NotFound:
            return None
        self.container_id = attrs["Id"]
        return attrs

    async def exists(self) -> bool:
        return await self._find() is not None

    async def _joins(self) -> list[Join]:
        """The engine networks the task's container joins, with its address on each:
        the task's own networks first (the first gives the container its resolver),
        the ingress last. Each is made on this engine if missing."""
        if not self.task.networks:
            return []
        controller = self.executor.networks
        if controller is None or controller.engine is None:
            raise ExecutorError("this agent runs no network data plane: the task joins networks")
        wanted = [a.network_id for a in self.task.networks]
        try:
            await controller.wait_for_networks(wanted)
        except TimeoutError:
            raise ExecutorError(f"networks {', '.join(wanted)} unknown to this node") from None
        joins = []
        for attachment in self.task.networks:
            net = controller.network(attachment.network_id)
            assert net is not None
            name = await controller.engine.ensure(net)
            address = attachment.addresses[0].split("/")[0]
            joins.append(Join(name, address, list(attachment.aliases), net))
        joins.sort(key=lambda j: j.network.ingress)
        return joins

    async def prepare(self) -> None:
        # Straight to create, the common case: one engine call. A missing image is pulled
        # and the create tried again; a name already taken is our earlier attempt.
        joins = await self._joins()
        args = self._create_args(joins)
        for attempt in range(2):
            try:
                created = await self.executor.call(self.api.create_container, **args)
            except docker.errors.ImageNotFound:
                if attempt:
                    raise ExecutorError(
                        f"No such image: {args['image']} (it vanished right after the pull)"
                    ) from None
                await self._pull(args["image"])
                continue
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and await self._find() is not None:
                    return  # created by an earlier attempt
                raise ExecutorError(f"creating container failed: {_engine_message(exc)}") from exc
            self.container_id = created["Id"]
            await self._connect_rest(joins)
            return

    async def _connect_rest(self, joins: list[Join]) -> None:
        """Networks beyond the first are joined before the start (API 1.41 takes one at
        create)."""
        for join in joins[1:]:
            try:
                await self.executor.call(
                    self.api.connect_container_to_network,
                    self.container_id,
                    join.engine_network,
                    ipv4_address=join.address,
                    aliases=join.aliases or None,
                )
            except docker.errors.APIError as exc:
                raise ExecutorError(
                    f"joining network {join.network.name} failed: {_engine_message(exc)}"
                ) from exc

    async def _pull(self, image: str) -> None:
        repository, tag = parse_repository_tag(image)

        def pull() -> None:
            for line in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if "error" in line:
                    raise ExecutorError(str(line.get("error")))

        try:
            await self.executor.call(pull)
            await self.executor.call(self.api.inspect_image, image)
        except (docker.errors.APIError, ExecutorError) as exc:
            message = _engine_message(exc) if isinstance(exc, docker.errors.APIError) else str(exc)
            raise ExecutorError(f"No such image: {image} (pull failed: {message})") from exc

    def _create_args(self, joins: list[Join] | None = None) -> dict[str, Any]:
        task = self.task
        spec = task.spec.container
        labels = dict(spec.labels)
        labels.update(
            {
                LABEL_SERVICE_ID: task.service_id,
                LABEL_SERVICE_NAME: task.service_name,
                LABEL_TASK_ID: task.id,
                LABEL_NODE_ID: self.node_id,
                LABEL_SLOT: str(task.slot),
            }
        )
        # Ports published in ingress mode are the routing mesh's (every node's nftables
        # table), not this container's host ports.
        host_ports = [
            p for p in task.endpoint.ports if p.publish_mode == types_pb2.PUBLISH_MODE_HOST
        ]
        ports = [(p.target_port, _PROTOCOLS[p.protocol]) for p in host_ports]
        bindings: dict[str, Any] = {}
        for p in host_ports:
            bindings[f"{p.target_port}/{_PROTOCOLS[p.protocol]}"] = [
                ("0.0.0.0", p.published_port or None)
            ]
        resources = task.spec.resources.limits
        first = joins[0] if joins else None
        host_config = self.api.create_host_config(
            network_mode=first.engine_network if first else None,
            # The engine's embedded DNS passes what it does not know to the agent's
            # server on the network's gateway: service names, tasks.NAME, aliases.
            dns=[str(first.network.gateway)] if first and not first.network.ingress else None,
            port_bindings=bindings or None,
            init=spec.init or None,
            nano_cpus=resources.nano_cpus or None,
            mem_limit=resources.memory_bytes or None,
        )
        healthcheck = None
        if spec.HasField("healthcheck"):
            hc = spec.healthcheck
            healthcheck = {
                "test": list(hc.test),
                "interval": int(duration_seconds(hc.interval) * 1e9) or None,
                "timeout": int(duration_seconds(hc.timeout) * 1e9) or None,
                "retries": hc.retries or None,
                "start_period": int(duration_seconds(hc.start_period) * 1e9) or None,
            }
        return {
            "image": spec.image,
            "command": list(spec.args) or None,
            "entrypoint": list(spec.command) or None,
            "environment": list(spec.env) or None,
            "labels": labels,
            "name": self.name,
            "hostname": spec.hostname or None,
            "user": spec.user or None,
            "working_dir": spec.dir or None,
            "tty": spec.tty,
            "stop_signal": spec.stop_signal or None,
            "healthcheck": healthcheck,
            "ports": ports or None,
            "host_config": host_config,
            "networking_config": self.api.create_networking_config(
                {
                    first.engine_network: self.api.create_endpoint_config(
                        ipv4_address=first.address, aliases=first.aliases or None
                    )
                }
            )
            if first
            else None,
        }

    async def start(self) -> RunningInfo:
        if not self.container_id and await self._find() is None:
            raise ExecutorError("container to start does not exist")
        try:
            await self.executor.call(self.api.start, self.container_id)
        except docker.errors.APIError as exc:
            raise ExecutorError(f"starting container failed: {_engine_message(exc)}") from exc
        if self.task.networks and self.executor.networks is not None:
            # Its bridge port is new: the data plane sets it up (hairpin mode).
            self.executor.networks.poke()
        if not self.task.endpoint.ports:
            return RunningInfo(self.container_id)
        # Ask which host ports the engine bound (one more call, only when ports are published).
        attrs = await self._find()
        if attrs is None:
            raise ExecutorError("container vanished right after it was started")
        return RunningInfo(
            self.container_id, int(attrs["State"].get("Pid") or 0), ports_from_inspect(attrs)
        )

    async def health(self) -> str | None:
        """The container's health ("starting", "healthy", "unhealthy"), None without a
        health check (neither in the spec nor in the image)."""
        attrs = await self._find()
        if attrs is None:
            return None
        health = attrs["State"].get("Health")
        return str(health.get("Status")) if health else None

    def next_health(self) -> asyncio.Future[str]:
        return self.executor.health_future(self.container_id)

    async def logs(self, *, follow: bool, tail: int, since: float) -> AsyncIterator[LogLine]:
        """The container's lines from the engine, stdout and stderr read side by side."""
        if not self.container_id and await self._find() is None:
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[LogLine | None] = asyncio.Queue(10_000)
        streams: list[Any] = []
        stopped = threading.Event()

        def read(stderr: bool) -> None:
            try:
                stream = self.api.logs(
                    self.container_id, stdout=not stderr, stderr=stderr, stream=True,
                    follow=follow, timestamps=True, tail="all" if tail < 0 else tail,
                    since=int(since) if since else None,
                )  # fmt: skip
                streams.append(stream)
                pending = b""
                for chunk in stream:
                    if stopped.is_set():
                        break
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        line = _parse_log_line(raw, stderr)
                        loop.call_soon_threadsafe(queue.put_nowait, line)
                if pending:
                    loop.call_soon_threadsafe(queue.put_nowait, _parse_log_line(pending, stderr))
            except Exception as exc:  # the container went away, or the engine did
                _log.debug("log stream ended", container=self.container_id, error=str(exc))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        readers = [loop.run_in_executor(self.executor._pool, read, e) for e in (False, True)]
        open_streams = 2
        try:
            while open_streams:
                line = await queue.get()
                if line is None:
                    open_streams -= 1
                    continue
                yield line
        finally:
            stopped.set()
            for s in streams:
                with contextlib.suppress(Exception):
                    s.close()
            for r in readers:
                r.cancel()

    async def wait(self) -> ExitStatus:
        future = self.executor.exit_future(self.container_id)
        # The process may have ended before we started listening.
        attrs = await self._find()
        if attrs is None:
            future.cancel()
            return ExitStatus(-1, "container was removed")
        if not attrs["State"].get("Running") and attrs["State"].get("Status") != "created":
            future.cancel()
            return _exit_from_state(attrs["State"])
        return await future

    def watch_exit(self) -> asyncio.Future[ExitStatus]:
        return asyncio.ensure_future(self.wait())

    async def shutdown(self, grace: float) -> None:
        if not self.container_id and await self._find() is None:
            return
        try:
            await self.executor.call(self.api.stop, self.container_id, timeout=max(0, round(grace)))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise ExecutorError(f"stopping container failed: {_engine_message(exc)}") from exc

    async def remove(self) -> None:
        if not self.container_id and await self._find() is None:
            return
        try:
            await self.executor.call(self.api.remove_container, self.container_id, force=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409:  # removal already in progress
                return
            raise ExecutorError(f"removing container failed: {_engine_message(exc)}") from exc
