"""When the dispatcher gives up on a session: after 3 missed heartbeat periods, unless
its agent said goodbye, in which case not before the restart grace is over."""

from __future__ import annotations

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
