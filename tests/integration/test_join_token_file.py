"""An agent joins with its token read from a private file (--join-token-file), and the
token is nowhere on its command line (what `ps` shows every user of the host). Real
manager, real agent (hollow: the join is what is tested, not containers)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Agent, Manager, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def manager() -> Iterator[Manager]:
    m = Manager().start()
    try:
        yield m
    finally:
        m.cleanup()


def test_an_agent_joins_with_the_token_from_a_private_file(manager: Manager) -> None:
    token = manager.join_token("worker")
    agent = Agent([manager.addr], "unix:///nonexistent", extra=["--executor", "hollow"])
    token_file = agent.state_dir / "join-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    agent.process.args += ["--join-token-file", str(token_file)]
    try:
        agent.start()
        assert agent.process.proc is not None
        cmdline = Path(f"/proc/{agent.process.proc.pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline
        node_id = agent.node_id
        wait_until(
            lambda: any(n.id == node_id and n.status.state == 2 for n in manager.nodes()),
            30,
            what="the agent's node to be ready",
        )
    finally:
        agent.cleanup(None)


def test_an_agent_refuses_a_token_file_others_can_read(manager: Manager) -> None:
    agent = Agent([manager.addr], "unix:///nonexistent", extra=["--executor", "hollow"])
    token_file = agent.state_dir / "join-token"
    token_file.write_text(manager.join_token("worker") + "\n")
    token_file.chmod(0o644)
    agent.process.args += ["--join-token-file", str(token_file)]
    try:
        agent.start()
        assert agent.process.proc is not None
        assert agent.process.proc.wait(30) == 2
        log = agent.process.log()
        assert "chmod 600" in log
        assert "Traceback" not in log
        assert not list(agent.state_dir.glob("**/certificates/node.crt"))
    finally:
        agent.cleanup(None)
