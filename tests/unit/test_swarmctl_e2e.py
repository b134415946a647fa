"""swarmctl end to end through its client plumbing, against FakeControl.

FakeControl is a test double of the manager's `swarmlet.Control` service: a grpc.aio
server on a real unix socket (in tmp_path), serving from a background thread, that keeps
services, tasks and nodes in memory. Its "orchestrator" is a toy: every ListTasks call
moves each task one state along; a task of an image named `nosuch*` is rejected at
ACCEPTED and replaced, the way a node without the image would reject it. A global
service gets a task per node; a job's tasks go on from RUNNING to COMPLETE. A dry run
answers the canned `preview`; a rebalance moves half the tasks of the first node to the
second on the next GetService.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import grpc
import pytest
import typer
from typer.testing import CliRunner

from common import states
from common.api import (
    control_pb2,
    control_pb2_grpc,
    logs_pb2,
    objects_pb2,
    specs_pb2,
    types_pb2,
)
from common.ids import new_id
from common.timeutil import now_timestamp
from swarmctl import convergence
from swarmctl.main import app
from swarmctl.parsing import DEFAULT_PUBLISH_MODE

NODE_ID = "node0000000000000000000001"
_LIFECYCLE = [
    states.NEW,
    states.PENDING,
    states.ASSIGNED,
    states.ACCEPTED,
    states.PREPARING,
    states.READY,
    states.STARTING,
    states.RUNNING,
]


class FakeControl(control_pb2_grpc.ControlServicer):
    """A fake manager Control service: in-memory objects and a toy task lifecycle."""

    def __init__(self) -> None:
        self.services: dict[str, objects_pb2.Service] = {}
        self.networks: dict[str, objects_pb2.Network] = {}
        self.tasks: list[objects_pb2.Task] = []
        self.nodes = [
            objects_pb2.Node(
                id=NODE_ID,
                description=objects_pb2.NodeDescription(
                    hostname="node-1",
                    engine=objects_pb2.EngineDescription(engine_version="20.10.24"),
                ),
                status=objects_pb2.NodeStatus(state=types_pb2.NODE_STATE_READY),
            )
        ]
        self.auto_advance = True
        # GetService answers this much older a version: a write came in between.
        self.stale_by = 0
        self.requests: list[object] = []
        self.preview = control_pb2.PlacementPreview()
        self.log_batches: list[list[logs_pb2.LogMessage]] = []
        self.events: list[control_pb2.EventMessage] = []
        self.cluster = objects_pb2.Cluster(id="cluster1")
        self.cluster.meta.version = 7
        self.cluster.spec.orchestration.task_history_retention_limit = 5
        self.cluster.spec.dispatcher.heartbeat_period.seconds = 5

    # helpers

    async def _service(self, ref: str, context: Any) -> objects_pb2.Service:
        """The service `ref` names, or the call ends with NOT_FOUND."""
        svc = self._find_service(ref)
        if svc is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"service {ref} not found")
            raise AssertionError("context.abort raises")
        return svc

    def _find_service(self, ref: str) -> objects_pb2.Service | None:
        if ref in self.services:
            return self.services[ref]
        by_name = [s for s in self.services.values() if s.spec.annotations.name == ref]
        if by_name:
            return by_name[0]
        by_prefix = [s for s in self.services.values() if s.id.startswith(ref)]
        return by_prefix[0] if len(by_prefix) == 1 else None

    def _new_task(self, svc: objects_pb2.Service, slot: int, node_id: str = "") -> objects_pb2.Task:
        job = svc.spec.WhichOneof("mode") in ("replicated_job", "global_job")
        task = objects_pb2.Task(
            id=new_id(),
            service_id=svc.id,
            service_name=svc.spec.annotations.name,
            slot=slot,
            node_id=node_id,
            spec=svc.spec.task,
            endpoint=svc.spec.endpoint,
            spec_version=svc.spec_version,
            desired_state=states.COMPLETE if job else states.RUNNING,
            status=objects_pb2.TaskStatus(state=states.NEW, timestamp=now_timestamp()),
            job_iteration=svc.job_status.job_iteration,
        )
        task.annotations.name = f"{svc.spec.annotations.name}.{slot or node_id}"
        task.meta.created_at.CopyFrom(now_timestamp())
        self.tasks.append(task)
        return task

    def _reconcile(self, svc: objects_pb2.Service) -> None:
        """A task per slot (replicated, replicated job) or per node (global, global job)."""
        mode = svc.spec.WhichOneof("mode")
        keys: list[int | str]
        if mode == "replicated_job":
            keys = list(range(1, svc.spec.replicated_job.total_completions + 1))
        elif mode in ("global", "global_job"):
            keys = [n.id for n in self.nodes]
        else:
            keys = list(range(1, svc.spec.replicated.replicas + 1))
        live: dict[int | str, objects_pb2.Task] = {}
        for task in self.tasks:
            if task.service_id != svc.id or not states.is_runnable(task.desired_state):
                continue
            key = task.slot or task.node_id
            changed = task.spec != svc.spec.task or task.endpoint != svc.spec.endpoint
            if changed or key not in keys or task.job_iteration != svc.job_status.job_iteration:
                task.desired_state = states.SHUTDOWN
                task.status.state = states.SHUTDOWN
                continue
            live[key] = task
        for key in keys:
            if key not in live:
                if isinstance(key, int):
                    self._new_task(svc, key)
                else:
                    self._new_task(svc, 0, node_id=key)

    def _advance(self) -> None:
        for task in list(self.tasks):
            if not states.is_runnable(task.desired_state):
                continue
            if task.status.state == states.RUNNING and task.desired_state == states.COMPLETE:
                task.status.state = states.COMPLETE  # a job's task exits 0
                task.status.timestamp.CopyFrom(now_timestamp())
                continue
            if task.status.state >= states.RUNNING:
                continue
            nxt = _LIFECYCLE[_LIFECYCLE.index(task.status.state) + 1]
            if nxt >= states.ASSIGNED and not task.node_id:
                task.node_id = NODE_ID
            if nxt == states.PREPARING and task.spec.container.image.startswith("nosuch"):
                task.status.state = states.REJECTED
                task.status.err = f"No such image: {task.spec.container.image}:latest"
                task.desired_state = states.SHUTDOWN
                self._new_task(self.services[task.service_id], task.slot, task.node_id)
                continue
            task.status.state = nxt
            task.status.timestamp.CopyFrom(now_timestamp())
            if nxt == states.RUNNING:
                for port in self.services[task.service_id].spec.endpoint.ports:
                    shown = task.status.port_status.ports.add()
                    shown.CopyFrom(port)
                    shown.published_port = port.published_port or 32768

    # the Control service

    async def CreateService(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        name = request.spec.annotations.name
        if any(s.spec.annotations.name == name for s in self.services.values()):
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"service {name} already exists")
        if request.dry_run:
            return control_pb2.CreateServiceResponse(preview=self.preview)
        svc = objects_pb2.Service(id=new_id(), spec=request.spec, spec_version=1)
        svc.meta.version = 1
        if request.spec.WhichOneof("mode") in ("replicated_job", "global_job"):
            svc.job_status.job_iteration = 1
        self.services[svc.id] = svc
        self._reconcile(svc)
        return control_pb2.CreateServiceResponse(service=svc)

    async def GetService(self, request, context):  # type: ignore[no-untyped-def]
        svc = await self._service(request.service_id, context)
        if svc.rebalance_requested > svc.rebalance_done:
            self._rebalance(svc)
        resp = control_pb2.GetServiceResponse(service=svc)
        resp.service.meta.version -= self.stale_by
        return resp

    async def ListServices(self, request, context):  # type: ignore[no-untyped-def]
        resp = control_pb2.ListServicesResponse()
        prefixes = request.filters.name_prefixes
        for svc in self.services.values():
            if prefixes and not any(svc.spec.annotations.name.startswith(p) for p in prefixes):
                continue
            resp.services.append(svc)
            running = sum(
                1
                for t in self.tasks
                if t.service_id == svc.id
                and t.status.state == states.RUNNING
                and t.desired_state == states.RUNNING
            )
            resp.statuses[svc.id].running = running
            resp.statuses[svc.id].desired = (
                svc.spec.replicated.replicas or svc.spec.replicated_job.total_completions
            )
            resp.statuses[svc.id].completed = sum(
                1
                for t in self.tasks
                if t.service_id == svc.id and t.status.state == states.COMPLETE
            )
        return resp

    async def UpdateService(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        svc = await self._service(request.service_id, context)
        if request.service_version != svc.meta.version:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"service {svc.spec.annotations.name} changed since it was read "
                f"(version {request.service_version}, now {svc.meta.version}); read it again "
                "and retry",
            )
        if request.dry_run:
            return control_pb2.UpdateServiceResponse(preview=self.preview)
        svc.previous_spec.CopyFrom(svc.spec)
        svc.spec.CopyFrom(request.spec)
        svc.meta.version += 1
        svc.spec_version += 1
        if svc.job_status.job_iteration:
            svc.job_status.job_iteration += 1  # any change runs a job again
        self._reconcile(svc)
        return control_pb2.UpdateServiceResponse(service=svc)

    async def RebalanceService(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        svc = await self._service(request.service_id, context)
        if not svc.spec.HasField("replicated"):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"service {svc.spec.annotations.name!r} is not replicated",
            )
        svc.rebalance_requested += 1
        svc.meta.version += 1
        return control_pb2.RebalanceServiceResponse(service=svc)

    def _rebalance(self, svc: objects_pb2.Service) -> None:
        """Move half the running tasks of the first node to the second, start-first."""
        first, second = self.nodes[0].id, self.nodes[1].id
        on_first = [
            t
            for t in self.tasks
            if t.service_id == svc.id and t.node_id == first and t.desired_state == states.RUNNING
        ]
        for old in on_first[: len(on_first) // 2]:
            old.desired_state = states.SHUTDOWN
            old.status.state = states.SHUTDOWN
            moved = self._new_task(svc, old.slot, second)
            moved.status.state = states.RUNNING
        svc.rebalance_done = svc.rebalance_requested

    async def RemoveNode(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "node rm is not faked")

    async def RemoveService(self, request, context):  # type: ignore[no-untyped-def]
        svc = await self._service(request.service_id, context)
        del self.services[svc.id]
        return control_pb2.RemoveServiceResponse()

    async def ListTasks(self, request, context):  # type: ignore[no-untyped-def]
        if self.auto_advance:
            self._advance()
        wanted = set()
        for ref in request.filters.service_ids:
            svc = self._find_service(ref)
            if svc is not None:
                wanted.add(svc.id)
        tasks = [
            t
            for t in self.tasks
            if (not request.filters.service_ids or t.service_id in wanted)
            and (
                not request.filters.desired_states
                or t.desired_state in request.filters.desired_states
            )
        ]
        return control_pb2.ListTasksResponse(tasks=tasks)

    async def ListNodes(self, request, context):  # type: ignore[no-untyped-def]
        return control_pb2.ListNodesResponse(nodes=self.nodes)

    async def GetNode(self, request, context):  # type: ignore[no-untyped-def]
        for node in self.nodes:
            if request.node_id in (node.id, node.description.hostname):
                return control_pb2.GetNodeResponse(node=node)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"node {request.node_id} not found")
        raise AssertionError("abort raises")

    async def UpdateNode(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        (node,) = [n for n in self.nodes if n.id == request.node_id]
        node.spec.CopyFrom(request.spec)
        node.meta.version += 1
        return control_pb2.UpdateNodeResponse(node=node)

    async def GetTask(self, request, context):  # type: ignore[no-untyped-def]
        for task in self.tasks:
            if task.id.startswith(request.task_id) or task.annotations.name == request.task_id:
                return control_pb2.GetTaskResponse(task=task)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"task {request.task_id} not found")
        raise AssertionError("abort raises")

    async def ServiceLogs(self, request, context):  # type: ignore[no-untyped-def]
        """The canned `log_batches`; with follow, then nothing until the client hangs up."""
        self.requests.append(request)
        for batch in self.log_batches:
            yield control_pb2.ServiceLogsMessage(messages=batch)
        if request.options.follow:
            await asyncio.sleep(3600)

    async def WatchEvents(self, request, context):  # type: ignore[no-untyped-def]
        """The canned `events` of the wanted types, then nothing until the deadline."""
        self.requests.append(request)
        for event in self.events:
            if not request.types or event.type in request.types:
                yield event
        await asyncio.sleep(3600)

    async def GetCluster(self, request, context):  # type: ignore[no-untyped-def]
        return control_pb2.GetClusterResponse(cluster=self.cluster)

    # The streamed lists: this fake has none, so swarmctl falls back to the unary calls.
    async def ListNodesStream(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield control_pb2.ListNodesResponse()  # never reached: makes this a stream

    async def ListTasksStream(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield control_pb2.ListTasksResponse()  # never reached: makes this a stream

    async def ListServicesStream(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        yield control_pb2.ListServicesResponse()  # never reached: makes this a stream

    async def CreateNetwork(self, request, context):  # type: ignore[no-untyped-def]
        network = objects_pb2.Network(id=f"net{len(self.networks) + 1}", spec=request.spec)
        self.networks[network.id] = network
        return control_pb2.CreateNetworkResponse(network=network)

    async def GetNetwork(self, request, context):  # type: ignore[no-untyped-def]
        for network in self.networks.values():
            if request.network_id in (network.id, network.spec.annotations.name):
                return control_pb2.GetNetworkResponse(network=network)
        await context.abort(grpc.StatusCode.NOT_FOUND, f"network {request.network_id} not found")
        return None

    async def ListNetworks(self, request, context):  # type: ignore[no-untyped-def]
        return control_pb2.ListNetworksResponse(networks=list(self.networks.values()))

    async def RemoveNetwork(self, request, context):  # type: ignore[no-untyped-def]
        self.networks.pop(request.network_id, None)
        return control_pb2.RemoveNetworkResponse()

    async def PruneNetworks(self, request, context):  # type: ignore[no-untyped-def]
        removed = [n.spec.annotations.name for n in self.networks.values()]
        self.networks.clear()
        return control_pb2.PruneNetworksResponse(removed=removed)

    async def UpdateCluster(self, request, context):  # type: ignore[no-untyped-def]
        self.requests.append(request)
        if request.cluster_version != self.cluster.meta.version:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the cluster settings changed since you read them: read them again and retry",
            )
        self.cluster.spec.CopyFrom(request.spec)
        self.cluster.meta.version += 1
        return control_pb2.UpdateClusterResponse(cluster=self.cluster)


@pytest.fixture
def fake_manager(tmp_path: Path) -> Iterator[tuple[FakeControl, str]]:
    """FakeControl serving on tmp_path/control.sock; yields it and the -H address."""
    sock = tmp_path / "control.sock"
    fake = FakeControl()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server()
        control_pb2_grpc.add_ControlServicer_to_server(fake, server)
        server.add_insecure_port(f"unix://{sock}")
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield fake, f"unix://{sock}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def swarmctl(address: str, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["-H", address, *args], env={"SWARMCTL_HOST": None})


def test_service_create_detached_sends_the_docker_style_spec(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    result = swarmctl(
        address,
        "service", "create", "-d", "--name", "web", "-e", "A=1", "-p", "8080:80",
        "busybox", "sh", "-c", "echo hi",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (svc,) = fake.services.values()
    assert result.stdout == f"{svc.id}\n"
    (request,) = fake.requests
    spec = request.spec
    assert spec.annotations.name == "web"
    assert spec.task.container.image == "busybox"
    assert list(spec.task.container.args) == ["sh", "-c", "echo hi"]
    assert list(spec.task.container.command) == []
    assert list(spec.task.container.env) == ["A=1"]
    assert spec.WhichOneof("mode") == "replicated"
    assert spec.replicated.replicas == 1
    assert spec.task.restart.condition == specs_pb2.RESTART_CONDITION_ANY
    assert spec.task.restart.delay.seconds == 5
    (port,) = spec.endpoint.ports
    assert (port.published_port, port.target_port) == (8080, 80)
    assert port.publish_mode == DEFAULT_PUBLISH_MODE


def test_service_create_shows_progress_until_converged(fake_manager, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(convergence, "VERIFY_SECONDS", 0.2)
    _, address = fake_manager
    result = swarmctl(address, "service", "create", "--name", "web", "--replicas", "2", "busybox")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    service_id = lines[0]
    assert lines[1] == "overall progress: 0 out of 2 tasks"
    assert "1/2: running   [" + "=" * 50 + ">]" in lines
    assert "2/2: running   [" + "=" * 50 + ">]" in lines
    assert "overall progress: 2 out of 2 tasks" in lines
    assert "verify: Waiting 1 seconds to verify that tasks are stable..." in lines
    assert lines[-1] == f"verify: Service {service_id} converged"
    # Not a terminal: each line is printed only when it changes.
    assert len(lines) == len(set(lines))


def test_service_create_gives_up_on_tasks_that_keep_failing(fake_manager):  # type: ignore[no-untyped-def]
    _, address = fake_manager
    result = swarmctl(address, "service", "create", "--name", "bad", "--replicas", "2", "nosuch")
    assert result.exit_code == 1
    assert "1/2: rejected  No such image: nosuch:latest" in result.stdout
    assert result.stderr == (
        "Error: service bad did not converge: 0 out of 2 tasks running, and each slot "
        "not running has failed 2 or more times\n  No such image: nosuch:latest\n"
    )


def test_service_create_times_out(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    fake.auto_advance = False
    result = swarmctl(address, "service", "create", "--name", "web", "--timeout", "300ms", "x")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: service web did not converge: 0 out of 1 tasks running after 300ms"
    )


def test_service_ls_table_and_json(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    swarmctl(address, "service", "create", "-d", "--name", "web", "-p", "8080:80", "nginx")
    swarmctl(address, "service", "ps", "web")  # one step along; not yet running
    (svc,) = fake.services.values()
    result = swarmctl(address, "service", "ls")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "ID             NAME      MODE         REPLICAS   IMAGE     PORTS",
        f"{svc.id[:12]}   web       replicated   0/1        nginx     *:8080->80/tcp",
    ]
    quiet = swarmctl(address, "service", "ls", "-q")
    assert quiet.stdout == f"{svc.id[:12]}\n"
    data = json.loads(swarmctl(address, "service", "ls", "--format", "json").stdout)
    assert data[0]["id"] == svc.id
    assert data[0]["spec"]["task"]["container"]["image"] == "nginx"
    assert swarmctl(address, "service", "ls", "-f", "name=nomatch").stdout.splitlines() == [
        "ID        NAME      MODE      REPLICAS   IMAGE     PORTS"
    ]


def test_service_ps_shows_slots_history_and_nodes(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    swarmctl(address, "service", "create", "-d", "--name", "bad", "nosuch")
    fake.auto_advance = False
    for _ in range(6):  # the first task is rejected; its replacement gets to ASSIGNED
        fake._advance()
    result = swarmctl(address, "service", "ps", "bad")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split("   ")[0] == "ID"
    assert "DESIRED STATE" in header
    assert rows[0].split()[1:4] == ["bad.1", "nosuch", "node-1"]
    assert " \\_ bad.1 " in rows[1]
    assert "Shutdown" in rows[1]
    assert "Rejected" in rows[1]
    assert '"No such image: nosuch:latest"' in rows[1]


def test_service_ps_of_a_missing_service(fake_manager):  # type: ignore[no-untyped-def]
    _, address = fake_manager
    result = swarmctl(address, "service", "ps", "nope")
    assert result.exit_code == 1
    assert result.stderr == "Error: service nope not found\n"


def test_service_update_and_a_stale_version(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    swarmctl(address, "service", "create", "-d", "--name", "web", "-e", "A=1", "nginx")
    result = swarmctl(
        address, "service", "update", "-d", "--image", "nginx:2", "--env-add", "B=2", "web"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "web\n"
    request = fake.requests[-1]
    assert request.service_version == 1
    assert request.spec.task.container.image == "nginx:2"
    assert list(request.spec.task.container.env) == ["A=1", "B=2"]

    fake.stale_by = 1  # someone else wrote it between our read and our write
    result = swarmctl(address, "service", "update", "-d", "--force", "web")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: service web changed since it was read (version 1, now 2); read it again and retry\n"
    )


def test_service_scale_and_rm(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    swarmctl(address, "service", "create", "-d", "--name", "web", "nginx")
    result = swarmctl(address, "service", "scale", "-d", "web=3")
    assert result.exit_code == 0, result.output
    assert result.stdout == "web scaled to 3\n"
    (svc,) = fake.services.values()
    assert svc.spec.replicated.replicas == 3

    result = swarmctl(address, "service", "rm", "nope", "web")
    assert result.exit_code == 1
    assert result.stdout == "web\n"
    assert result.stderr == "Error: service nope not found\n"
    assert not fake.services


def test_service_inspect_is_a_json_array_with_proto_field_names(fake_manager):  # type: ignore[no-untyped-def]
    _, address = fake_manager
    swarmctl(address, "service", "create", "-d", "--name", "web", "--restart-delay", "2s", "nginx")
    result = swarmctl(address, "service", "inspect", "web")
    assert result.exit_code == 0, result.output
    (data,) = json.loads(result.stdout)
    assert data["spec"]["annotations"]["name"] == "web"
    assert data["spec"]["task"]["restart"]["delay"] == "2s"
    assert data["spec"]["task"]["restart"]["condition"] == "RESTART_CONDITION_ANY"
    assert data["spec"]["replicated"]["replicas"] == 1
    pretty = swarmctl(address, "service", "inspect", "--pretty", "web")
    assert "Name:           web" in pretty.stdout.splitlines()


def test_node_ls_update_and_ps(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    result = swarmctl(address, "node", "ls")
    assert result.stdout.splitlines() == [
        "ID                           HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   "
        "ENGINE VERSION",
        f"{NODE_ID}   node-1     Ready     Active                          20.10.24",
    ]
    result = swarmctl(
        address, "node", "update", "--availability", "drain", "--label-add", "zone=a", "node-1"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "node-1\n"
    (request,) = fake.requests
    assert request.node_id == NODE_ID
    assert request.node_version == 0
    assert request.spec.availability == types_pb2.NODE_AVAILABILITY_DRAIN
    assert dict(request.spec.annotations.labels) == {"zone": "a"}
    assert swarmctl(address, "node", "ls").stdout.splitlines()[1].split()[3] == "Drain"

    swarmctl(address, "service", "create", "-d", "--name", "web", "nginx")
    fake.auto_advance = False
    for _ in range(3):
        fake._advance()
    rows = swarmctl(address, "node", "ps", "node-1").stdout.splitlines()
    assert rows[1].split()[1:6] == ["web.1", "nginx", "node-1", "Running", "Accepted"]
    assert swarmctl(address, "node", "ps", "nope").stderr == "Error: node nope not found\n"


def test_task_ls_inspect_and_cluster_inspect(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    swarmctl(address, "service", "create", "-d", "--name", "web", "--replicas", "2", "nginx")
    ids = swarmctl(address, "task", "ls", "-q").stdout.split()
    assert sorted(ids) == sorted(t.id[:12] for t in fake.tasks)
    (data,) = json.loads(swarmctl(address, "task", "inspect", ids[0]).stdout)
    assert data["id"].startswith(ids[0])
    assert data["service_name"] == "web"
    result = swarmctl(address, "task", "inspect", ids[0], "zzz")
    assert result.exit_code == 1
    assert len(json.loads(result.stdout)) == 1
    assert result.stderr == "Error: task zzz not found\n"
    (cluster,) = json.loads(swarmctl(address, "cluster", "inspect").stdout)
    assert cluster["id"] == "cluster1"
    assert cluster["spec"]["orchestration"]["task_history_retention_limit"] == 5


def second_node(fake: FakeControl) -> str:
    node = objects_pb2.Node()
    node.CopyFrom(fake.nodes[0])
    node.id = "node0000000000000000000002"
    node.description.hostname = "node-2"
    fake.nodes.append(node)
    return node.id


def test_service_create_sends_placement_resources_and_mode(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    result = swarmctl(
        address,
        "service", "create", "-d", "--name", "web",
        "--constraint", "node.labels.zone == east", "--constraint", "node.role!=manager",
        "--placement-pref", "spread=node.labels.zone",
        "--placement-pref", "spread=node.labels.rack",
        "--reserve-cpu", "0.5", "--limit-cpu", "2", "--reserve-memory", "512M",
        "--limit-memory", "1GiB", "--replicas-max-per-node", "2",
        "--placement-strategy", "binpack", "--platform", "linux/amd64", "--platform", "linux",
        "nginx",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (request,) = fake.requests
    assert not request.dry_run
    placement = request.spec.task.placement
    assert list(placement.constraints) == ["node.labels.zone == east", "node.role!=manager"]
    assert [p.spread.spread_descriptor for p in placement.preferences] == [
        "node.labels.zone",
        "node.labels.rack",
    ]
    assert placement.max_replicas == 2
    assert placement.strategy == specs_pb2.PLACEMENT_STRATEGY_BINPACK
    assert [(p.os, p.architecture) for p in placement.platforms] == [
        ("linux", "amd64"),
        ("linux", ""),
    ]
    res = request.spec.task.resources
    assert (res.reservations.nano_cpus, res.limits.nano_cpus) == (500_000_000, 2_000_000_000)
    assert (res.reservations.memory_bytes, res.limits.memory_bytes) == (512 << 20, 1 << 30)


def test_dry_run_create_prints_the_preview_and_creates_nothing(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    fake.preview.placements.add(slot=1, node_id=NODE_ID, node_hostname="node-1")
    fake.preview.placements.add(
        slot=2, explanation="no suitable node (max replicas per node reached on 1 node)"
    )
    fake.preview.rejections.add(
        node_id="node0000000000000000000009", node_hostname="node-9", reason="node is down"
    )
    result = swarmctl(
        address,
        "service", "create", "--dry-run", "--name", "web", "--replicas", "2",
        "--replicas-max-per-node", "1", "nginx",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "SLOT      NODE",
        "1         node-1",
        "2         not placed: no suitable node (max replicas per node reached on 1 node)",
        "node node-9 (node00000000): node is down",
    ]
    (request,) = fake.requests
    assert request.dry_run
    assert request.spec.replicated.replicas == 2
    assert not fake.services
    assert not fake.tasks

    as_json = swarmctl(
        address, "service", "create", "--dry-run", "--format", "json", "--name", "web", "nginx"
    )
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["placements"][1]["explanation"].startswith("no suitable node")
    assert data["rejections"][0]["node_hostname"] == "node-9"


def test_dry_run_update_previews_the_new_spec(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    swarmctl(address, "service", "create", "-d", "--name", "web", "--constraint", "a==b", "nginx")
    (svc,) = fake.services.values()
    before = objects_pb2.Service()
    before.CopyFrom(svc)
    fake.preview.placements.add(slot=1, node_id=NODE_ID, node_hostname="node-1")
    result = swarmctl(
        address, "service", "update", "--dry-run", "--constraint-rm", "a==b",
        "--constraint-add", "node.labels.zone==a", "--reserve-memory", "64m", "web",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["SLOT      NODE", "1         node-1"]
    request = fake.requests[-1]
    assert request.dry_run
    assert request.service_version == 1
    assert list(request.spec.task.placement.constraints) == ["node.labels.zone==a"]
    assert request.spec.task.resources.reservations.memory_bytes == 64 << 20
    assert svc == before  # nothing changed


def test_a_replicated_job_runs_to_completion(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    result = swarmctl(
        address, "service", "create", "--name", "batch", "--mode", "replicated-job",
        "--replicas", "3", "--max-concurrent", "2", "busybox", "true",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == "job progress: 0 out of 3 complete [>" + " " * 50 + "]"
    # (The fake starts every slot at once, whatever max-concurrent says.)
    assert lines[2].startswith("active tasks: ")
    assert lines[2].endswith(" out of 2 tasks")
    assert "3/3: complete  [" + "=" * 50 + ">]" in lines
    assert lines[-1] == "job complete"
    (request,) = fake.requests
    job = request.spec.replicated_job
    assert (job.total_completions, job.max_concurrent) == (3, 2)
    assert request.spec.task.restart.condition == specs_pb2.RESTART_CONDITION_ON_FAILURE

    ls = swarmctl(address, "service", "ls").stdout.splitlines()
    assert ls[1].split()[2:5] == ["replicated", "job", "0/3"]
    assert "(3/3 completed)" in ls[1]
    rows = swarmctl(address, "service", "ps", "batch").stdout.splitlines()[1:]
    assert [r.split()[1] for r in rows] == ["batch.1", "batch.2", "batch.3"]
    assert all(r.split()[4:6] == ["Complete", "Complete"] for r in rows)


def test_a_global_service_converges_per_node(fake_manager, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(convergence, "VERIFY_SECONDS", 0.2)
    fake, address = fake_manager
    other = second_node(fake)
    result = swarmctl(address, "service", "create", "--name", "agents", "--mode", "global", "x")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "overall progress: 2 out of 2 tasks" in lines
    assert f"{NODE_ID[:12]}: running   [" + "=" * 50 + ">]" in lines
    assert f"{other[:12]}: running   [" + "=" * 50 + ">]" in lines
    assert lines[-1].startswith("verify: Service ")
    rows = swarmctl(address, "service", "ps", "agents").stdout.splitlines()[1:]
    assert [r.split()[1:4] for r in rows] == [
        [f"agents.{NODE_ID}", "x", "node-1"],
        [f"agents.{other}", "x", "node-2"],
    ]
    result = swarmctl(address, "service", "create", "--mode", "global", "--replicas", "2", "x")
    assert result.exit_code == 2


def test_service_rebalance_shows_tasks_per_node_before_and_after(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    second_node(fake)
    swarmctl(address, "service", "create", "-d", "--name", "web", "--replicas", "4", "nginx")
    fake.auto_advance = False
    for _ in range(7):
        fake._advance()
    result = swarmctl(address, "service", "rebalance", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "web",
        "NODE      BEFORE    AFTER",
        "node-1    4         2",
        "node-2    0         2",
    ]
    (svc,) = fake.services.values()
    assert (svc.rebalance_requested, svc.rebalance_done) == (1, 1)

    detached = swarmctl(address, "service", "rebalance", "-d", "web")
    assert detached.stdout == "web\n"
    assert svc.rebalance_requested == 2

    swarmctl(address, "service", "create", "-d", "--name", "agents", "--mode", "global", "x")
    result = swarmctl(address, "service", "rebalance", "-q", "agents", "web", "nope")
    assert result.exit_code == 1
    assert result.stdout == "web\n"
    assert result.stderr == (
        "Error: service 'agents' is not replicated\nError: service nope not found\n"
    )


def test_cluster_update_changes_only_what_is_given(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    fake.cluster.spec.annotations.name = "default"
    result = swarmctl(
        address, "cluster", "update", "--task-history-limit", "2", "--auto-rebalance", "true"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "ID:             cluster1",
        "Orchestration:",
        " Task History Retention Limit: 2",
        " Auto Rebalance: true",
        "Dispatcher:",
        " Heartbeat Period: 5s",
        "CA Configuration:",
        " Expiry Duration: default",
    ]
    (request,) = fake.requests
    assert request.cluster_version == 7
    assert request.spec.annotations.name == "default"
    assert request.spec.dispatcher.heartbeat_period.seconds == 5
    result = swarmctl(address, "cluster", "update", "--heartbeat-period", "1500ms")
    assert result.exit_code == 0, result.output
    assert fake.requests[-1].cluster_version == 8
    (cluster,) = json.loads(swarmctl(address, "cluster", "inspect").stdout)
    assert cluster["spec"]["dispatcher"]["heartbeat_period"] == "1.500s"
    assert cluster["spec"]["orchestration"]["auto_rebalance"] is True


def log_message(task: objects_pb2.Task, text: str, *, stderr: bool = False, at: int = 0):  # type: ignore[no-untyped-def]
    message = logs_pb2.LogMessage(
        context=logs_pb2.LogContext(service_id=task.service_id, node_id=NODE_ID, task_id=task.id),
        stream=logs_pb2.LOG_STREAM_STDERR if stderr else logs_pb2.LOG_STREAM_STDOUT,
        data=text.encode(),
    )
    message.timestamp.FromSeconds(1_795_827_723 + at)
    return message


def test_service_logs_prefixes_lines_and_splits_stdout_and_stderr(fake_manager, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(convergence, "VERIFY_SECONDS", 0.05)
    fake, address = fake_manager
    swarmctl(address, "service", "create", "--name", "web", "--replicas", "2", "busybox")
    one, two = sorted(
        (t for t in fake.tasks if t.desired_state == states.RUNNING), key=lambda t: t.slot
    )
    fake.log_batches = [
        [log_message(one, "hello from 1"), log_message(two, "oops", stderr=True)],
        [log_message(two, "hello from 2", at=1)],
    ]
    result = swarmctl(address, "service", "logs", "web")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"web.1.{one.id[:12]}@node-1    | hello from 1",
        f"web.2.{two.id[:12]}@node-1    | hello from 2",
    ]
    assert result.stderr.splitlines() == [f"web.2.{two.id[:12]}@node-1    | oops"]
    request = fake.requests[-1]
    assert list(request.service_ids) == [one.service_id]
    assert request.options == logs_pb2.LogOptions(follow=False, tail=-1)

    result = swarmctl(
        address, "service", "logs", "-t", "--no-task-ids", "--since", "2026-11-28T01:02:04Z", "web"
    )
    # Engines count --since in whole seconds: the exact cut is swarmctl's.
    assert result.stdout == "2026-11-28T01:02:04.000000000Z web.2@node-1    | hello from 2\n"
    assert fake.requests[-1].options.since.seconds == 1_795_827_724
    result = swarmctl(address, "service", "logs", "--raw", "-n", "1", "web")
    assert result.stdout.splitlines() == ["hello from 1", "hello from 2"]
    assert fake.requests[-1].options.tail == 1


def test_service_logs_of_a_task_by_name_and_of_nothing(fake_manager, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(convergence, "VERIFY_SECONDS", 0.05)
    fake, address = fake_manager
    swarmctl(address, "service", "create", "--name", "web", "--replicas", "2", "busybox")
    two = next(t for t in fake.tasks if t.slot == 2 and t.desired_state == states.RUNNING)
    fake.log_batches = [[log_message(two, "hi")]]
    result = swarmctl(address, "service", "logs", "web.2")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"web.2.{two.id[:12]}@node-1    | hi\n"
    request = fake.requests[-1]
    assert (list(request.service_ids), list(request.task_ids)) == ([], [two.id])
    result = swarmctl(address, "service", "logs", "nothing")
    assert result.exit_code == 1
    assert result.stderr == "Error: no such service or task: nothing\n"
    # --tail 0 without --follow: no line to show, nothing to ask.
    asked = len(fake.requests)
    assert swarmctl(address, "service", "logs", "-n", "0", "web").stdout == ""
    assert len(fake.requests) == asked
    result = swarmctl(address, "service", "logs", "-n", "many", "web")
    assert result.exit_code == 2
    assert "Invalid value for '--tail'" in result.stderr


def test_service_logs_follow_ends_quietly_on_ctrl_c(fake_manager, monkeypatch):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    monkeypatch.setattr(convergence, "VERIFY_SECONDS", 0.05)
    swarmctl(address, "service", "create", "--name", "web", "busybox")
    task = next(t for t in fake.tasks if t.desired_state == states.RUNNING)
    fake.log_batches = [[log_message(task, "first")]]

    def interrupted(*args: object, **kwargs: object) -> NoReturn:
        raise KeyboardInterrupt

    real_echo = typer.echo
    shown: list[str] = []

    def echo_then_interrupt(message: str, err: bool = False) -> None:
        shown.append(message)
        real_echo(message, err=err)
        interrupted()

    monkeypatch.setattr("swarmctl.logs.typer.echo", echo_then_interrupt)
    result = swarmctl(address, "service", "logs", "-f", "web")
    assert result.exit_code == 130
    assert shown == [f"web.1.{task.id[:12]}@node-1    | first"]
    assert "Traceback" not in result.output
    assert fake.requests[-1].options.follow


def event(kind: str, action: str, obj_id: str, name: str, detail: str = ""):  # type: ignore[no-untyped-def]
    message = control_pb2.EventMessage(
        type=kind, action=action, id=obj_id, name=name, detail=detail
    )
    message.time.FromNanoseconds(1_795_827_723_000_000_000)
    return message


def test_events_until_a_deadline_with_filters(fake_manager):  # type: ignore[no-untyped-def]
    fake, address = fake_manager
    fake.events = [
        event("service", "create", "s1", "web"),
        event("task", "update", "t1", "web.1", "state=running desired=running node=n1"),
        event("node", "update", "n1", "node-1", "status=ready availability=active"),
        event("service", "remove", "s1", "web"),
    ]
    result = swarmctl(address, "events", "--until", "300ms")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "2026-11-28T01:02:03.000000000Z service create s1 (name=web)",
        "2026-11-28T01:02:03.000000000Z task update t1 (name=web.1, state=running, "
        "desired=running, node=n1)",
        "2026-11-28T01:02:03.000000000Z node update n1 (name=node-1, status=ready, "
        "availability=active)",
        "2026-11-28T01:02:03.000000000Z service remove s1 (name=web)",
    ]
    result = swarmctl(
        address, "events", "--until", "200ms", "-f", "type=service", "-f", "event=remove"
    )
    assert result.stdout.splitlines() == [
        "2026-11-28T01:02:03.000000000Z service remove s1 (name=web)"
    ]
    assert list(fake.requests[-1].types) == ["service"]
    result = swarmctl(address, "events", "--since", "10m", "--until", "1s", "--format", "json")
    assert fake.requests[-1].HasField("since")
    first = json.loads(result.stdout.splitlines()[0])
    assert first == {
        "Type": "service",
        "Action": "create",
        "Actor": {"ID": "s1", "Attributes": {"name": "web"}},
        "scope": "swarm",
        "time": 1_795_827_723,
        "timeNano": 1_795_827_723_000_000_000,
    }
    bad = swarmctl(address, "events", "-f", "type=volume")
    assert bad.exit_code == 2
    assert "use type=service, task, node" in bad.stderr
