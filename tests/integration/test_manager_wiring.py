"""The manager's wiring (manager/daemon/server.py, stages.py) undoes what it started in
the reverse order, also when start-up fails halfway: a manager that could not listen
leaves no etcd child, no control socket and no lock behind, and the same state dir
starts a working manager at once. In-process, with the real embedded etcd."""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
from pathlib import Path

import pytest

from manager.daemon.config import ManagerConfig, ManagerError
from manager.daemon.server import running_manager
from tests.harness import free_port_pair, remove_tree, short_tmpdir

pytestmark = pytest.mark.slow


def etcd_children() -> list[int]:
    """This process's etcd children (the embedded etcd is one)."""
    found = []
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            comm = Path(f"/proc/{child}/comm")
            if comm.exists() and comm.read_text().strip() == "etcd":
                found.append(int(child))
    return found


def lock_is_free(state_dir: Path) -> bool:
    fd = os.open(state_dir / "manager.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


async def test_a_failed_start_undoes_everything_and_the_state_dir_starts_again() -> None:
    state = short_tmpdir("swl-w-")
    port = free_port_pair()
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        config = ManagerConfig(state_dir=state, listen_addr=f"127.0.0.1:{port}")
        # It gets as far as etcd, the cluster and its node before the port is refused.
        with pytest.raises(ManagerError, match="address already in use"):
            async with running_manager(config):
                pytest.fail("the manager started on a taken port")
        assert etcd_children() == []
        assert not config.control_socket.exists()
        assert lock_is_free(state)
        taken.close()
        async with running_manager(config) as manager:
            assert manager.dispatcher_port == port
            assert config.control_socket.exists()
            assert etcd_children()
            await asyncio.sleep(0)
        assert etcd_children() == []
        assert not config.control_socket.exists()
        assert lock_is_free(state)
    finally:
        taken.close()
        remove_tree(state)
