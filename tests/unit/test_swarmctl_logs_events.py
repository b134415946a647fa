"""`service logs` prefixes and options, and `events` lines: the rendering, without a
manager."""

from __future__ import annotations

import pytest

from common.api import control_pb2, logs_pb2, objects_pb2
from swarmctl.errors import NotFound
from swarmctl.events import detail_attributes, event_line
from swarmctl.logs import Prefixes, format_line, log_options, parse_tail, slot_width
from swarmctl.parsing import FlagValueError

NOW = 1_795_827_723.0


def task(task_id: str, slot: int, node: str = "n1", service: str = "web") -> objects_pb2.Task:
    t = objects_pb2.Task(id=task_id, service_id="s1", slot=slot, node_id=node)
    t.annotations.name = f"{service}.{slot}"
    return t


class FakeClient:
    """ListTasks/ListNodes/GetTask from lists that a test can add to; counts the calls."""

    def __init__(self) -> None:
        self.tasks = [task("a" * 25, 1), task("b" * 25, 2, node="n2")]
        self.nodes = {"n1": "node-1", "n2": "node-2"}
        self.calls: list[str] = []

    def list_tasks(self, filters: object = None) -> list[objects_pb2.Task]:
        self.calls.append("ListTasks")
        return list(self.tasks)

    def list_nodes(self, filters: object = None) -> list[objects_pb2.Node]:
        self.calls.append("ListNodes")
        nodes = []
        for node_id, hostname in self.nodes.items():
            node = objects_pb2.Node(id=node_id)
            node.description.hostname = hostname
            nodes.append(node)
        return nodes

    def get_task(self, ref: str) -> objects_pb2.Task:
        self.calls.append("GetTask")
        raise NotFound(f"task {ref} not found")


def context(task_id: str, node: str = "n1") -> logs_pb2.LogContext:
    return logs_pb2.LogContext(service_id="s1", node_id=node, task_id=task_id)


def test_prefixes_name_the_slot_task_and_node_like_docker() -> None:
    client = FakeClient()
    prefixes = Prefixes(client, ["s1"])
    prefixes.load()
    assert prefixes.prefix(context("a" * 25)) == "web.1.aaaaaaaaaaaa@node-1"
    assert prefixes.prefix(context("b" * 25, "n2")) == "web.2.bbbbbbbbbbbb@node-2"
    assert client.calls == ["ListTasks", "ListNodes"]
    quiet = Prefixes(client, ["s1"], task_ids=False)
    quiet.load()
    assert quiet.prefix(context("a" * 25)) == "web.1@node-1"
    full = Prefixes(client, ["s1"], no_trunc=True, resolve=False)
    full.load()
    assert full.prefix(context("a" * 25)) == f"s1.1.{'a' * 25}@n1"
    # Docker pads one-digit slots when a service has ten or more.
    wide = Prefixes(client, ["s1"], slot_width=2)
    wide.load()
    assert wide.prefix(context("a" * 25)) == "web.1.aaaaaaaaaaaa@node-1 "


def test_prefixes_look_up_tasks_and_nodes_that_appear_later_once() -> None:
    client = FakeClient()
    prefixes = Prefixes(client, ["s1"])
    prefixes.load()
    client.tasks.append(task("c" * 25, 1, node="n3"))
    client.nodes["n3"] = "node-3"
    client.calls.clear()
    assert prefixes.prefix(context("c" * 25, "n3")) == "web.1.cccccccccccc@node-3"
    assert client.calls == ["ListTasks", "ListNodes"]
    client.calls.clear()
    assert prefixes.prefix(context("c" * 25, "n3")) == "web.1.cccccccccccc@node-3"
    assert client.calls == []
    # A task the manager no longer knows keeps its id, and is asked about only once.
    assert prefixes.prefix(context("d" * 25)) == "dddddddddddd@node-1"
    assert prefixes.prefix(context("d" * 25)) == "dddddddddddd@node-1"
    assert client.calls == ["ListTasks", "GetTask"]


def test_log_lines_and_options() -> None:
    message = logs_pb2.LogMessage(data=b"hello\n")
    message.timestamp.FromNanoseconds(1_795_827_723_000_000_500)
    assert format_line(message, "web.1@node-1") == "web.1@node-1    | hello"
    assert format_line(message, "web.1@node-1", timestamps=True) == (
        "2026-11-28T01:02:03.000000500Z web.1@node-1    | hello"
    )
    assert format_line(message, "", raw=True) == "hello"
    assert parse_tail("all") is None
    assert parse_tail("10") == 10
    with pytest.raises(FlagValueError):
        parse_tail("-1")
    options, cut = log_options(follow=False, tail=None, since=None, now=NOW)
    assert (options.tail, options.HasField("since"), cut) == (-1, False, None)
    options, cut = log_options(follow=True, tail=5, since=NOW - 60, now=NOW)
    assert (options.tail, options.since.seconds, cut) == (5, int(NOW - 60), NOW - 60)
    # The manager reads tail 0 as everything: --tail 0 asks for the lines from now on.
    options, cut = log_options(follow=True, tail=0, since=None, now=NOW)
    assert (options.tail, options.since.seconds, cut) == (-1, int(NOW), NOW)
    svc = objects_pb2.Service()
    svc.spec.replicated.replicas = 12
    assert slot_width([svc]) == 2
    assert slot_width([]) == 1


def test_event_lines_carry_the_detail_as_attributes() -> None:
    event = control_pb2.EventMessage(
        type="task",
        action="update",
        id="t1",
        name="web.1",
        detail="state=failed desired=running node=n1 err=task: non-zero exit (1) a=b",
    )
    event.time.FromNanoseconds(1_795_827_723_000_000_000)
    assert event_line(event) == (
        "2026-11-28T01:02:03.000000000Z task update t1 (name=web.1, state=failed, "
        "desired=running, node=n1, err=task: non-zero exit (1) a=b)"
    )
    assert detail_attributes("") == []
    assert detail_attributes("something odd") == [("detail", "something odd")]
    bare = control_pb2.EventMessage(type="service", action="remove", id="s1")
    assert event_line(bare).endswith(" service remove s1")
