"""The connection to a manager's control API.

swarmctl finds the manager through `-H/--host` or `SWARMCTL_HOST`, defaulting to the
local manager's control socket. An address is `unix:///path`, a bare path, or
`host:port` (also `tcp://host:port`) for TCP. Calls are synchronous gRPC (a CLI makes
one call at a time, and Ctrl-C interrupts a blocking call), each with a deadline, and
every gRPC error becomes a `SwarmctlError` carrying the server's message.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import Message

from common.api import control_pb2, control_pb2_grpc, logs_pb2, objects_pb2, specs_pb2
from common.log import get_logger
from swarmctl.errors import (
    ManagerUnreachable,
    NotControlAPI,
    NotFound,
    SwarmctlError,
    TLSFailure,
)
from swarmctl.tlscheck import check_files, handshake_problem

DEFAULT_HOST = "unix:///var/lib/swarmlet/manager/control.sock"
HOST_ENV = "SWARMCTL_HOST"
# Deadline of one call. Every control call is a short read or one store transaction.
CALL_TIMEOUT = 30.0

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d+)$")
# What gRPC says when it could not open a connection at all (as opposed to a server
# answering UNAVAILABLE because etcd is down).
_CONNECT_FAILURE = re.compile(
    r"failed to connect|connect failed|errors resolving|DNS resolution failed|"
    r"Connection refused|Socket closed|Connection reset|Broken pipe",
    re.IGNORECASE,
)


_CONTROL = control_pb2.DESCRIPTOR.services_by_name["Control"].full_name
M = TypeVar("M", bound=Message)

# Every manager's certificate carries this name (common/pki.py SERVER_NAME).
SERVER_NAME = "swarmlet-manager"


@dataclass(frozen=True)
class TLSFiles:
    """An admin client certificate, for the control API over TCP (mutual TLS)."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def load(cls, ca: str, cert: str, key: str) -> TLSFiles | None:
        """Read the three PEM files; None when none is given. ValueError names what is
        wrong (a file missing, unreadable, not PEM, or a key not the certificate's)."""
        given = [p for p in (ca, cert, key) if p]
        if not given:
            return None
        if len(given) != 3:
            raise ValueError(
                "give all of --tlscacert, --tlscert and --tlskey (an admin certificate: a "
                "manager writes one to <state-dir>/admin/ca.pem, cert.pem and key.pem)"
            )
        try:
            files = cls(*(Path(p).read_bytes() for p in (ca, cert, key)))
        except OSError as exc:
            raise ValueError(f"cannot read {exc.filename}: {exc.strerror}") from None
        check_files(files.ca, files.cert, files.key, ("--tlscacert", "--tlscert", "--tlskey"))
        return files


@dataclass(frozen=True)
class ManagerAddress:
    """Where a manager's control API listens: `display` for messages, `target` for gRPC."""

    display: str
    target: str
    socket_path: str | None = None

    @classmethod
    def parse(cls, text: str) -> ManagerAddress:
        """Parse `unix:///path`, a bare path, `host:port` or `tcp://host:port`.

        Raises ValueError saying what is accepted.
        """
        value = text.strip()
        if not value:
            raise ValueError("the manager address is empty")
        if value.startswith("unix://"):
            return cls._unix(value.removeprefix("unix://"), text)
        if value.startswith("unix:"):
            return cls._unix(value.removeprefix("unix:"), text)
        if value.startswith("tcp://"):
            hostport = value.removeprefix("tcp://").rstrip("/")
            if not _HOST_PORT.match(hostport):
                raise ValueError(f"invalid manager address {text!r}: expected tcp://HOST:PORT")
            return cls(display=f"tcp://{hostport}", target=hostport)
        if "://" in value:
            scheme = value.split("://", 1)[0]
            raise ValueError(
                f"invalid manager address {text!r}: unsupported scheme {scheme!r}; "
                "use unix:///path/to/control.sock, a socket path, or HOST:PORT"
            )
        if not value.startswith(("/", ".", "~")) and _HOST_PORT.match(value):
            return cls(display=f"tcp://{value}", target=value)
        return cls._unix(value, text)

    @classmethod
    def _unix(cls, path: str, text: str) -> ManagerAddress:
        if not path:
            raise ValueError(f"invalid manager address {text!r}: the socket path is empty")
        absolute = os.path.abspath(os.path.expanduser(path))
        return cls(display=f"unix://{absolute}", target=f"unix://{absolute}", socket_path=absolute)

    def unreachable_reason(self, details: str) -> str:
        """Why nothing answered here, in a few words, from what gRPC said and the socket."""
        if self.socket_path is not None:
            if not os.path.exists(self.socket_path):
                return "no such socket"
            if not os.access(self.socket_path, os.R_OK | os.W_OK):
                return "permission denied; the control socket is for root"
        lowered = details.lower()
        if "connection refused" in lowered:
            return "connection refused"
        if "resolving" in lowered or "dns" in lowered or "name not found" in lowered:
            return "cannot resolve the host name"
        if "permission denied" in lowered:
            return "permission denied"
        if "socket closed" in lowered or "connection reset" in lowered:
            return "the connection was closed"
        last = details.rsplit(": ", 1)[-1].strip()
        return last or "unavailable"


class ControlClient:
    """Typed, synchronous calls of the `swarmlet.Control` service on one manager.

    The channel opens on the first call; `close()` (or leaving a `with` block) ends it.
    """

    def __init__(
        self,
        address: ManagerAddress,
        *,
        call_timeout: float = CALL_TIMEOUT,
        debug: bool = False,
        tls: TLSFiles | None = None,
    ) -> None:
        self.address = address
        self.tls = tls
        self.call_timeout = call_timeout
        # Only with --debug: swarmctl configures logging for that case alone.
        self._log = get_logger("swarmctl", manager=address.display) if debug else None
        self._channel: Any = None
        self._stub: Any = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
            self._stub = None

    def _call(self, method: str, request: Message) -> Any:
        if self._stub is None:
            self._channel = self._open()
            self._stub = control_pb2_grpc.ControlStub(self._channel)
        started = time.monotonic()
        try:
            response = getattr(self._stub, method)(request, timeout=self.call_timeout)
        except grpc.RpcError as exc:
            if self._log is not None:
                code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
                details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
                self._log.debug("call failed", method=method, code=code, details=details)
            raise self._translate(exc) from None
        if self._log is not None:
            took = round((time.monotonic() - started) * 1000, 1)
            self._log.debug("call", method=method, ms=took)
        return response

    def _list(self, method: str, request: Message, response_type: type[M]) -> M:
        """The answer of a list call, through its stream (`method` + "Stream"): no size
        limit. The stream's messages are parts of one response (protos/control.proto,
        "Lists"), so their bytes are joined and decoded once. A manager without the
        stream (UNIMPLEMENTED: an older one) is asked the unary way."""
        if self._stub is None:
            self._channel = self._open()
            self._stub = control_pb2_grpc.ControlStub(self._channel)
        started = time.monotonic()
        call = self._channel.unary_stream(
            f"/{_CONTROL}/{method}Stream",
            request_serializer=type(request).SerializeToString,
            response_deserializer=None,  # the bytes as they came
        )(request, timeout=self.call_timeout)
        try:
            data = b"".join(call)
        except grpc.RpcError as exc:
            if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                response: M = self._call(method, request)
                return response
            if self._log is not None and isinstance(exc, grpc.Call):
                self._log.debug(
                    "call failed", method=method, code=exc.code().name, details=exc.details()
                )
            raise self._translate(exc) from None
        if self._log is not None:
            took = round((time.monotonic() - started) * 1000, 1)
            self._log.debug("call", method=f"{method}Stream", ms=took, bytes=len(data))
        return response_type.FromString(data)

    def _stream(self, method: str, request: Message, timeout: float | None) -> Iterator[Any]:
        """The messages of a server stream, until the manager ends it.

        With `timeout` the stream ends quietly after that long (the deadline passing is
        not an error). Leaving the loop early (or Ctrl-C) cancels the call.
        """
        if self._stub is None:
            self._channel = self._open()
            self._stub = control_pb2_grpc.ControlStub(self._channel)
        if self._log is not None:
            self._log.debug("stream", method=method, timeout=timeout)
        call = getattr(self._stub, method)(request, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as exc:
            if (
                timeout is not None
                and isinstance(exc, grpc.Call)
                and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            ):
                return
            if self._log is not None and isinstance(exc, grpc.Call):
                self._log.debug(
                    "stream failed", method=method, code=exc.code().name, details=exc.details()
                )
            raise self._stream_error(exc) from None
        finally:
            call.cancel()

    def _stream_error(self, exc: Exception) -> SwarmctlError:
        if isinstance(exc, grpc.Call) and exc.code() == grpc.StatusCode.CANCELLED:
            return SwarmctlError(f"the manager at {self.address.display} ended the stream")
        return self._translate(exc)

    def _open(self) -> Any:
        if self.address.socket_path is not None:
            return grpc.insecure_channel(self.address.target)
        if self.tls is None:
            raise SwarmctlError(
                f"the control API at {self.address.display} is mutual TLS only: give "
                "--tlscacert, --tlscert and --tlskey (or SWARMCTL_TLSCACERT, SWARMCTL_TLSCERT, "
                "SWARMCTL_TLSKEY) with an admin certificate from <state-dir>/admin/ on a manager"
            )
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.tls.ca, private_key=self.tls.key, certificate_chain=self.tls.cert
        )
        return grpc.secure_channel(
            self.address.target,
            credentials,
            options=[("grpc.ssl_target_name_override", SERVER_NAME)],
        )

    def _translate(self, exc: Exception) -> SwarmctlError:
        """The user-facing error for a failed call."""
        if isinstance(exc, grpc.Call):
            code, details = exc.code(), exc.details() or ""
        else:  # pragma: no cover - every RpcError of a unary call is also a Call
            code, details = grpc.StatusCode.UNKNOWN, str(exc)
        if code == grpc.StatusCode.UNIMPLEMENTED:
            # Every control method exists on a manager: a server without them is another
            # gRPC service, a manager's dispatcher or CA port most likely.
            return NotControlAPI(self.address.display)
        problem = handshake_problem(details) if self.tls is not None else None
        if code == grpc.StatusCode.UNAVAILABLE and problem is not None:
            return TLSFailure(self.address.display, problem)
        if code == grpc.StatusCode.UNAVAILABLE and (
            not details or _CONNECT_FAILURE.search(details)
        ):
            return ManagerUnreachable(
                self.address.display, self.address.unreachable_reason(details)
            )
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return SwarmctlError(
                f"the manager at {self.address.display} did not answer within "
                f"{self.call_timeout:g}s"
            )
        if not details:
            return SwarmctlError(f"the manager answered {code.name}")
        if code == grpc.StatusCode.NOT_FOUND:
            return NotFound(details)
        return SwarmctlError(details)

    # Nodes

    def get_node(self, ref: str) -> objects_pb2.Node:
        """The node named by id, unique id prefix or hostname."""
        resp: control_pb2.GetNodeResponse = self._call(
            "GetNode", control_pb2.GetNodeRequest(node_id=ref)
        )
        return resp.node

    def list_nodes(
        self, filters: control_pb2.ListNodesRequest.Filters | None = None
    ) -> list[objects_pb2.Node]:
        resp = self._list(
            "ListNodes",
            control_pb2.ListNodesRequest(filters=filters),
            control_pb2.ListNodesResponse,
        )
        return list(resp.nodes)

    def update_node(self, node_id: str, version: int, spec: specs_pb2.NodeSpec) -> objects_pb2.Node:
        resp: control_pb2.UpdateNodeResponse = self._call(
            "UpdateNode",
            control_pb2.UpdateNodeRequest(node_id=node_id, node_version=version, spec=spec),
        )
        return resp.node

    def remove_node(self, ref: str, *, force: bool = False) -> None:
        self._call("RemoveNode", control_pb2.RemoveNodeRequest(node_id=ref, force=force))

    # Networks

    def create_network(self, spec: specs_pb2.NetworkSpec) -> objects_pb2.Network:
        resp: control_pb2.CreateNetworkResponse = self._call(
            "CreateNetwork", control_pb2.CreateNetworkRequest(spec=spec)
        )
        return resp.network

    def get_network(self, ref: str) -> objects_pb2.Network:
        """The network named by id, unique id prefix or name."""
        resp: control_pb2.GetNetworkResponse = self._call(
            "GetNetwork", control_pb2.GetNetworkRequest(network_id=ref)
        )
        return resp.network

    def list_networks(
        self, filters: control_pb2.ListNetworksRequest.Filters | None = None
    ) -> list[objects_pb2.Network]:
        resp: control_pb2.ListNetworksResponse = self._call(
            "ListNetworks", control_pb2.ListNetworksRequest(filters=filters)
        )
        return list(resp.networks)

    def remove_network(self, ref: str) -> None:
        self._call("RemoveNetwork", control_pb2.RemoveNetworkRequest(network_id=ref))

    def prune_networks(self) -> list[str]:
        resp: control_pb2.PruneNetworksResponse = self._call(
            "PruneNetworks", control_pb2.PruneNetworksRequest()
        )
        return list(resp.removed)

    # Tasks

    def get_task(self, ref: str) -> objects_pb2.Task:
        resp: control_pb2.GetTaskResponse = self._call(
            "GetTask", control_pb2.GetTaskRequest(task_id=ref)
        )
        return resp.task

    def list_tasks(
        self, filters: control_pb2.ListTasksRequest.Filters | None = None
    ) -> list[objects_pb2.Task]:
        resp = self._list(
            "ListTasks",
            control_pb2.ListTasksRequest(filters=filters),
            control_pb2.ListTasksResponse,
        )
        return list(resp.tasks)

    # Services

    def create_service(self, spec: specs_pb2.ServiceSpec) -> objects_pb2.Service:
        resp: control_pb2.CreateServiceResponse = self._call(
            "CreateService", control_pb2.CreateServiceRequest(spec=spec)
        )
        return resp.service

    def preview_create(self, spec: specs_pb2.ServiceSpec) -> control_pb2.PlacementPreview:
        """Where the tasks of a new service would go (CreateService with dry_run)."""
        resp: control_pb2.CreateServiceResponse = self._call(
            "CreateService", control_pb2.CreateServiceRequest(spec=spec, dry_run=True)
        )
        return resp.preview

    def get_service(self, ref: str) -> objects_pb2.Service:
        """The service named by id, unique id prefix or name."""
        resp: control_pb2.GetServiceResponse = self._call(
            "GetService", control_pb2.GetServiceRequest(service_id=ref)
        )
        return resp.service

    def list_services(
        self, filters: control_pb2.ListServicesRequest.Filters | None = None
    ) -> control_pb2.ListServicesResponse:
        return self._list(
            "ListServices",
            control_pb2.ListServicesRequest(filters=filters),
            control_pb2.ListServicesResponse,
        )

    def update_service(
        self,
        service_id: str,
        version: int,
        spec: specs_pb2.ServiceSpec,
        *,
        rollback: bool = False,
    ) -> objects_pb2.Service:
        resp: control_pb2.UpdateServiceResponse = self._call(
            "UpdateService",
            control_pb2.UpdateServiceRequest(
                service_id=service_id, service_version=version, spec=spec, rollback=rollback
            ),
        )
        return resp.service

    def preview_update(
        self,
        service_id: str,
        version: int,
        spec: specs_pb2.ServiceSpec,
        *,
        rollback: bool = False,
    ) -> control_pb2.PlacementPreview:
        """Where the tasks of the updated service would go (UpdateService with dry_run)."""
        resp: control_pb2.UpdateServiceResponse = self._call(
            "UpdateService",
            control_pb2.UpdateServiceRequest(
                service_id=service_id,
                service_version=version,
                spec=spec,
                rollback=rollback,
                dry_run=True,
            ),
        )
        return resp.preview

    def remove_service(self, ref: str) -> None:
        self._call("RemoveService", control_pb2.RemoveServiceRequest(service_id=ref))

    def rebalance_service(self, ref: str) -> objects_pb2.Service:
        """Ask for the service's tasks to be evened out; returns it, rebalance_requested up."""
        resp: control_pb2.RebalanceServiceResponse = self._call(
            "RebalanceService", control_pb2.RebalanceServiceRequest(service_id=ref)
        )
        return resp.service

    # Logs and events

    def service_logs(
        self,
        *,
        service_ids: list[str],
        task_ids: list[str],
        options: logs_pb2.LogOptions,
    ) -> Iterator[control_pb2.ServiceLogsMessage]:
        """Batches of lines of the tasks of the services (and of the tasks), from every
        node; without options.follow the stream ends once every node sent its lines."""
        request = control_pb2.ServiceLogsRequest(
            service_ids=service_ids, task_ids=task_ids, options=options
        )
        return self._stream("ServiceLogs", request, None)

    def watch_events(
        self,
        *,
        types: list[str],
        since: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[control_pb2.EventMessage]:
        """Changes to services, tasks and nodes (`types`, none for all) as they happen,
        after those since `since` (seconds since the epoch) the manager remembers; the
        stream ends after `timeout` seconds, or never."""
        request = control_pb2.WatchEventsRequest(types=types)
        if since is not None:
            request.since.FromNanoseconds(round(since * 1e9))
        return self._stream("WatchEvents", request, timeout)

    # Cluster

    def get_cluster(self) -> objects_pb2.Cluster:
        resp: control_pb2.GetClusterResponse = self._call(
            "GetCluster", control_pb2.GetClusterRequest()
        )
        return resp.cluster

    def manager_addrs(self) -> list[str]:
        resp: control_pb2.GetClusterResponse = self._call(
            "GetCluster", control_pb2.GetClusterRequest()
        )
        return list(resp.manager_addrs)

    def rotate_join_token(self, role: str) -> objects_pb2.Cluster:
        cluster = self.get_cluster()
        resp: control_pb2.UpdateClusterResponse = self._call(
            "UpdateCluster",
            control_pb2.UpdateClusterRequest(
                cluster_version=cluster.meta.version,
                spec=cluster.spec,
                rotate_worker_token=role == "worker",
                rotate_manager_token=role == "manager",
            ),
        )
        return resp.cluster

    def update_cluster(self, version: int, spec: specs_pb2.ClusterSpec) -> objects_pb2.Cluster:
        resp: control_pb2.UpdateClusterResponse = self._call(
            "UpdateCluster", control_pb2.UpdateClusterRequest(cluster_version=version, spec=spec)
        )
        return resp.cluster
