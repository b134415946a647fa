"""The swarmctl command line without a manager: errors, exit codes, usage checks."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from common import pki
from swarmctl.client import DEFAULT_HOST
from swarmctl.main import app

HINT = (
    "Start one with 'swarm-manager' (or 'make demo'), or point swarmctl at one with "
    "-H/--host or SWARMCTL_HOST."
)


def swarmctl(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={"SWARMCTL_HOST": None, **(env or {})})


def test_no_manager_at_a_socket_path(tmp_path: Path) -> None:
    sock = tmp_path / "missing" / "control.sock"
    result = swarmctl("-H", str(sock), "service", "ls")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"Error: cannot reach a swarmlet manager at unix://{sock} (no such socket). {HINT}\n"
    )
    assert "Traceback" not in result.output


def test_no_manager_through_the_environment(tmp_path: Path) -> None:
    sock = tmp_path / "control.sock"
    result = swarmctl("node", "ls", env={"SWARMCTL_HOST": f"unix://{sock}"})
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot reach a swarmlet manager at unix://{sock} ")


def test_tcp_without_an_admin_certificate_says_what_to_give() -> None:
    result = swarmctl("-H", "127.0.0.1:1", "cluster", "inspect")
    assert result.exit_code == 1
    assert "is mutual TLS only: give --tlscacert, --tlscert and --tlskey" in result.stderr


def test_tls_files_must_come_together(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"x")
    result = swarmctl("-H", "127.0.0.1:1", "--tlscacert", str(ca), "cluster", "inspect")
    assert result.exit_code == 2
    assert "give all of --tlscacert, --tlscert and --tlskey" in result.stderr


def test_no_manager_over_tcp(tmp_path: Path) -> None:
    # Real certificate files: swarmctl refuses ones that cannot work before connecting.
    ca = pki.RootCA.create()
    key, cert = ca.issue(node_id="admin", role=pki.ROLE_ADMIN, cluster_id="c1")
    files = []
    for name, data in (("ca.pem", ca.cert_pem), ("cert.pem", cert), ("key.pem", key)):
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    result = swarmctl(
        "-H", "127.0.0.1:1", "--tlscacert", files[0], "--tlscert", files[1],
        "--tlskey", files[2], "cluster", "inspect",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "Error: cannot reach a swarmlet manager at tcp://127.0.0.1:1" in result.stderr


@pytest.mark.skipif(
    os.path.exists("/var/lib/swarmlet/manager/control.sock"), reason="a manager runs here"
)
def test_the_default_address_is_the_local_managers_socket() -> None:
    assert DEFAULT_HOST == "unix:///var/lib/swarmlet/manager/control.sock"
    result = swarmctl("service", "ps", "web")
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: cannot reach a swarmlet manager at {DEFAULT_HOST} (no such socket). {HINT}\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["service", "create", "--replicas", "-1", "busybox"],
            "Invalid value for '--replicas': invalid replicas value -1: must be 0 or more",
        ),
        (
            ["service", "create", "-p", "mode=mesh,target=80", "busybox"],
            "Invalid value for '--publish': invalid port 'mode=mesh,target=80': "
            "unknown publish mode 'mesh'",
        ),
        (
            ["service", "create", "--network", "name=front,driver-opt=a=b", "busybox"],
            "Invalid value for '--network': invalid network 'name=front,driver-opt=a=b': "
            "driver-opt is not supported",
        ),
        (
            ["service", "create", "--endpoint-mode", "rr", "busybox"],
            "Invalid value for '--endpoint-mode': invalid endpoint mode 'rr': use vip or dnsrr",
        ),
        (
            ["service", "update", "--network-add", "alias=x", "web"],
            "Invalid value for '--network-add': invalid network 'alias=x': "
            "network name/id is not specified",
        ),
        (
            ["service", "create", "--restart-delay", "soon", "busybox"],
            "Invalid value for '--restart-delay': invalid duration 'soon'",
        ),
        (
            ["service", "create", "-e", "=x", "busybox"],
            "Invalid value for '--env': invalid environment variable '=x'",
        ),
        (
            ["service", "create", "--restart-condition", "always", "busybox"],
            "Invalid value for '--restart-condition': invalid restart condition 'always'",
        ),
        (
            ["service", "create", "--mode", "global", "--replicas", "2", "busybox"],
            "Invalid value for '--replicas': replicas can only be used with replicated or "
            "replicated-job mode",
        ),
        (
            ["service", "create", "--mode", "global-job", "--replicas", "2", "busybox"],
            "Invalid value for '--replicas': replicas can only be used with replicated or "
            "replicated-job mode",
        ),
        (
            ["service", "create", "--mode", "global", "--replicas-max-per-node", "1", "x"],
            "Invalid value for '--replicas-max-per-node': replicas-max-per-node can only be "
            "used with replicated or replicated-job mode",
        ),
        (
            ["service", "create", "--max-concurrent", "2", "busybox"],
            "Invalid value for '--max-concurrent': max-concurrent can only be used with "
            "replicated-job mode",
        ),
        (
            ["service", "create", "--mode", "job", "busybox"],
            "Invalid value for '--mode': invalid mode 'job': use replicated, global, "
            "replicated-job or global-job",
        ),
        (
            ["service", "create", "--placement-pref", "binpack=node.labels.zone", "busybox"],
            "Invalid value for '--placement-pref': invalid placement preference "
            "'binpack=node.labels.zone': unsupported placement preference 'binpack' "
            "(only spread is supported)",
        ),
        (
            ["service", "create", "--reserve-cpu", "lots", "busybox"],
            "Invalid value for '--reserve-cpu': invalid CPU value 'lots'",
        ),
        (
            ["service", "create", "--limit-memory", "12x", "busybox"],
            "Invalid value for '--limit-memory': invalid memory size '12x'",
        ),
        (
            ["service", "create", "--platform", "linux/arm/v7", "busybox"],
            "Invalid value for '--platform': invalid platform 'linux/arm/v7'",
        ),
        (
            ["service", "create", "--placement-strategy", "random", "busybox"],
            "Invalid value for '--placement-strategy': invalid placement strategy 'random'",
        ),
        (
            ["service", "create", "--constraint", "", "busybox"],
            "Invalid value for '--constraint': invalid constraint ''",
        ),
        (
            ["service", "create", "--format", "json", "busybox"],
            "Invalid value for '--format': --format can only be used with --dry-run",
        ),
        (
            ["service", "update", "--placement-pref-rm", "zone", "web"],
            "Invalid value for '--placement-pref-rm': invalid placement preference 'zone'",
        ),
        (
            ["service", "update", "--reserve-memory", "-1", "web"],
            "Invalid value for '--reserve-memory': invalid memory size '-1'",
        ),
        (
            ["service", "update", "--platform-add", "", "web"],
            "Invalid value for '--platform-add': invalid platform ''",
        ),
        (
            ["service", "update", "--max-concurrent", "-1", "web"],
            "Invalid value for '--max-concurrent': invalid max-concurrent value -1",
        ),
        (
            ["service", "rebalance", "--timeout", "soon", "web"],
            "Invalid value for '--timeout': invalid duration 'soon'",
        ),
        (
            ["cluster", "update"],
            "nothing to update: give --task-history-limit, --heartbeat-period, --auto-rebalance or "
            "--cert-expiry",
        ),
        (
            ["cluster", "update", "--auto-rebalance", "maybe"],
            "Invalid value for '--auto-rebalance': invalid boolean 'maybe': use true or false",
        ),
        (
            ["cluster", "update", "--heartbeat-period", "0s"],
            "Invalid value for '--heartbeat-period': invalid duration '0s': must be more than 0",
        ),
        (
            ["cluster", "update", "--task-history-limit", "-2"],
            "Invalid value for '--task-history-limit': invalid task history limit value -2",
        ),
        (
            ["service", "create", "--timeout", "forever", "busybox"],
            "Invalid value for '--timeout': invalid duration 'forever'",
        ),
        (
            ["service", "update", "--rollback", "--image", "x", "web"],
            "Invalid value for '--rollback': --rollback cannot be combined",
        ),
        (
            ["service", "create", "--update-failure-action", "retry", "busybox"],
            "Invalid value for '--update-failure-action': invalid failure action 'retry': "
            "use pause, continue or rollback",
        ),
        (
            ["service", "update", "--rollback-failure-action", "rollback", "web"],
            "Invalid value for '--rollback-failure-action': invalid failure action 'rollback': "
            "use pause or continue",
        ),
        (
            ["service", "update", "--update-max-failure-ratio", "2", "web"],
            "Invalid value for '--update-max-failure-ratio': invalid failure ratio '2'",
        ),
        (
            ["service", "create", "--update-order", "first", "busybox"],
            "Invalid value for '--update-order': invalid update order 'first'",
        ),
        (
            ["service", "create", "--no-healthcheck", "--health-cmd", "true", "busybox"],
            "Invalid value for '--no-healthcheck': --no-healthcheck conflicts with --health-* "
            "options",
        ),
        (
            ["service", "update", "--health-interval", "often", "web"],
            "Invalid value for '--health-interval': invalid duration 'often'",
        ),
        (
            ["service", "logs", "--since", "yesterday", "web"],
            "Invalid value for '--since': invalid time 'yesterday'",
        ),
        (
            ["events", "--until", "later"],
            "Invalid value for '--until': invalid time 'later'",
        ),
        (
            ["service", "scale", "web"],
            "Invalid value for 'SERVICE=REPLICAS': invalid scale specifier 'web'",
        ),
        (
            ["service", "ls", "--format", "yaml"],
            "Invalid value for '--format': unsupported format 'yaml': use table or json",
        ),
        (
            ["service", "ps", "-f", "desired-state=sleeping", "web"],
            "Invalid value for '--filter desired-state': unknown task state 'sleeping'",
        ),
        (
            ["node", "update", "--availability", "off", "n1"],
            "Invalid value for '--availability': invalid availability 'off': "
            "use active, pause or drain",
        ),
        (
            ["-H", "http://mgr", "service", "ls"],
            "Invalid value for '-H' / '--host': invalid manager address 'http://mgr'",
        ),
    ],
)
def test_bad_flag_values_are_usage_errors(args: list[str], message: str) -> None:
    result = swarmctl("-H", "/nonexistent/control.sock", *args)
    assert result.exit_code == 2, result.output
    assert f"Error: {message}" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_options_after_the_image_belong_to_the_container(tmp_path: Path) -> None:
    # `-p` after IMAGE is the container's argument, not swarmctl's flag, so the bad
    # port is never parsed: swarmctl gets as far as calling the manager.
    result = swarmctl(
        "-H", str(tmp_path / "no.sock"), "service", "create", "busybox", "ls", "-p", "x"
    )
    assert result.exit_code == 1
    assert "cannot reach a swarmlet manager" in result.stderr


def test_help_and_version() -> None:
    result = swarmctl("--help")
    assert result.exit_code == 0
    for group in ("service", "node", "task", "cluster", "events"):
        assert group in result.stdout
    assert swarmctl("--version").stdout.startswith("swarmctl ")
    commands = swarmctl("service", "--help").stdout
    for command in (
        "create",
        "ls",
        "ps",
        "inspect",
        "scale",
        "update",
        "rollback",
        "logs",
        "rm",
        "rebalance",
    ):
        assert f"  {command} " in commands
    assert "  update " in swarmctl("cluster", "--help").stdout


def test_help_says_which_flags_are_swarmlet_extensions() -> None:
    # Help is wrapped at 80 columns, sometimes after a hyphen: join the words again.
    create = re.sub(r"- ", "-", " ".join(swarmctl("service", "create", "--help").stdout.split()))
    for flag in ("--placement-strategy", "--platform", "--dry-run"):
        assert flag in create
    assert create.count("(swarmlet extension)") == 3
    for flag in ("--constraint", "--placement-pref", "--reserve-cpu", "--limit-memory"):
        assert flag in create
    assert "replicated, global, replicated-job or global-job" in create
    rebalance = " ".join(swarmctl("service", "rebalance", "--help").stdout.split())
    assert "(swarmlet extension)" in rebalance
    assert "moby#24103" in rebalance


def test_an_unexpected_failure_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something odd")

    monkeypatch.setattr("swarmctl.client.ControlClient.list_services", broken)
    result = swarmctl("-H", str(tmp_path / "c.sock"), "service", "ls")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: unexpected RuntimeError: something odd (run with --debug for details)\n"
    )
    # --debug sets logging up for the process; keep that out of the test session.
    monkeypatch.setattr("swarmctl.main.setup_logging", lambda *a: None)
    debug = swarmctl("-H", str(tmp_path / "c.sock"), "--debug", "service", "ls")
    assert isinstance(debug.exception, RuntimeError)
