"""The NodeCA gRPC service: root CA download, certificates for joining and renewing nodes.

Joining: the node presents a join token; the token's secret says its role; a Node
object is created for it, and its certificate names that node id. Renewing: the node
presents its current certificate (mutual TLS) and gets a new one for the same identity,
unless it was removed from the cluster in the meantime.
"""

from __future__ import annotations

import asyncio

from common import pki
from common.api import ca_pb2, ca_pb2_grpc, objects_pb2, types_pb2
from common.ids import new_id
from common.log import get_logger
from manager.ca import authz
from manager.ca.bootstrap import node_cert_lifetime, role_for_token, role_name, root_ca
from manager.grpc_errors import (
    Context,
    InvalidArgumentError,
    PermissionDeniedError,
    rpc,
)
from manager.store import Cache, NotFoundError, Store

_log = get_logger("ca")
_ROLES = {
    pki.ROLE_WORKER: types_pb2.NODE_ROLE_WORKER,
    pki.ROLE_MANAGER: types_pb2.NODE_ROLE_MANAGER,
}


class NodeCAService(ca_pb2_grpc.NodeCAServicer):
    """Issues node certificates from the root CA kept in the cluster object."""

    def __init__(self, cache: Cache, store: Store) -> None:
        self.cache = cache
        self.store = store

    def _cluster(self) -> objects_pb2.Cluster:
        cluster = self.cache.cluster()
        if cluster is None or not cluster.root_ca.ca_cert:
            raise NotFoundError("the cluster has no certificate authority yet")
        return cluster

    @rpc
    async def GetRootCACertificate(
        self, request: ca_pb2.GetRootCACertificateRequest, context: Context
    ) -> ca_pb2.GetRootCACertificateResponse:
        return ca_pb2.GetRootCACertificateResponse(certificate=self._cluster().root_ca.ca_cert)

    @rpc
    async def IssueNodeCertificate(
        self, request: ca_pb2.IssueNodeCertificateRequest, context: Context
    ) -> ca_pb2.IssueNodeCertificateResponse:
        cluster = self._cluster()
        if not request.csr:
            raise InvalidArgumentError("no certificate signing request (csr) given")
        caller = authz.peer_identity(context)
        if caller is not None and not request.token:
            # Renewal: same identity as the current certificate.
            caller = authz.require(context, cluster.id, (pki.ROLE_WORKER, pki.ROLE_MANAGER))
            if caller.node_id not in self.cache.nodes:
                raise PermissionDeniedError(
                    f"node {caller.node_id} was removed from the cluster: it must join again "
                    "with a join token (remove its state dir first)"
                )
            node_id, role = caller.node_id, _ROLES[caller.role]
        else:
            if not request.token:
                raise InvalidArgumentError(
                    "no join token: give the agent --join-token (see 'swarmctl join-token worker')"
                )
            role = role_for_token(cluster, request.token)
            node_id = new_id()
            node = objects_pb2.Node(id=node_id, role=role)
            node.spec.desired_role = role
            node.spec.availability = types_pb2.NODE_AVAILABILITY_ACTIVE
            node.status.state = types_pb2.NODE_STATE_UNKNOWN
            node.status.message = "joined; waiting for its first session"
            created = await self.store.create(node)
            await self.cache.wait_for(created.meta.version)
            _log.info("node joined", node_id=node_id, role=role_name(role))
        try:
            cert = await asyncio.to_thread(
                root_ca(cluster).sign,
                request.csr,
                node_id=node_id,
                role=role_name(role),
                cluster_id=cluster.id,
                lifetime=node_cert_lifetime(cluster),
            )
        except pki.PKIError as exc:
            raise InvalidArgumentError(str(exc)) from None
        return ca_pb2.IssueNodeCertificateResponse(
            node_id=node_id, role=role, certificate=cert, root_ca=cluster.root_ca.ca_cert
        )
