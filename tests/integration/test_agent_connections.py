"""An agent whose sessions fail does not keep their connections open.

gRPC Python closes a channel's connection only once the Python objects of its calls are
freed, not when the channel is closed (grpc/grpc#42125), and a failed session's
traceback held them in reference cycles until the garbage collector ran. In a
reconnection storm at 5,000 hollow nodes that left 20,000 connections open and the
manager out of file descriptors. Here ten hollow agents lose their sessions to a
stalled manager and open new ones; afterwards each holds exactly one connection.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.harness import Agent, Manager, wait_until

NODES = 10
_ESTABLISHED = "01"


def established_to(pid: int, port: int) -> int:
    """TCP connections of process `pid` to local `port` that are established."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == _ESTABLISHED and fields[9] in inodes:
                count += 1
    return count


def test_failed_sessions_leave_no_connections_behind() -> None:
    manager = Manager().start()
    farm: Agent | None = None
    try:
        farm = Agent(
            [manager.addr],
            "unix:///nonexistent",
            join_token=manager.join_token(),
            extra=["--executor", "hollow", "--count", str(NODES)],
        ).start()
        assert farm.process.proc is not None
        assert manager.process.proc is not None
        farm_pid = farm.process.proc.pid

        def ready() -> int:
            return sum(1 for n in manager.nodes() if n.status.state == 2)

        def one_each() -> bool:
            count = established_to(farm_pid, manager.port)
            assert count == NODES, f"{count} connections for {NODES} agents"
            return True

        wait_until(lambda: ready() == NODES, 60, what=f"{NODES} nodes ready")
        wait_until(one_each, 15, what="one connection per agent")
        # Stalled for longer than three heartbeat periods: every agent gives its session
        # up, and its attempts to open another time out until the manager runs again.
        manager.process.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(5)
        finally:
            manager.process.proc.send_signal(signal.SIGCONT)
        wait_until(lambda: ready() == NODES, 60, what=f"{NODES} nodes ready again")
        wait_until(one_each, 15, what="one connection per agent, none left of the failed sessions")
        assert farm.process.proc.poll() is None
    finally:
        if farm is not None:
            farm.cleanup(None)
        manager.cleanup()
