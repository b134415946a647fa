"""Control API logic for services: create, get, list, update, remove.

A spec is checked on its own (validation), then against the cluster (its networks
resolved to ids and its published ports against other services': service_networks),
before it is stored, on create and on every update, a rollback included.
"""

from __future__ import annotations

from common import states
from common.api import control_pb2, objects_pb2, specs_pb2
from common.ids import new_id
from common.modes import GLOBAL, REPLICATED, REPLICATED_JOB, is_job, mode_of
from common.nodes import takes_new_tasks
from common.rollout import PAUSED
from common.timeutil import stamp_now
from manager.controlapi.counts import ServiceCounts
from manager.controlapi.filters import labels_match
from manager.controlapi.resolve import resolve
from manager.controlapi.service_networks import check_port_conflicts, resolve_networks
from manager.controlapi.validation import (
    check_service_update,
    complete_service_spec,
    validate_service_spec,
)
from manager.domain.placement import matches_placement
from manager.domain.placer import Previewer
from manager.domain.tasks import TaskMaker
from manager.grpc_errors import FailedPreconditionError, InvalidArgumentError
from manager.store import AlreadyExistsError, Cache, ConflictError, Kind
from manager.store.views import ObjectWriter


def _check_in_cluster(cache: Cache, spec: specs_pb2.ServiceSpec, service_id: str) -> None:
    """What `spec` must agree with in the cluster; its networks become ids in place."""
    resolve_networks(cache, spec)
    check_port_conflicts(cache, spec, service_id)


def find_service(cache: Cache, ref: str) -> objects_pb2.Service:
    return resolve("service", cache.services, ref, lambda s: s.spec.annotations.name)


def preview(
    cache: Cache, service: objects_pb2.Service, previewer: Previewer, *, replacing: str = ""
) -> control_pb2.PlacementPreview:
    """Where the tasks of `service` would be placed now (the scheduler's own logic)."""
    mode = mode_of(service.spec)
    new_task = TaskMaker(service)
    if mode == REPLICATED:
        tasks = [new_task(slot) for slot in range(1, service.spec.replicated.replicas + 1)]
    elif mode == REPLICATED_JOB:
        job = service.spec.replicated_job
        first_wave = min(job.max_concurrent or job.total_completions, job.total_completions)
        tasks = [new_task(slot) for slot in range(1, first_wave + 1)]
    else:
        tasks = [new_task(0, node_id=n) for n in sorted(cache.nodes)]
    out = control_pb2.PlacementPreview()
    if not tasks:
        return out
    result = previewer(tasks, replacing)
    by_task = {t.id: t for t in tasks}
    for d in result.decisions:
        task = by_task[d.task_id]
        node = cache.nodes.get(d.node_id) if d.node_id else None
        out.placements.add(
            slot=task.slot,
            node_id=d.node_id or task.node_id,
            node_hostname=node.description.hostname if node is not None else "",
            explanation=d.explanation,
        )
    for r in result.rejections:
        out.rejections.add(
            node_id=r.node.id, node_hostname=r.node.description.hostname, reason=r.reason
        )
    return out


async def create_service(
    cache: Cache,
    store: ObjectWriter,
    request: control_pb2.CreateServiceRequest,
    previewer: Previewer,
) -> control_pb2.CreateServiceResponse:
    spec = complete_service_spec(request.spec)
    validate_service_spec(spec)
    service_id = new_id()
    _check_in_cluster(cache, spec, service_id)
    if request.dry_run:
        if spec.annotations.name in cache.service_by_name:
            raise AlreadyExistsError(f"a service named {spec.annotations.name!r} already exists")
        candidate = objects_pb2.Service(id="dry-run", spec=spec, spec_version=1)
        return control_pb2.CreateServiceResponse(
            service=candidate, preview=preview(cache, candidate, previewer)
        )
    service = objects_pb2.Service(id=service_id, spec=spec, spec_version=1)
    if is_job(spec):
        service.job_status.job_iteration = 1
        stamp_now(service.job_status.last_execution)
    created = await store.create(service, unique_name=spec.annotations.name)
    await cache.wait_for(created.meta.version)
    return control_pb2.CreateServiceResponse(service=created)


def list_services(
    cache: Cache, request: control_pb2.ListServicesRequest, counts: ServiceCounts | None = None
) -> control_pb2.ListServicesResponse:
    f = request.filters
    out = control_pb2.ListServicesResponse()
    for service in sorted(cache.services.values(), key=lambda s: s.spec.annotations.name):
        name = service.spec.annotations.name
        if f.names and name not in f.names:
            continue
        if f.name_prefixes and not any(name.startswith(p) for p in f.name_prefixes):
            continue
        if f.id_prefixes and not any(service.id.startswith(p) for p in f.id_prefixes):
            continue
        if not labels_match(service.spec.annotations.labels, f.labels):
            continue
        out.services.append(service)
        out.statuses[service.id].CopyFrom(service_counts(cache, service, counts))
    return out


def service_counts(
    cache: Cache, service: objects_pb2.Service, counts: ServiceCounts | None = None
) -> control_pb2.ServiceStatusCounts:
    """Running tasks against the desired count (and completions, for jobs)."""
    mode = mode_of(service.spec)
    job = is_job(service.spec)
    if counts is not None:
        running, wanted, completed = counts.get(
            service.id, service.job_status.job_iteration if job else None
        )
        if not job:
            completed = 0
    else:
        running = completed = wanted = 0
        for t in cache.tasks_by_service.get(service.id, {}).values():
            if job and t.job_iteration != service.job_status.job_iteration:
                continue
            if t.status.state == states.COMPLETE and job:
                completed += 1
            if states.is_runnable(t.desired_state) and not states.is_terminal(t.status.state):
                wanted += 1
                if t.status.state == states.RUNNING:
                    running += 1
    if mode == REPLICATED:
        desired = service.spec.replicated.replicas
    elif mode == REPLICATED_JOB:
        desired = service.spec.replicated_job.total_completions
    else:
        # Global: one per eligible node, whatever state their tasks are in right now.
        placement = service.spec.task.placement
        eligible = sum(
            1
            for n in cache.nodes.values()
            if takes_new_tasks(n) and matches_placement(placement, n)
        )
        desired = eligible if mode == GLOBAL else max(eligible, completed + wanted)
    return control_pb2.ServiceStatusCounts(running=running, desired=desired, completed=completed)


async def update_service(
    cache: Cache,
    store: ObjectWriter,
    request: control_pb2.UpdateServiceRequest,
    previewer: Previewer,
) -> control_pb2.UpdateServiceResponse:
    current = find_service(cache, request.service_id)
    name = current.spec.annotations.name
    if not request.service_version:
        raise InvalidArgumentError(
            "service_version is required: send the meta.version of the service you read"
        )
    if request.rollback:
        if not current.HasField("previous_spec"):
            raise FailedPreconditionError(f"service {name!r} has no previous spec to roll back to")
        spec = objects_pb2.Service().spec
        spec.CopyFrom(current.previous_spec)
    else:
        spec = complete_service_spec(request.spec)
        validate_service_spec(spec)
        check_service_update(current, spec)
    # Also on rollback: the previous spec's networks may be gone, or its ports taken.
    _check_in_cluster(cache, spec, current.id)
    if request.dry_run:
        candidate = objects_pb2.Service()
        candidate.CopyFrom(current)
        candidate.spec.CopyFrom(spec)
        candidate.spec_version += 1
        return control_pb2.UpdateServiceResponse(
            service=candidate, preview=preview(cache, candidate, previewer, replacing=current.id)
        )

    def apply(service: objects_pb2.Service) -> objects_pb2.Service:
        old_spec = objects_pb2.Service().spec
        old_spec.CopyFrom(service.spec)
        service.spec.CopyFrom(spec)
        job = is_job(spec)
        # Any update of a service whose rollout is paused resumes it, as in Docker, even
        # one that only changes the update config, the replicas or a label.
        resume = not job and service.update_status.state in PAUSED
        if old_spec != spec:
            service.previous_spec.CopyFrom(old_spec)
        if old_spec != spec or resume:
            # A new spec version: the failures counted against the paused rollout were
            # of the old one, so the resumed rollout counts afresh.
            service.spec_version += 1
        if job and old_spec != spec:
            # Any change to a job runs it again.
            service.job_status.job_iteration += 1
            stamp_now(service.job_status.last_execution)
        elif resume or old_spec.task != spec.task or old_spec.endpoint != spec.endpoint:
            # The tasks will be replaced: a rollout starts (a paused one resumes).
            status = service.update_status
            status.Clear()
            status.state = (
                objects_pb2.UpdateStatus.UPDATE_STATE_ROLLBACK_STARTED
                if request.rollback
                else objects_pb2.UpdateStatus.UPDATE_STATE_UPDATING
            )
            status.message = (
                "manually requested rollback" if request.rollback else "update in progress"
            )
            stamp_now(status.started_at)
        return service

    try:
        updated = await store.update(
            Kind.SERVICE, current.id, apply, expect_version=request.service_version
        )
    except ConflictError:
        latest = cache.services.get(current.id) or current
        raise FailedPreconditionError(
            f"service {name!r} changed since you read it (you sent version "
            f"{request.service_version}, it is now {latest.meta.version}): read it again "
            "and retry the update"
        ) from None
    assert updated is not None  # apply never declines
    await cache.wait_for(updated.meta.version)
    return control_pb2.UpdateServiceResponse(service=updated)


async def remove_service(
    cache: Cache, store: ObjectWriter, request: control_pb2.RemoveServiceRequest
) -> control_pb2.RemoveServiceResponse:
    service = find_service(cache, request.service_id)
    revision = await store.delete(
        Kind.SERVICE, service.id, also=[store.keys.service_name_key(service.spec.annotations.name)]
    )
    await cache.wait_for(revision)
    return control_pb2.RemoveServiceResponse()


async def rebalance_service(
    cache: Cache, store: ObjectWriter, request: control_pb2.RebalanceServiceRequest
) -> control_pb2.RebalanceServiceResponse:
    """Ask the orchestrator to even the service's tasks out over the eligible nodes."""
    current = find_service(cache, request.service_id)
    if not current.spec.HasField("replicated"):
        raise FailedPreconditionError(
            f"service {current.spec.annotations.name!r} is not replicated: only replicated "
            "services are rebalanced (a global service has one task per node already)"
        )

    def request_more(service: objects_pb2.Service) -> objects_pb2.Service:
        service.rebalance_requested += 1
        return service

    updated = await store.update(Kind.SERVICE, current.id, request_more)
    assert updated is not None
    await cache.wait_for(updated.meta.version)
    return control_pb2.RebalanceServiceResponse(service=updated)
