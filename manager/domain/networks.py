"""Which networks a service's tasks join: the networks of its task template, and the
ingress network (the routing mesh's) when it publishes a port in ingress mode. Such a
task is made NEW and waits for the allocator to give it its addresses; any other task is
PENDING, ready for the scheduler, at once."""

from __future__ import annotations

from common.api import objects_pb2, specs_pb2, types_pb2


def ingress_ports(endpoint: specs_pb2.EndpointSpec) -> list[types_pb2.PortConfig]:
    return [p for p in endpoint.ports if p.publish_mode == types_pb2.PUBLISH_MODE_INGRESS]


def needs_allocation(spec: specs_pb2.ServiceSpec) -> bool:
    """A service whose tasks join a network (its own, or the ingress for its ports)."""
    return bool(spec.task.networks) or bool(ingress_ports(spec.endpoint))


def task_networks(task: objects_pb2.Task, ingress_id: str) -> list[tuple[str, list[str]]]:
    """(network id, aliases) for each network the task joins (see `joined_networks`)."""
    return joined_networks(task.spec, task.endpoint, ingress_id)


def joined_networks(
    spec: specs_pb2.TaskSpec, endpoint: specs_pb2.EndpointSpec, ingress_id: str
) -> list[tuple[str, list[str]]]:
    """(network id, aliases) for each network a task of this template joins, the ingress
    first, each network once (the control API refuses a network named twice; a stored
    spec from elsewhere is not trusted to)."""
    out: list[tuple[str, list[str]]] = []
    if ingress_id and ingress_ports(endpoint):
        out.append((ingress_id, []))
    seen = {net for net, _ in out}
    for n in spec.networks:
        if n.target not in seen:
            seen.add(n.target)
            out.append((n.target, list(n.aliases)))
    return out
