"""Connecting to etcd through etcd3aio, and turning its failures into store errors.

Kept apart so the client library can be swapped without touching the store logic.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from etcd3aio import (
    Etcd3Client,
    EtcdConnectionError,
    EtcdError,
    EtcdPermissionDeniedError,
    EtcdTransientError,
    EtcdUnauthenticatedError,
)

from manager.store.errors import StoreError, StoreUnavailableError, TooLargeError

# Watch responses and paginated lists of many tasks exceed gRPC's 4 MiB default.
_MAX_MESSAGE = 64 * 1024 * 1024


@dataclass
class EtcdConfig:
    """Where etcd is and how to authenticate to it."""

    endpoints: list[str]
    ca_cert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    user: str | None = None
    password: str | None = None
    timeout: float = 5.0
    tls_server_name: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return ",".join(self.endpoints)


def normalise_endpoint(url: str) -> str:
    """`http://h:p`, `https://h:p` or `h:p` as the `h:p` etcd3aio takes."""
    url = url.strip()
    for scheme in ("http://", "https://"):
        if url.startswith(scheme):
            url = url[len(scheme) :]
    return url.rstrip("/")


def unix_socket(url: str) -> str | None:
    """The socket path of a `unix:///path` (or `unix:/path`) endpoint, else None."""
    url = url.strip()
    if not url.startswith("unix:"):
        return None
    return "/" + url[len("unix:") :].lstrip("/")


def grpc_target(endpoints: list[str]) -> str | None:
    """The gRPC target for unix socket endpoints (the embedded etcd's), else None.

    etcd3aio only builds `ipv4:h:p,...` targets; a unix socket is given to gRPC as
    `unix:/path`. One socket only: there is no list form for unix targets.
    """
    sockets = [unix_socket(e) for e in endpoints]
    if not any(sockets):
        return None
    if len(endpoints) != 1:
        raise StoreError(
            f"etcd endpoints {','.join(endpoints)}: a unix socket endpoint must be the only one"
        )
    return f"unix:{sockets[0]}"


@contextlib.asynccontextmanager
async def connect(config: EtcdConfig) -> AsyncIterator[Etcd3Client]:
    """A connected client, checked with a read; StoreUnavailableError names the endpoints."""
    tls: dict[str, bytes | None] = {}
    if config.ca_cert:
        tls["ca_cert"] = config.ca_cert.read_bytes()
    if config.cert and config.key:
        tls["cert_chain"] = config.cert.read_bytes()
        tls["cert_key"] = config.key.read_bytes()
    target = grpc_target(config.endpoints)
    client = Etcd3Client(
        ["localhost:2379"] if target else [normalise_endpoint(e) for e in config.endpoints],
        tls_server_name=config.tls_server_name,
        rpc_max_attempts=2,
        watch_max_reconnect_backoff_seconds=1.0,
        **tls,  # type: ignore[arg-type]
    )
    if target:
        client._manager.target = target
    client._manager.grpc_options += [
        ("grpc.max_receive_message_length", _MAX_MESSAGE),
        ("grpc.max_send_message_length", _MAX_MESSAGE),
    ]
    await client.connect()
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                if config.user:
                    # Authenticate first: with auth on, etcd refuses even the probe read.
                    await stack.enter_async_context(
                        client.token_refresher(config.user, config.password or "")
                    )
                assert client.kv is not None
                await client.kv.get("/", timeout=config.timeout)
            except (EtcdError, TimeoutError, grpc.aio.AioRpcError) as exc:
                raise StoreUnavailableError(
                    f"etcd at {config.display} did not answer: {describe(exc)}"
                ) from exc
            yield client
    finally:
        await client.close()


def describe(exc: BaseException) -> str:
    """A one-line description of an etcd failure."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def translate(exc: BaseException, endpoints: str) -> StoreError:
    """The store error for an etcd3aio or gRPC failure."""
    if isinstance(exc, EtcdConnectionError | EtcdTransientError | TimeoutError):
        return StoreUnavailableError(f"etcd at {endpoints} is unavailable: {describe(exc)}")
    if isinstance(exc, EtcdUnauthenticatedError | EtcdPermissionDeniedError):
        return StoreError(f"etcd at {endpoints} refused the request: {describe(exc)}")
    text = describe(exc)
    if "request is too large" in text or "larger than max" in text:
        # Not the space quota (gRPC's own size limit is RESOURCE_EXHAUSTED too).
        return TooLargeError(f"etcd at {endpoints} refused a request as too large ({text})")
    if isinstance(exc, grpc.aio.AioRpcError):
        details = exc.details() or ""
        if "database space exceeded" in details or exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return StoreUnavailableError(
                f"etcd at {endpoints} is over its space quota ({details}); compact and "
                "defragment it, then disarm the NOSPACE alarm (etcdctl alarm disarm)"
            )
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return StoreUnavailableError(f"etcd at {endpoints} is unavailable: {describe(exc)}")
        return StoreError(f"etcd at {endpoints} failed: {describe(exc)}")
    return StoreError(f"etcd at {endpoints} failed: {describe(exc)}")
