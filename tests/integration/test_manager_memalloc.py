"""`swarm-manager` runs itself on jemalloc when the host has it (manager/daemon/memalloc.py),
and what it starts (the embedded etcd) inherits the operator's environment, not the
preload. Real manager processes, started through the installed command."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from manager.daemon.memalloc import RESTORE_VARIABLE, find_jemalloc
from tests.harness import BIN, Manager, remove_tree, short_tmpdir

StartManager = Callable[[dict[str, str]], Manager]


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().partition("=")[::2] for entry in raw if entry)


def ready_event(manager: Manager) -> dict[str, object]:
    for line in manager.process.log().splitlines():
        if '"manager ready"' in line:
            event: dict[str, object] = json.loads(line)
            return event
    raise AssertionError(f"no 'manager ready' in the log:\n{manager.process.log()[-3000:]}")


@pytest.fixture
def start_manager() -> Iterator[StartManager]:
    started: list[Manager] = []

    def start(env: dict[str, str]) -> Manager:
        manager = Manager()
        manager.process.env = env
        started.append(manager)
        return manager.start()

    yield start
    for manager in started:
        manager.cleanup()


def test_the_manager_runs_on_jemalloc_and_its_etcd_does_not_inherit_it(
    start_manager: StartManager,
) -> None:
    # A MALLOC_CONF of the operator's is used, and passed on to children as it was.
    manager = start_manager({"SWARMLET_MALLOC": "auto", "MALLOC_CONF": "narenas:2"})
    assert manager.process.proc is not None
    pid = manager.process.proc.pid
    etcd_pid = int((manager.state_dir / "etcd.pid").read_text())
    etcd_env = environment(etcd_pid)
    assert RESTORE_VARIABLE not in etcd_env
    assert "libjemalloc" not in etcd_env.get("LD_PRELOAD", "")
    assert etcd_env.get("MALLOC_CONF") == "narenas:2"
    if find_jemalloc() is None:
        assert "libjemalloc" not in mapped_libraries(pid)
        assert ready_event(manager)["allocator"] == "system"
        pytest.skip("libjemalloc2 is not installed here: the manager runs on the system's malloc")
    assert "libjemalloc" in mapped_libraries(pid)
    assert ready_event(manager)["allocator"] == "jemalloc"
    assert environment(pid)["MALLOC_CONF"] == "narenas:2"


def test_swarmlet_malloc_system_keeps_the_system_allocator(start_manager: StartManager) -> None:
    manager = start_manager({"SWARMLET_MALLOC": "system"})
    assert manager.process.proc is not None
    assert "libjemalloc" not in mapped_libraries(manager.process.proc.pid)
    assert ready_event(manager)["allocator"] == "system"


def test_an_unknown_allocator_is_refused_before_anything_starts() -> None:
    state = short_tmpdir("swl-m-")
    try:
        result = subprocess.run(
            [str(BIN / "swarm-manager"), "--state-dir", str(state / "state")],
            env={**os.environ, "SWARMLET_MALLOC": "tcmalloc"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2
        assert "SWARMLET_MALLOC='tcmalloc' is not an allocator: use auto, jemalloc, system" in (
            result.stderr
        )
        assert "Traceback" not in result.stderr + result.stdout
        assert not (state / "state").exists()
    finally:
        remove_tree(state)
