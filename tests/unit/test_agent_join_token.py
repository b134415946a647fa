"""swarm-agent takes its join token from SWARMLET_JOIN_TOKEN, from a private file
(--join-token-file, mode 0600) or, for compatibility, from --join-token; a token file
others can read is refused with a message saying how to fix it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from agent.main import app
from agent.tokenfile import TokenFileError, choose_token, read_token_file

TOKEN = "SWMTKN-1-" + "0" * 50 + "-" + "1" * 25


@pytest.fixture(autouse=True)
def _keep_test_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # The agent's command line configures logging onto CliRunner's stderr, which is
    # closed when the invocation ends: every later test's log line would fail with
    # "I/O operation on closed file".
    monkeypatch.setattr("agent.main.setup_logging", lambda *args: None)


def token_file(tmp_path: Path, mode: int, text: str = TOKEN + "\n") -> Path:
    path = tmp_path / "join-token"
    path.write_text(text)
    path.chmod(mode)
    return path


def agent(tmp_path: Path, *args: str, env: dict[str, str | None] | None = None) -> Result:
    """The agent's command line, as far as it goes without a manager (hollow: no Docker)."""
    base = ["--manager", "127.0.0.1:9", "--executor", "hollow"]
    base += ["--state-dir", str(tmp_path / "state")]
    return CliRunner().invoke(app, [*base, *args], env={"SWARMLET_JOIN_TOKEN": None, **(env or {})})


def text(result: Result) -> str:
    """The output without the error box's frame and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_file_gives_its_token(tmp_path: Path, mode: int) -> None:
    assert read_token_file(token_file(tmp_path, mode, f"  {TOKEN}\n\n")) == TOKEN


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602])
def test_a_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = token_file(tmp_path, mode)
    with pytest.raises(TokenFileError, match=f"mode {mode:04o}.*chmod 600 {path}"):
        read_token_file(path)


def test_a_missing_empty_or_odd_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="does not exist"):
        read_token_file(tmp_path / "nope")
    with pytest.raises(TokenFileError, match="is empty"):
        read_token_file(token_file(tmp_path, 0o600, " \n"))
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(TokenFileError, match="not a regular file"):
        read_token_file(tmp_path / "dir")


def test_a_token_given_two_ways_is_refused(tmp_path: Path) -> None:
    assert choose_token(TOKEN, None) == TOKEN
    assert choose_token("", token_file(tmp_path, 0o600)) == TOKEN
    with pytest.raises(TokenFileError, match="given twice"):
        choose_token(TOKEN, token_file(tmp_path, 0o600))


def test_the_command_line_refuses_a_readable_file_before_starting(tmp_path: Path) -> None:
    path = token_file(tmp_path, 0o644)
    result = agent(tmp_path, "--join-token-file", str(path))
    assert result.exit_code == 2
    assert f"chmod 600 {path}" in text(result)
    assert TOKEN not in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "state").exists()


def test_the_command_line_refuses_a_file_and_the_environment(tmp_path: Path) -> None:
    path = token_file(tmp_path, 0o600)
    result = agent(tmp_path, "--join-token-file", str(path), env={"SWARMLET_JOIN_TOKEN": TOKEN})
    assert result.exit_code == 2
    assert "given twice" in text(result)


@pytest.mark.parametrize("how", ["file", "environment", "option"])
def test_each_way_reaches_the_agent(tmp_path: Path, how: str) -> None:
    # A malformed token gets as far as the agent, which refuses it: proof that it came.
    bad = "SWMTKN-1-not-a-token"
    args: list[str] = []
    env: dict[str, str | None] = {}
    if how == "file":
        args = ["--join-token-file", str(token_file(tmp_path, 0o600, bad))]
    elif how == "environment":
        env = {"SWARMLET_JOIN_TOKEN": bad}
    else:
        args = ["--join-token", bad]
    result = agent(tmp_path, *args, env=env)
    assert result.exit_code == 1, result.output
    assert "invalid join token" in result.output
    assert "Traceback" not in result.output


def test_no_token_names_the_safe_ways(tmp_path: Path) -> None:
    result = agent(tmp_path)
    assert result.exit_code == 1
    assert "SWARMLET_JOIN_TOKEN or --join-token-file" in result.output
