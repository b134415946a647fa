"""swarmctl's flag value parsing: ports, env, labels, durations, counts, filters, -H."""

from __future__ import annotations

import os

import pytest

from common.api import specs_pb2, types_pb2
from swarmctl.client import ManagerAddress
from swarmctl.parsing import (
    FlagValueError,
    parse_command,
    parse_duration_value,
    parse_env,
    parse_env_key,
    parse_filters,
    parse_label,
    parse_label_key,
    parse_port_ref,
    parse_publish,
    parse_replicas,
    parse_restart_condition,
    parse_scale,
)

TCP, UDP = types_pb2.PORT_PROTOCOL_TCP, types_pb2.PORT_PROTOCOL_UDP


def ports(text: str) -> list[tuple[int, int, int]]:
    """(published, target, protocol) of each PortConfig; all must be host mode."""
    out = []
    for port in parse_publish(text):
        assert port.publish_mode == types_pb2.PUBLISH_MODE_HOST
        out.append((port.published_port, port.target_port, port.protocol))
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:80", [(8080, 80, TCP)]),
        ("8080:80/tcp", [(8080, 80, TCP)]),
        ("5353:53/udp", [(5353, 53, UDP)]),
        ("80", [(0, 80, TCP)]),
        ("53/UDP", [(0, 53, UDP)]),
        ("0:80", [(0, 80, TCP)]),
        ("8000-8001:80-81", [(8000, 80, TCP), (8001, 81, TCP)]),
        ("80-81", [(0, 80, TCP), (0, 81, TCP)]),
        ("mode=host,target=80,published=8080,protocol=tcp", [(8080, 80, TCP)]),
        ("target=53,protocol=udp", [(0, 53, UDP)]),
        ("published=8080,target=80", [(8080, 80, TCP)]),
    ],
)
def test_publish_short_and_long_syntax(text: str, expected: list[tuple[int, int, int]]) -> None:
    assert ports(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected [PUBLISHED:]TARGET[/PROTOCOL]"),
        ("abc", "target port 'abc' is not a number"),
        ("80:abc", "target port 'abc' is not a number"),
        ("8080:0", "target port 0 is out of range (1-65535)"),
        ("70000", "target port 70000 is out of range"),
        ("127.0.0.1:8080:80", "a host IP is not supported"),
        ("80/icmp", "unknown protocol 'icmp'; use tcp, udp or sctp"),
        ("8000-8002:80-81", "the published range has 3 ports and the target range 2"),
        ("mode=host,published=8080", "target is missing"),
        ("target=80,color=blue", "unknown field 'color'"),
        ("target=80,published", "'published' is not key=value"),
        ("mode=bogus,target=80", "unknown mode 'bogus'; use mode=host"),
    ],
)
def test_publish_errors_name_the_value_and_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(FlagValueError) as err:
        parse_publish(text)
    assert message in str(err.value)
    assert repr(text) in str(err.value)


def test_publish_mode_ingress_explains_there_is_no_routing_mesh() -> None:
    with pytest.raises(FlagValueError) as err:
        parse_publish("mode=ingress,target=80,published=8080")
    assert "swarmlet has no routing mesh" in str(err.value)
    assert "use mode=host" in str(err.value)


def test_publish_rm_takes_a_target_and_protocol() -> None:
    assert parse_port_ref("80") == (80, TCP)
    assert parse_port_ref("8080:80/udp") == (80, UDP)
    with pytest.raises(FlagValueError, match="one port at a time"):
        parse_port_ref("80-81")


def test_env() -> None:
    assert parse_env("A=1") == "A=1"
    assert parse_env("A=") == "A="
    assert parse_env("A=b=c") == "A=b=c"
    assert parse_env("HOME", {"HOME": "/root"}) == "HOME=/root"
    with pytest.raises(FlagValueError, match="where it is not set"):
        parse_env("NOPE", {})
    for bad in ("=1", "", "A B=1"):
        with pytest.raises(FlagValueError, match="expected KEY=VALUE"):
            parse_env(bad)
    assert parse_env_key("A") == "A"
    with pytest.raises(FlagValueError, match="expected KEY"):
        parse_env_key("A=1")


def test_env_from_the_real_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARMCTL_TEST_VAR", "x y")
    assert parse_env("SWARMCTL_TEST_VAR") == "SWARMCTL_TEST_VAR=x y"
    assert "SWARMCTL_TEST_VAR" in os.environ


def test_labels() -> None:
    assert parse_label("tier=web") == ("tier", "web")
    assert parse_label("a=b=c") == ("a", "b=c")
    assert parse_label("flag") == ("flag", "")
    with pytest.raises(FlagValueError, match="non-empty key"):
        parse_label("=web")
    assert parse_label_key("tier") == "tier"
    with pytest.raises(FlagValueError, match="without =value"):
        parse_label_key("tier=web")


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [("5s", 5, 0), ("1m30s", 90, 0), ("300ms", 0, 300_000_000), ("2", 2, 0), ("1h", 3600, 0)],
)
def test_durations(text: str, seconds: int, nanos: int) -> None:
    d = parse_duration_value(text)
    assert (d.seconds, d.nanos) == (seconds, nanos)


@pytest.mark.parametrize("text", ["bogus", "5x", "-1s", "-3", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(FlagValueError, match="invalid duration"):
        parse_duration_value(text)


def test_replicas() -> None:
    assert parse_replicas("0") == 0
    assert parse_replicas("12") == 12
    with pytest.raises(FlagValueError) as err:
        parse_replicas("-1")
    assert str(err.value) == "invalid replicas value -1: must be 0 or more"
    with pytest.raises(FlagValueError, match="must be a whole number"):
        parse_replicas("two")


def test_restart_condition() -> None:
    assert parse_restart_condition("on-failure") == specs_pb2.RESTART_CONDITION_ON_FAILURE
    assert parse_restart_condition("ANY") == specs_pb2.RESTART_CONDITION_ANY
    assert parse_restart_condition("none") == specs_pb2.RESTART_CONDITION_NONE
    with pytest.raises(FlagValueError, match="use none, on-failure or any"):
        parse_restart_condition("always")


def test_scale_arguments() -> None:
    assert parse_scale("web=5") == ("web", 5)
    with pytest.raises(FlagValueError, match="expected SERVICE=REPLICAS"):
        parse_scale("web")
    with pytest.raises(FlagValueError, match="must be 0 or more"):
        parse_scale("web=-2")


def test_filters() -> None:
    assert parse_filters(["name=web", "label=a=b", "name=db"], ["name", "label"]) == {
        "name": ["web", "db"],
        "label": ["a=b"],
    }
    with pytest.raises(FlagValueError, match="unknown key 'color'; use one of name, label"):
        parse_filters(["color=red"], ["name", "label"])
    with pytest.raises(FlagValueError, match="expected key=value"):
        parse_filters(["name"], ["name"])


def test_command_words() -> None:
    assert parse_command("sh -c 'echo hi'") == ["sh", "-c", "echo hi"]
    with pytest.raises(FlagValueError, match="invalid command"):
        parse_command("sh -c 'unclosed")


@pytest.mark.parametrize(
    ("text", "target", "display"),
    [
        ("unix:///var/run/x.sock", "unix:///var/run/x.sock", "unix:///var/run/x.sock"),
        ("/var/run/x.sock", "unix:///var/run/x.sock", "unix:///var/run/x.sock"),
        ("localhost:2377", "localhost:2377", "tcp://localhost:2377"),
        ("10.0.0.1:2377", "10.0.0.1:2377", "tcp://10.0.0.1:2377"),
        ("[::1]:2377", "[::1]:2377", "tcp://[::1]:2377"),
        ("tcp://mgr:2377", "mgr:2377", "tcp://mgr:2377"),
    ],
)
def test_manager_addresses(text: str, target: str, display: str) -> None:
    address = ManagerAddress.parse(text)
    assert (address.target, address.display) == (target, display)


def test_relative_socket_paths_become_absolute(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    assert ManagerAddress.parse("control.sock").target == f"unix://{tmp_path}/control.sock"
    assert ManagerAddress.parse("unix:x/c.sock").socket_path == f"{tmp_path}/x/c.sock"


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("http://mgr:80", "unsupported scheme 'http'"), ("tcp://mgr", "tcp://HOST")],
)
def test_bad_manager_addresses(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ManagerAddress.parse(text)
