"""Control API logic for the cluster object: its settings."""

from __future__ import annotations

from common.api import control_pb2, objects_pb2, types_pb2
from common.defaults import MAX_HEARTBEAT_PERIOD, MIN_HEARTBEAT_PERIOD
from common.timeutil import duration_seconds
from manager.ca.bootstrap import rotate_token
from manager.controlapi.validation import check_duration
from manager.grpc_errors import FailedPreconditionError, InvalidArgumentError
from manager.store import Cache, ConflictError, Kind, NotFoundError
from manager.store.views import ObjectWriter


def get_cluster(cache: Cache) -> objects_pb2.Cluster:
    cluster = cache.cluster()
    if cluster is None:
        raise NotFoundError("the cluster object does not exist yet")
    return cluster


def redacted(cluster: objects_pb2.Cluster) -> objects_pb2.Cluster:
    """The cluster as clients see it: never the CA's private key."""
    out = objects_pb2.Cluster()
    out.CopyFrom(cluster)
    out.root_ca.ClearField("ca_key")
    return out


async def update_cluster(
    cache: Cache, store: ObjectWriter, request: control_pb2.UpdateClusterRequest
) -> control_pb2.UpdateClusterResponse:
    current = get_cluster(cache)
    if not request.cluster_version:
        raise InvalidArgumentError(
            "cluster_version is required: send the meta.version of the cluster you read"
        )
    spec = request.spec
    limit = spec.orchestration.task_history_retention_limit
    if limit < 0:
        raise InvalidArgumentError(f"invalid task history limit {limit}: use 0 or more")
    if spec.dispatcher.HasField("heartbeat_period"):
        check_duration(spec.dispatcher.heartbeat_period, "heartbeat period")
        period = duration_seconds(spec.dispatcher.heartbeat_period)
        if period < MIN_HEARTBEAT_PERIOD or period > MAX_HEARTBEAT_PERIOD:
            raise InvalidArgumentError(
                f"invalid heartbeat period {period}s: use {MIN_HEARTBEAT_PERIOD}s to "
                f"{MAX_HEARTBEAT_PERIOD:.0f}s"
            )
    if spec.annotations.name != current.spec.annotations.name:
        raise InvalidArgumentError("the cluster cannot be renamed")

    if spec.ca_config.HasField("node_cert_expiry"):
        check_duration(spec.ca_config.node_cert_expiry, "certificate expiry")
        expiry = duration_seconds(spec.ca_config.node_cert_expiry)
        if expiry < 60:
            raise InvalidArgumentError(
                f"invalid certificate expiry {expiry}s: use at least 1 minute"
            )

    def apply(cluster: objects_pb2.Cluster) -> objects_pb2.Cluster:
        cluster.spec.CopyFrom(spec)
        if request.rotate_worker_token:
            rotate_token(cluster, types_pb2.NODE_ROLE_WORKER)
        if request.rotate_manager_token:
            rotate_token(cluster, types_pb2.NODE_ROLE_MANAGER)
        return cluster

    try:
        updated = await store.update(
            Kind.CLUSTER, current.id, apply, expect_version=request.cluster_version
        )
    except ConflictError:
        raise FailedPreconditionError(
            "the cluster settings changed since you read them: read them again and retry"
        ) from None
    assert updated is not None
    await cache.wait_for(updated.meta.version)
    return control_pb2.UpdateClusterResponse(cluster=redacted(updated))
