"""Creating the cluster's root CA and join tokens, and reading them back."""

from __future__ import annotations

import hmac

from common import pki
from common.api import objects_pb2, types_pb2
from common.timeutil import duration_seconds
from manager.grpc_errors import UnauthenticatedError


def init_root_ca(cluster: objects_pb2.Cluster) -> None:
    """Give a new cluster object its root CA and both join tokens."""
    root = pki.RootCA.create()
    cluster.root_ca.ca_cert = root.cert_pem
    cluster.root_ca.ca_key = root.key_pem
    cluster.root_ca.ca_digest = root.digest
    cluster.root_ca.join_tokens.worker = str(pki.JoinToken.new(root.cert_pem))
    cluster.root_ca.join_tokens.manager = str(pki.JoinToken.new(root.cert_pem))


def root_ca(cluster: objects_pb2.Cluster) -> pki.RootCA:
    return pki.RootCA(cluster.root_ca.ca_cert, cluster.root_ca.ca_key)


def rotate_token(cluster: objects_pb2.Cluster, role: int) -> None:
    token = str(pki.JoinToken.new(cluster.root_ca.ca_cert))
    if role == types_pb2.NODE_ROLE_MANAGER:
        cluster.root_ca.join_tokens.manager = token
    else:
        cluster.root_ca.join_tokens.worker = token


def role_for_token(cluster: objects_pb2.Cluster, text: str) -> types_pb2.NodeRole.ValueType:
    """The role a join token admits; UnauthenticatedError for a wrong or old token."""
    hint = "get the current one with 'swarmctl join-token worker' (or manager) on a manager"
    try:
        token = str(pki.JoinToken.parse(text))
    except pki.PKIError as exc:
        raise UnauthenticatedError(f"{exc}") from None
    tokens = cluster.root_ca.join_tokens
    if hmac.compare_digest(token, tokens.worker):
        return types_pb2.NODE_ROLE_WORKER
    if hmac.compare_digest(token, tokens.manager):
        return types_pb2.NODE_ROLE_MANAGER
    if pki.JoinToken.parse(text).digest != cluster.root_ca.ca_digest:
        raise UnauthenticatedError(f"the join token is for another cluster's CA: {hint}")
    raise UnauthenticatedError(f"the join token is not valid (wrong, or rotated out): {hint}")


def node_cert_lifetime(cluster: objects_pb2.Cluster) -> float:
    spec = cluster.spec.ca_config
    if spec.HasField("node_cert_expiry"):
        return duration_seconds(spec.node_cert_expiry)
    return pki.DEFAULT_NODE_CERT_LIFETIME


def role_name(role: int) -> str:
    return pki.ROLE_MANAGER if role == types_pb2.NODE_ROLE_MANAGER else pki.ROLE_WORKER
