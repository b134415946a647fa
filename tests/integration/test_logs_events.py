"""`swarmctl service logs` and `swarmctl events` against real managers, agents and
containers: two agents (node-1 and node-2) on the test engine, so the lines of one
service's tasks come from two nodes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from swarmctl.parsing import parse_timestamp
from tests.conftest import Cluster, start_cluster
from tests.harness import BIN, SLEEPER, Agent, wait_until

pytestmark = pytest.mark.docker

# Each task writes a line to stderr, then (a moment later, so that the engine logs
# them in this order) two to stdout, and waits; it exits at once on SIGTERM.
CHATTY = [
    "sh",
    "-c",
    "trap 'exit 0' TERM INT; echo oops-$HOSTNAME >&2; sleep 0.3; echo hello-$HOSTNAME; "
    "echo last-line; sleep 3600 & wait",
]
SEPARATOR = "    | "


@dataclass
class TwoNodes:
    cluster: Cluster
    second: Agent

    def ctl(self, *args: str, check: bool = False, timeout: float = 120.0) -> Any:
        return self.cluster.ctl(*args, check=check, timeout=timeout)

    def hostnames(self) -> dict[str, str]:
        return {n.id: n.description.hostname for n in self.cluster.manager.nodes()}


@pytest.fixture(scope="module")
def two_nodes(docker_client: Any, docker_host: str) -> Iterator[TwoNodes]:
    cluster = start_cluster(docker_client, docker_host)
    second = Agent(
        [cluster.manager.addr],
        docker_host,
        hostname="node-2",
        join_token=cluster.manager.join_token(),
    ).start()
    try:
        wait_until(
            lambda: sum(1 for n in cluster.manager.nodes() if n.status.state == 2) == 2,
            30,
            what="two ready nodes",
        )
        yield TwoNodes(cluster, second)
    finally:
        second.cleanup(docker_client)
        cluster.agent.cleanup(docker_client)
        cluster.manager.cleanup()


def prefix(name: str, task: Any, hostnames: dict[str, str], *, task_id: bool = True) -> str:
    text = f"{name}.{task.slot}"
    if task_id:
        text += f".{task.id[:12]}"
    return f"{text}@{hostnames[task.node_id]}{SEPARATOR}"


def short_cid(task: Any) -> str:
    """The container's hostname: the first 12 characters of its id."""
    return str(task.status.container_status.container_id[:12])


@dataclass
class Follower:
    """A `swarmctl ... -f` process and the lines it printed so far."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    @classmethod
    def start(cls, host: str, *args: str) -> Follower:
        proc = subprocess.Popen(
            [str(BIN / "swarmctl"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SWARMCTL_HOST": host},
        )
        follower = cls(proc)
        follower.thread = threading.Thread(target=follower._read, daemon=True)
        follower.thread.start()
        return follower

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def interrupt(self, timeout: float = 10.0) -> tuple[int, str]:
        """Ctrl-C; the exit code and what it wrote to stderr."""
        self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def test_logs_of_every_task_on_both_nodes(two_nodes: TwoNodes, name: str) -> None:
    two_nodes.ctl(
        "service", "create", "--name", name, "--replicas", "3", SLEEPER, *CHATTY,
        check=True, timeout=90,
    )  # fmt: skip
    tasks = two_nodes.cluster.manager.running_tasks(name)
    hostnames = two_nodes.hostnames()
    assert {hostnames[t.node_id] for t in tasks} == {"node-1", "node-2"}
    stdout = {
        prefix(name, t, hostnames) + text
        for t in tasks
        for text in (f"hello-{short_cid(t)}", "last-line")
    }
    stderr = {prefix(name, t, hostnames) + f"oops-{short_cid(t)}" for t in tasks}

    def all_lines() -> Any:
        out = two_nodes.ctl("service", "logs", name, check=True, timeout=30)
        return out if len(out.stdout.splitlines()) == 6 else None

    out = wait_until(all_lines, 30, 0.5, what="the lines of the 3 tasks")
    # Every line of every task, with its task's prefix; stderr lines on stderr only.
    assert sorted(out.stdout.splitlines()) == sorted(stdout)
    assert sorted(out.stderr.splitlines()) == sorted(stderr)

    # -n 1: the last line of each task (here the stdout one).
    out = two_nodes.ctl("service", "logs", "-n", "1", name, check=True, timeout=30)
    assert sorted(out.stdout.splitlines()) == sorted(
        prefix(name, t, hostnames) + "last-line" for t in tasks
    )
    assert out.stderr == ""

    # -t --no-task-ids: the time in front, no task ids.
    out = two_nodes.ctl("service", "logs", "-t", "--no-task-ids", name, check=True, timeout=30)
    stamped = re.compile(
        rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{9}}Z {name}\.[123]@node-[12]    \| "
    )
    assert len(out.stdout.splitlines()) == 6
    assert all(stamped.match(line) for line in out.stdout.splitlines()), out.stdout

    # One task, by its name; --raw drops the prefixes.
    two = next(t for t in tasks if t.slot == 2)
    out = two_nodes.ctl("service", "logs", "--raw", f"{name}.2", check=True, timeout=30)
    assert out.stdout.splitlines() == [f"hello-{short_cid(two)}", "last-line"]
    assert out.stderr.splitlines() == [f"oops-{short_cid(two)}"]

    # --since: nothing was written in the last second.
    out = two_nodes.ctl("service", "logs", "--since", "1s", name, check=True, timeout=30)
    assert out.stdout == ""
    # --since a duration back past them: every line.
    out = two_nodes.ctl("service", "logs", "--since", "10m", name, check=True, timeout=30)
    assert sorted(out.stdout.splitlines()) == sorted(stdout)
    assert sorted(out.stderr.splitlines()) == sorted(stderr)
    # --since a time between a task's stderr line and its stdout lines (written 0.3 s
    # later): only the lines from then on.
    out = two_nodes.ctl("service", "logs", "-t", f"{name}.2", check=True, timeout=30)
    (oops_at,) = (line.split(" ", 1)[0] for line in out.stderr.splitlines())
    hello_at = out.stdout.splitlines()[0].split(" ", 1)[0]
    between = (parse_timestamp(oops_at) + parse_timestamp(hello_at)) / 2
    out = two_nodes.ctl(
        "service", "logs", "--raw", "--since", f"{between:.6f}", f"{name}.2",
        check=True, timeout=30,
    )  # fmt: skip
    assert out.stdout.splitlines() == [f"hello-{short_cid(two)}", "last-line"]
    assert out.stderr == ""
    two_nodes.ctl("service", "rm", name, check=True)


def test_follow_picks_up_a_restarted_task(two_nodes: TwoNodes, name: str) -> None:
    two_nodes.ctl(
        "service", "create", "--name", name, "--replicas", "2", "--restart-delay", "200ms",
        SLEEPER, *CHATTY, check=True, timeout=90,
    )  # fmt: skip
    manager = two_nodes.cluster.manager
    tasks = manager.running_tasks(name)
    hostnames = two_nodes.hostnames()
    follower = Follower.start(manager.host, "service", "logs", "-f", name)
    try:
        wait_until(lambda: len(follower.lines) >= 4, 30, what="the first lines of -f")
        victim = next(t for t in tasks if t.slot == 1)
        two_nodes.cluster.docker.containers.get(victim.status.container_status.container_id).kill()

        def replacement() -> Any:
            return next(
                (t for t in manager.running_tasks(name) if t.slot == 1 and t.id != victim.id),
                None,
            )

        new = wait_until(replacement, 30, what="a replacement in slot 1")
        expected = prefix(name, new, hostnames) + f"hello-{short_cid(new)}"
        wait_until(lambda: expected in follower.lines, 30, what=f"-f to show {expected!r}")
        last = prefix(name, new, hostnames) + "last-line"
        wait_until(lambda: last in follower.lines, 10, what=f"-f to show {last!r}")
        # The lines of the task that was killed came before, under its own prefix.
        assert prefix(name, victim, hostnames) + f"hello-{short_cid(victim)}" in follower.lines
        code, err = follower.interrupt()
    finally:
        follower.stop()
    assert code == 130
    assert "Traceback" not in err
    two_nodes.ctl("service", "rm", name, check=True)


def event_lines(text: str, object_id: str) -> list[tuple[str, str]]:
    """(type, action) of the lines about one object."""
    out = []
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) >= 4 and parts[3] == object_id:
            out.append((parts[1], parts[2]))
    return out


def test_events_show_a_service_come_and_go(two_nodes: TwoNodes, name: str) -> None:
    manager = two_nodes.cluster.manager
    # --until leaves room for the create, update and rm on a loaded machine (6 s did not).
    watcher = Follower.start(manager.host, "events", "--until", "20s")
    try:
        time.sleep(1.0)  # the watch is open
        created = two_nodes.ctl("service", "create", "-d", "--name", name, SLEEPER, check=True)
        service_id = created.stdout.strip()
        wait_until(lambda: manager.running_tasks(name), 30, what="the task running")
        two_nodes.ctl("service", "update", "-d", "--label-add", "a=b", name, check=True)
        two_nodes.ctl("service", "rm", name, check=True)
        assert watcher.proc.wait(30) == 0
        assert watcher.thread is not None
        watcher.thread.join(5)
    finally:
        watcher.stop()
    text = "\n".join(watcher.lines)
    assert event_lines(text, service_id) == [
        ("service", "create"),
        ("service", "update"),
        ("service", "remove"),
    ], text
    line = next(x for x in watcher.lines if f" service create {service_id} " in x)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z service create ", line)
    assert line.endswith(f"(name={name})")
    # Its task's life: created, running, and (shut down and) removed.
    task_lines = [x for x in watcher.lines if f" (name={name}.1, " in x]
    assert task_lines[0].split(" ")[1:3] == ["task", "create"]
    assert any("state=running" in x for x in task_lines)
    assert task_lines[-1].split(" ")[1:3] == ["task", "remove"]

    # --since replays what the manager remembers.
    replay = two_nodes.ctl("events", "--since", "1m", "--until", "0s", check=True).stdout
    assert event_lines(replay, service_id) == event_lines(text, service_id)
    # type=service: the service's changes, and nothing about its task or the nodes.
    services = two_nodes.ctl(
        "events", "--since", "1m", "--until", "0s", "--filter", "type=service", check=True
    ).stdout
    assert event_lines(services, service_id) == event_lines(text, service_id)
    assert {line.split(" ")[1] for line in services.splitlines()} == {"service"}
    assert not any(f" (name={name}.1, " in line for line in services.splitlines())


def test_events_filtered_to_nodes(two_nodes: TwoNodes, name: str) -> None:
    manager = two_nodes.cluster.manager
    watcher = Follower.start(manager.host, "events", "--until", "4s", "--filter", "type=node")
    try:
        time.sleep(1.0)
        two_nodes.ctl("service", "create", "-d", "--name", name, SLEEPER, check=True)
        two_nodes.ctl("node", "update", "--label-add", "zone=a", "node-2", check=True)
        assert watcher.proc.wait(15) == 0
        assert watcher.thread is not None
        watcher.thread.join(5)
    finally:
        watcher.stop()
    assert watcher.lines, "no node event"
    assert all(line.split(" ")[1] == "node" for line in watcher.lines), watcher.lines
    assert any(
        " node update " in line and "(name=node-2, status=ready, availability=active)" in line
        for line in watcher.lines
    ), watcher.lines
    # The nodes joined when the cluster started: replayed, and nothing but nodes.
    replay = two_nodes.ctl(
        "events", "--since", "10m", "--until", "0s", "-f", "type=node", check=True
    ).stdout.splitlines()
    assert {line.split(" ")[1] for line in replay} == {"node"}
    assert any("(name=node-1, " in line for line in replay)
    assert any("(name=node-2, " in line for line in replay)
    two_nodes.ctl("service", "rm", name, check=True)
