"""swarm-manager's command line: etcd credentials that would be ignored or cannot work
are refused before anything starts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from manager.daemon.main import app

CLEAN_ENV: dict[str, str | None] = {"SWARMLET_ETCD_USER": None, "SWARMLET_ETCD_PASSWORD": None}


def manager(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(
        app, ["--state-dir", str(tmp_path / "state"), *args], env={**CLEAN_ENV, **(env or {})}
    )


def text(result: Result) -> str:
    """The output without the error box's frame and line breaks."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "x.pem"
    path.write_text("not used: refused before it is read\n")
    return path


@pytest.mark.parametrize("option", ["--etcd-cacert", "--etcd-cert", "--etcd-key"])
def test_etcd_tls_files_without_etcd_are_refused(tmp_path: Path, pem: Path, option: str) -> None:
    result = manager(tmp_path, option, str(pem))
    assert result.exit_code == 2
    assert f"{option} only apply to an external etcd given with --etcd" in text(result)
    assert "Traceback" not in text(result)
    assert not (tmp_path / "state").exists()  # nothing started


def test_etcd_user_without_etcd_is_refused_also_from_the_environment(tmp_path: Path) -> None:
    for args, env in [(["--etcd-user", "root"], {}), ([], {"SWARMLET_ETCD_USER": "root"})]:
        result = manager(tmp_path, *args, env=env)
        assert result.exit_code == 2
        assert "--etcd-user (or SWARMLET_ETCD_USER) only apply" in text(result)
    result = manager(tmp_path, env={"SWARMLET_ETCD_PASSWORD": "pw"})
    assert result.exit_code == 2
    assert "SWARMLET_ETCD_PASSWORD only apply" in text(result)


@pytest.mark.parametrize("option", ["--etcd-cert", "--etcd-key"])
def test_etcd_cert_and_key_go_together(tmp_path: Path, pem: Path, option: str) -> None:
    args = ["--etcd", "https://127.0.0.1:1", "--etcd-cacert", str(pem), option, str(pem)]
    result = manager(tmp_path, *args)
    assert result.exit_code == 2
    assert "--etcd-cert and --etcd-key go together" in text(result)


def test_etcd_cert_needs_the_ca(tmp_path: Path, pem: Path) -> None:
    result = manager(
        tmp_path, "--etcd", "https://127.0.0.1:1", "--etcd-cert", str(pem), "--etcd-key", str(pem)
    )
    assert result.exit_code == 2
    assert "--etcd-cert needs --etcd-cacert" in text(result)


def test_missing_etcd_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = manager(tmp_path, "--etcd", "https://127.0.0.1:1", "--etcd-cacert", str(missing))
    assert result.exit_code == 2
    assert "does not exist" in text(result)
