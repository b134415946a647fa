"""Who is calling: the identity in the caller's TLS client certificate.

gRPC has already checked that the certificate chains to the cluster's root CA; this
module reads the node id (CN), role (OU) and cluster id (O) from it and checks them.
"""

from __future__ import annotations

from functools import lru_cache

from common import pki
from manager.grpc_errors import Context, PermissionDeniedError, UnauthenticatedError


@lru_cache(maxsize=65536)
def _identity(pem: bytes) -> pki.Identity:
    return pki.identity(pem)


def peer_identity(context: Context) -> pki.Identity | None:
    """The identity of the caller's verified client certificate, if it sent one."""
    auth = context.auth_context()
    pems = list(auth.get("x509_pem_cert") or [])
    if not pems:
        return None
    return _identity(pems[0])


def require(context: Context, cluster_id: str, roles: tuple[str, ...]) -> pki.Identity:
    """The caller's identity; raises unless it is of this cluster and one of `roles`."""
    ident = peer_identity(context)
    if ident is None:
        raise UnauthenticatedError(
            "no client certificate: this call needs the node's certificate (join the cluster "
            "with a join token first)"
        )
    if ident.cluster_id != cluster_id:
        raise PermissionDeniedError(
            f"certificate is for cluster {ident.cluster_id!r}, not this one ({cluster_id})"
        )
    if ident.role not in roles:
        raise PermissionDeniedError(
            f"certificate role {ident.role!r} may not make this call (needs {' or '.join(roles)})"
        )
    return ident
