"""The manager's TCP ports are its own: no second process may listen on them too.

gRPC sets SO_REUSEPORT on the sockets it listens on, so a second manager started on a
taken address (two checkouts, a typo) would bind it without an error and the kernel
would split the connections between two clusters. Every gRPC server of the manager
is made with `EXCLUSIVE_PORT`; when a bind fails, `bind_error` tells why in words.
"""

from __future__ import annotations

import errno
import socket

# gRPC channel argument: listen without SO_REUSEPORT.
EXCLUSIVE_PORT = ("grpc.so_reuseport", 0)


def bind_error(addr: str) -> str:
    """Why `addr` (HOST:PORT) cannot be listened on, found by trying it with a plain
    socket: gRPC's own error says only "Failed to bind"."""
    host, _, port = addr.rpartition(":")
    try:
        infos = socket.getaddrinfo(
            host.strip("[]") or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, ValueError) as exc:
        return f"not a usable HOST:PORT ({exc})"
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "address already in use (is another swarm-manager listening there?)"
            return exc.strerror or str(exc)
    return "gRPC could not listen there"
