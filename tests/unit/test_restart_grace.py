"""When the dispatcher gives up on a session: after 3 missed heartbeat periods, unless
its agent said goodbye, in which case not before the restart grace is over."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from manager.daemon.main import app
from manager.dispatcher.dispatcher import AgentSession, _expired

PERIOD = 1.0


def session(last_heartbeat: float = 100.0) -> AgentSession:
    return AgentSession("s1", "n1", "10.0.0.1", last_heartbeat, PERIOD)


def test_a_session_expires_after_three_missed_periods() -> None:
    s = session()
    assert not _expired(s, 100.0 + 3 * PERIOD)
    assert _expired(s, 100.0 + 3 * PERIOD + 0.01)


def test_a_goodbye_keeps_the_session_for_the_restart_grace() -> None:
    s = session()
    s.leaving_until = 100.0 + 60
    assert not _expired(s, 100.0 + 10)
    assert not _expired(s, 100.0 + 60)
    assert _expired(s, 100.0 + 60.01)


def test_a_grace_shorter_than_three_periods_changes_nothing() -> None:
    s = session()
    s.leaving_until = 100.0  # --agent-restart-grace 0s
    assert not _expired(s, 100.0 + 2 * PERIOD)
    assert _expired(s, 100.0 + 3 * PERIOD + 0.01)


@pytest.mark.parametrize(
    ("value", "why"),
    [("2h", "use 0s (none) to 1h"), ("soon", "soon"), ("-5s", "")],
)
def test_a_bad_restart_grace_is_refused_before_anything_starts(
    tmp_path: Path, value: str, why: str
) -> None:
    result = CliRunner().invoke(
        app, ["--state-dir", str(tmp_path / "state"), "--agent-restart-grace", value]
    )
    out = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert result.exit_code == 2
    assert "Traceback" not in out
    assert why in out
    assert not (tmp_path / "state").exists()
