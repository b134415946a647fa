"""swarmctl's tables and JSON, and the rows of `service ls`, `service ps` and `node ls`."""

from __future__ import annotations

import json

from google.protobuf.timestamp_pb2 import Timestamp

from common import states
from common.api import control_pb2, objects_pb2, specs_pb2, types_pb2
from common.timeutil import duration
from swarmctl import pretty
from swarmctl.node import node_rows
from swarmctl.output import format_port, render_json, render_table, truncate_id
from swarmctl.parsing import parse_platform, parse_publish
from swarmctl.preview import preview_table, rejection_lines, render_preview
from swarmctl.rebalance import count_rows, tasks_per_node
from swarmctl.service import replicas_text, service_rows
from swarmctl.task import current_state, task_error, task_rows

NOW = 1_700_000_000.0
UPDATE_NOW = 1_795_827_723.0


def ts(seconds_ago: float) -> Timestamp:
    t = Timestamp()
    t.FromNanoseconds(int((NOW - seconds_ago) * 1e9))
    return t


# tables


def test_table_is_aligned_like_docker_tabwriter() -> None:
    out = render_table(
        ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"],
        [["abcdefabcdef", "web", "replicated", "3/3", "nginx:1.25", "*:8080->80/tcp"]],
    )
    # Each column is its widest cell plus 3 spaces, at least 10 wide; the last is not padded.
    assert out.splitlines() == [
        "ID             NAME      MODE         REPLICAS   IMAGE        PORTS",
        "abcdefabcdef   web       replicated   3/3        nginx:1.25   *:8080->80/tcp",
    ]


def test_table_has_no_trailing_spaces_and_keeps_empty_cells_aligned() -> None:
    out = render_table(["A", "B", "C"], [["x", "", ""], ["", "y", "z"]])
    assert out.splitlines() == ["A         B         C", "x", "          y         z"]


def test_table_never_truncates_or_wraps(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "20")
    long = "x" * 300
    out = render_table(["NAME", "IMAGE"], [[long, long]])
    assert out.splitlines()[1] == long + "   " + long
    assert "│" not in out
    assert "─" not in out


def test_table_measures_wide_characters_by_cells() -> None:
    out = render_table(["NAME", "X"], [["日本語サービス", "1"], ["web", "2"]])
    # 7 double-width characters take 14 cells.
    assert out.splitlines() == ["NAME             X", "日本語サービス   1", "web              2"]


def test_json_keeps_proto_field_names_and_defaults() -> None:
    svc = objects_pb2.Service(id="s1")
    svc.spec.annotations.name = "web"
    svc.spec.replicated.replicas = 0
    svc.meta.version = 12
    (data,) = json.loads(render_json([svc]))
    assert data["id"] == "s1"
    assert data["spec"]["annotations"]["name"] == "web"
    assert data["spec"]["replicated"] == {"replicas": 0}
    assert data["meta"]["version"] == 12
    assert json.loads(render_json([])) == []


def test_small_formatters() -> None:
    (port,) = parse_publish("8080:80/udp")
    assert format_port(port) == "*:8080->80/udp"
    assert truncate_id("abcdefghijklmnop") == "abcdefghijkl"
    assert truncate_id("abcdefghijklmnop", no_trunc=True) == "abcdefghijklmnop"


# service ls


def service(
    sid: str, name: str, image: str = "nginx", replicas: int | None = 3
) -> objects_pb2.Service:
    svc = objects_pb2.Service(id=sid)
    svc.spec.annotations.name = name
    svc.spec.task.container.image = image
    if replicas is None:
        getattr(svc.spec, "global").SetInParent()
    else:
        svc.spec.replicated.replicas = replicas
    return svc


def test_service_rows() -> None:
    web = service("a" * 25, "web", "nginx@sha256:0123")
    web.spec.endpoint.ports.extend(parse_publish("8080:80") + parse_publish("53/udp"))
    agents = service("b" * 25, "agents", replicas=None)
    statuses = {
        web.id: control_pb2.ServiceStatusCounts(running=2, desired=3),
        agents.id: control_pb2.ServiceStatusCounts(running=4, desired=4),
    }
    assert service_rows([web, agents], statuses) == [
        ["b" * 12, "agents", "global", "4/4", "nginx", ""],
        ["a" * 12, "web", "replicated", "2/3", "nginx", "*:8080->80/tcp,*:0->53/udp"],
    ]
    assert service_rows([web], statuses, no_trunc=True)[0][0] == "a" * 25
    assert service_rows([web], statuses, no_trunc=True)[0][4] == "nginx@sha256:0123"


def test_replicas_text_without_counts_and_with_a_max_per_node() -> None:
    web = service("a", "web", replicas=5)
    assert replicas_text(web, None) == "0/5"
    web.spec.task.placement.max_replicas = 2
    counts = control_pb2.ServiceStatusCounts(running=5, desired=5)
    assert replicas_text(web, counts) == "5/5 (max 2 per node)"


def job(sid: str, name: str, total: int | None) -> objects_pb2.Service:
    svc = objects_pb2.Service(id=sid)
    svc.spec.annotations.name = name
    svc.spec.task.container.image = "batch"
    if total is None:
        svc.spec.global_job.SetInParent()
    else:
        svc.spec.replicated_job.total_completions = total
        svc.spec.replicated_job.max_concurrent = total
    return svc


def test_jobs_in_service_ls() -> None:
    once = job("c" * 25, "once", 5)
    everywhere = job("d" * 25, "everywhere", None)
    statuses = {
        once.id: control_pb2.ServiceStatusCounts(running=0, desired=5, completed=5),
        everywhere.id: control_pb2.ServiceStatusCounts(running=1, desired=4, completed=3),
    }
    assert service_rows([once, everywhere], statuses) == [
        ["d" * 12, "everywhere", "global job", "1/4 (3/4 completed)", "batch", ""],
        ["c" * 12, "once", "replicated job", "0/5 (5/5 completed)", "batch", ""],
    ]
    assert replicas_text(once, None) == "0/5 (0/5 completed)"
    running = control_pb2.ServiceStatusCounts(running=2, desired=5, completed=1)
    assert replicas_text(once, running) == "2/5 (1/5 completed)"


# service ps


def task(
    tid: str,
    slot: int,
    *,
    state: states.TaskState.ValueType = states.RUNNING,
    desired: states.TaskState.ValueType = states.RUNNING,
    age: float = 8,
    node: str = "n1",
    err: str = "",
    created: float = 10,
) -> objects_pb2.Task:
    t = objects_pb2.Task(
        id=tid, service_id="svc", service_name="web", slot=slot, node_id=node, desired_state=desired
    )
    t.spec.container.image = "nginx:1"
    t.status.state = state
    t.status.timestamp.CopyFrom(ts(age))
    t.status.err = err
    t.meta.created_at.CopyFrom(ts(created))
    return t


def test_service_ps_rows_group_slots_newest_first_with_history_indented() -> None:
    tasks = [
        task("t10" + "x" * 22, 10),
        task("old1" + "x" * 21, 1, state=states.FAILED, desired=states.SHUTDOWN, created=60),
        task("new1" + "x" * 21, 1, created=5),
        task("t2" + "x" * 23, 2, node=""),
        task("older1" + "x" * 19, 1, state=states.SHUTDOWN, desired=states.SHUTDOWN, created=90),
    ]
    rows = task_rows(tasks, {"n1": "node-1"}, now=NOW)
    assert [r[1] for r in rows] == ["web.1", " \\_ web.1", " \\_ web.1", "web.2", "web.10"]
    assert [r[0] for r in rows][:3] == ["new1" + "x" * 8, "old1" + "x" * 8, "older1" + "x" * 6]
    assert rows[0][2:6] == ["nginx:1", "node-1", "Running", "Running 8 seconds ago"]
    assert rows[1][4:6] == ["Shutdown", "Failed 8 seconds ago"]
    assert rows[3][3] == ""  # not assigned to a node yet


def test_service_ps_error_and_ports_columns() -> None:
    long_err = "starting container failed: No such image: nosuch:latest"
    failed = task("t" * 25, 1, state=states.REJECTED, desired=states.SHUTDOWN, err=long_err)
    row = task_rows([failed], {}, now=NOW)[0]
    assert row[6] == '"starting container failed: No…"'
    assert len(row[6]) == 32
    assert row[3] == "n1"  # an unknown node shows its id
    assert task_rows([failed], {}, now=NOW, no_trunc=True)[0][6] == f'"{long_err}"'
    running = task("r" * 25, 2)
    running.status.port_status.ports.extend(parse_publish("32768:80"))
    assert task_rows([running], {}, now=NOW)[0][7] == "*:32768->80/tcp"


def test_current_state_and_error_helpers() -> None:
    assert current_state(task("a", 1, age=90), NOW) == "Running about a minute ago"
    assert current_state(task("a", 1, state=states.PENDING, age=0.2), NOW) == (
        "Pending less than a second ago"
    )
    unstamped = objects_pb2.Task(id="a", slot=1)
    assert current_state(unstamped, NOW) == "New"
    assert task_error(task("a", 1, err="line one\nline two")) == '"line one line two"'
    assert task_error(task("a", 1)) == ""


def test_global_task_names_use_the_node_id() -> None:
    rows = task_rows([task("g" * 25, 0, node="nodeid1")], {"nodeid1": "host-1"}, now=NOW)
    assert rows[0][1] == "web.nodeid1"
    assert rows[0][3] == "host-1"


def test_a_jobs_completed_tasks() -> None:
    done = task("j" * 25, 1, state=states.COMPLETE, desired=states.COMPLETE, age=5)
    row = task_rows([done], {"n1": "node-1"}, now=NOW)[0]
    assert row[4:6] == ["Complete", "Complete 5 seconds ago"]
    active = task("k" * 25, 2, state=states.RUNNING, desired=states.COMPLETE, age=3)
    assert task_rows([active], {}, now=NOW)[0][4:6] == ["Complete", "Running 3 seconds ago"]


def test_global_tasks_are_grouped_per_node_under_the_managers_name() -> None:
    def global_task(
        tid: str,
        node_id: str,
        created: float,
        state: states.TaskState.ValueType = states.RUNNING,
        desired: states.TaskState.ValueType = states.RUNNING,
    ) -> objects_pb2.Task:
        t = task(tid + "x" * 20, 0, node=node_id, created=created, state=state, desired=desired)
        t.annotations.name = f"web.{node_id}"
        return t

    tasks = [
        global_task("new_b", "nodeB", created=5),
        global_task("old_a", "nodeA", state=states.FAILED, desired=states.SHUTDOWN, created=50),
        global_task("new_a", "nodeA", created=5),
        global_task("old_b", "nodeB", state=states.SHUTDOWN, desired=states.SHUTDOWN, created=60),
    ]
    rows = task_rows(tasks, {"nodeA": "host-a", "nodeB": "host-b"}, now=NOW)
    assert [(r[0][:5], r[1], r[3]) for r in rows] == [
        ("new_a", "web.nodeA", "host-a"),
        ("old_a", " \\_ web.nodeA", "host-a"),
        ("new_b", "web.nodeB", "host-b"),
        ("old_b", " \\_ web.nodeB", "host-b"),
    ]


# dry-run preview


def preview_of(
    placements: list[tuple[int, str, str, str]], rejections: list[tuple[str, str, str]]
) -> control_pb2.PlacementPreview:
    out = control_pb2.PlacementPreview()
    for slot, node_id, hostname, explanation in placements:
        out.placements.add(
            slot=slot, node_id=node_id, node_hostname=hostname, explanation=explanation
        )
    for node_id, hostname, reason in rejections:
        out.rejections.add(node_id=node_id, node_hostname=hostname, reason=reason)
    return out


def test_preview_of_a_replicated_service() -> None:
    why = "no suitable node (scheduling constraints not satisfied on 2 nodes)"
    preview = preview_of(
        [(2, "", "", why), (1, "n1" + "0" * 23, "node-1", ""), (10, "n1" + "0" * 23, "node-1", "")],
        [
            ("n3" + "0" * 23, "node-3", "scheduling constraints not satisfied"),
            ("n2" + "0" * 23, "node-2", "scheduling constraints not satisfied"),
        ],
    )
    assert render_preview(preview).splitlines() == [
        "SLOT      NODE",
        "1         node-1",
        f"2         not placed: {why}",
        "10        node-1",
        "node node-2 (n20000000000): scheduling constraints not satisfied",
        "node node-3 (n30000000000): scheduling constraints not satisfied",
    ]


def test_preview_of_a_global_service_is_per_node() -> None:
    preview = preview_of(
        [
            (0, "b" * 25, "host-b", ""),
            (0, "a" * 25, "", "no suitable node (insufficient memory on 1 node)"),
        ],
        [("a" * 25, "host-a", "insufficient memory")],
    )
    headers, rows = preview_table(preview)
    assert headers == ("NODE ID", "NODE")
    # Sorted by hostname, the rejected node's name known from its rejection.
    assert rows == [
        ["a" * 12, "not placed: no suitable node (insufficient memory on 1 node)"],
        ["b" * 12, "host-b"],
    ]
    assert rejection_lines(preview) == [f"node host-a ({'a' * 12}): insufficient memory"]
    assert render_preview(control_pb2.PlacementPreview()) == "NODE ID   NODE"


# service inspect --pretty, cluster settings


def test_pretty_placement_and_resources() -> None:
    svc = service("s" * 25, "web")
    placement = svc.spec.task.placement
    placement.constraints.extend(["node.role==worker", "node.labels.zone==a"])
    placement.preferences.add().spread.spread_descriptor = "node.labels.zone"
    placement.platforms.append(parse_platform("linux/amd64"))
    placement.strategy = specs_pb2.PLACEMENT_STRATEGY_BINPACK
    placement.max_replicas = 2
    svc.spec.task.resources.reservations.nano_cpus = 500_000_000
    svc.spec.task.resources.limits.memory_bytes = 512 * 1024 * 1024
    svc.spec.task.container.stop_grace_period.seconds = 10
    lines = pretty.service(svc).splitlines()
    start = lines.index("Placement:")
    assert lines[start : start + 13] == [
        "Placement:",
        " Constraints:   node.role==worker, node.labels.zone==a",
        " Preferences:",
        "  Spread: node.labels.zone",
        " Max Replicas:  2",
        " Platforms:     linux/amd64",
        " Strategy:      binpack",
        "Resources:",
        " Reservations:",
        "  CPU:          0.5",
        " Limits:",
        "  Memory:       512MiB",
        "RestartPolicy:",
    ]
    assert " StopGracePeriod: 10s" in lines
    plain = pretty.service(service("t" * 25, "plain"))
    assert "Placement:" not in plain
    assert "Resources:" not in plain


def test_cluster_settings() -> None:
    cluster = objects_pb2.Cluster(id="c1")
    cluster.spec.orchestration.task_history_retention_limit = 3
    cluster.spec.orchestration.auto_rebalance = True
    cluster.spec.dispatcher.heartbeat_period.seconds = 5
    assert pretty.cluster_settings(cluster).splitlines() == [
        "ID:             c1",
        "Orchestration:",
        " Task History Retention Limit: 3",
        " Auto Rebalance: true",
        "Dispatcher:",
        " Heartbeat Period: 5s",
        "CA Configuration:",
        " Expiry Duration: default",
    ]
    cluster.spec.ca_config.node_cert_expiry.seconds = 7776000
    assert pretty.cluster_settings(cluster).endswith(" Expiry Duration: 2160h")
    assert " Heartbeat Period: default\n" in pretty.cluster_settings(objects_pb2.Cluster(id="c2"))


# service rebalance


def test_rebalance_counts_tasks_meant_to_run_per_node() -> None:
    tasks = [
        task("a", 1, node="n1"),
        task("b", 2, node="n1", state=states.PENDING),
        task("c", 3, node="n1", state=states.SHUTDOWN, desired=states.SHUTDOWN),
        task("d", 4, node="n2"),
        task("e", 5, node="", state=states.PENDING),
        task("f", 6, node="n2", state=states.FAILED),
    ]
    assert dict(tasks_per_node(tasks)) == {"n1": 2, "n2": 1}


def test_rebalance_rows_show_every_usable_node() -> None:
    nodes = [
        node("n1", "node-1"),
        node("n2", "node-2"),
        node("n3", "node-3"),
        node("n4", "node-10", availability=types_pb2.NODE_AVAILABILITY_DRAIN),
        node("n5", "node-5", state=types_pb2.NODE_STATE_DOWN),
    ]
    before = tasks_per_node([task("a", 1, node="n1"), task("b", 2, node="n1")])
    after = tasks_per_node([task("a", 1, node="n1"), task("c", 2, node="n3")])
    assert count_rows(before, after, nodes) == [
        ["node-1", "2", "1"],
        ["node-2", "0", "0"],
        ["node-3", "0", "1"],
    ]
    gone = tasks_per_node([task("x", 1, node="gone")])
    assert count_rows(gone, after, nodes)[0] == ["gone", "1", "0"]


# node ls


def node(
    nid: str,
    hostname: str,
    *,
    state: types_pb2.NodeState.ValueType = types_pb2.NODE_STATE_READY,
    availability: types_pb2.NodeAvailability.ValueType = types_pb2.NODE_AVAILABILITY_ACTIVE,
    leader: bool | None = None,
    reach: objects_pb2.Reachability.ValueType = objects_pb2.REACHABILITY_REACHABLE,
) -> objects_pb2.Node:
    """A node as `node ls` gets it; with `leader` given, a manager."""
    n = objects_pb2.Node(
        id=nid,
        description=objects_pb2.NodeDescription(
            hostname=hostname, engine=objects_pb2.EngineDescription(engine_version="20.10.24")
        ),
    )
    n.status.state = state
    n.spec.CopyFrom(specs_pb2.NodeSpec(availability=availability))
    if leader is not None:
        n.role = types_pb2.NODE_ROLE_MANAGER
        n.manager_status.leader = leader
        n.manager_status.reachability = reach
    return n


def test_node_rows() -> None:
    nodes = [
        node("id3", "worker-10", state=types_pb2.NODE_STATE_DOWN),
        node("id2", "worker-2", availability=types_pb2.NODE_AVAILABILITY_DRAIN),
        node("id1", "manager-1", leader=True),
        node("id4", "manager-2", leader=False, reach=objects_pb2.REACHABILITY_UNREACHABLE),
        node("id5", "worker-3", state=types_pb2.NODE_STATE_DISCONNECTED),
    ]
    assert node_rows(nodes) == [
        ["id1", "manager-1", "Ready", "Active", "Leader", "20.10.24"],
        ["id4", "manager-2", "Ready", "Active", "Unreachable", "20.10.24"],
        ["id2", "worker-2", "Ready", "Drain", "", "20.10.24"],
        ["id5", "worker-3", "Disconnected", "Active", "", "20.10.24"],
        ["id3", "worker-10", "Down", "Active", "", "20.10.24"],
    ]


def test_pretty_shows_the_update_status_and_settings_like_docker() -> None:
    svc = objects_pb2.Service(id="s1")
    svc.spec.annotations.name = "web"
    svc.spec.replicated.replicas = 2
    svc.spec.task.container.image = "busybox"
    svc.spec.update.CopyFrom(
        specs_pb2.UpdateConfig(
            parallelism=2,
            delay=duration(10),
            failure_action=specs_pb2.UPDATE_FAILURE_ACTION_ROLLBACK,
            monitor=duration(3),
            max_failure_ratio=0.25,
            order=specs_pb2.UPDATE_ORDER_START_FIRST,
        )
    )
    svc.spec.rollback.CopyFrom(specs_pb2.UpdateConfig(parallelism=1))
    svc.spec.task.container.healthcheck.CopyFrom(
        specs_pb2.HealthConfig(
            test=["CMD-SHELL", "test -f /tmp/ready"], interval=duration(0.5), retries=1
        )
    )
    status = svc.update_status
    status.state = objects_pb2.UpdateStatus.UPDATE_STATE_ROLLBACK_COMPLETED
    status.started_at.FromSeconds(int(UPDATE_NOW) - 120)
    status.completed_at.FromSeconds(int(UPDATE_NOW) - 8)
    status.message = "rollback completed"
    lines = pretty.service(svc, now=UPDATE_NOW).splitlines()
    start = lines.index("UpdateStatus:")
    assert lines[start : start + 5] == [
        "UpdateStatus:",
        " State:         rollback_completed",
        " Started:       2 minutes ago",
        " Completed:     8 seconds ago",
        " Message:       rollback completed",
    ]
    start = lines.index("UpdateConfig:")
    assert lines[start : start + 7] == [
        "UpdateConfig:",
        " Parallelism:   2",
        " Delay:         10s",
        " On failure:    rollback",
        " Monitoring Period: 3s",
        " Max failure ratio: 0.25",
        " Update order:  start-first",
    ]
    start = lines.index("RollbackConfig:")
    assert lines[start : start + 5] == [
        "RollbackConfig:",
        " Parallelism:   1",
        " On failure:    pause",
        " Max failure ratio: 0",
        " Rollback order: stop-first",
    ]
    assert lines[-5:] == [
        " Healthcheck:",
        "  Command:      test -f /tmp/ready",
        "  Interval:     500ms",
        "  Retries:      1",
        "Endpoint Mode:  vip",
    ]
    # While it runs there is no completion time yet.
    status.state = objects_pb2.UpdateStatus.UPDATE_STATE_UPDATING
    status.message = "update in progress"
    text = pretty.service(svc, now=UPDATE_NOW)
    assert " State:         updating" in text
    assert "Completed:" not in text


# networks, endpoint mode, ports and virtual IPs


def networked_service() -> objects_pb2.Service:
    """A service as the allocator leaves it: virtual IPs and the ingress port it picked."""
    svc = service("n" * 25, "api")
    spec = svc.spec
    spec.task.networks.add(target="frontid")
    spec.task.networks.add(target="backid", aliases=["db-api", "v1"])
    spec.endpoint.ports.extend(
        parse_publish("mode=ingress,published=8080,target=80")
        + parse_publish("mode=ingress,target=443")
        + parse_publish("mode=host,published=9000,target=9000,protocol=udp")
    )
    svc.endpoint.spec.CopyFrom(spec.endpoint)
    for port in spec.endpoint.ports:
        svc.endpoint.ports.add().CopyFrom(port)
    svc.endpoint.ports[1].published_port = 30001
    svc.endpoint.virtual_ips.add(network_id="ingressid", addr="10.255.0.5/16")
    svc.endpoint.virtual_ips.add(network_id="frontid", addr="10.0.1.2/24")
    svc.endpoint.virtual_ips.add(network_id="backid", addr="10.0.2.2/24")
    return svc


NAMES = {"frontid": "front", "backid": "back", "ingressid": "ingress"}


def test_pretty_networks_endpoint_ports_and_virtual_ips() -> None:
    lines = pretty.service(networked_service(), network_names=NAMES).splitlines()
    start = lines.index("Networks:       front back")
    assert lines[start:] == [
        "Networks:       front back",
        " Aliases on back: db-api, v1",
        "Endpoint Mode:  vip",
        "Ports:",
        " PublishedPort = 8080",
        "  Protocol = tcp",
        "  TargetPort = 80",
        "  PublishMode = ingress",
        " PublishedPort = 30001",
        "  Protocol = tcp",
        "  TargetPort = 443",
        "  PublishMode = ingress",
        " PublishedPort = 9000",
        "  Protocol = udp",
        "  TargetPort = 9000",
        "  PublishMode = host",
        "Virtual IPs:",
        " ingress:       10.255.0.5/16",
        " front:         10.0.1.2/24",
        " back:          10.0.2.2/24",
    ]


def test_pretty_before_allocation_and_without_names() -> None:
    svc = networked_service()
    svc.ClearField("endpoint")
    svc.spec.endpoint.mode = specs_pb2.RESOLUTION_MODE_DNSRR
    lines = pretty.service(svc).splitlines()
    assert "Networks:       frontid backid" in lines  # an unknown network shows its id
    assert "Endpoint Mode:  dnsrr" in lines
    assert " PublishedPort = 0" in lines  # not picked yet
    assert "Virtual IPs:" not in lines


def test_service_ls_ports_show_the_picked_ingress_port() -> None:
    svc = networked_service()
    (row,) = service_rows([svc], {})
    assert row[5] == "*:8080->80/tcp,*:30001->443/tcp,*:9000->9000/udp"
    svc.ClearField("endpoint")
    (row,) = service_rows([svc], {})
    assert row[5] == "*:8080->80/tcp,*:0->443/tcp,*:9000->9000/udp"
