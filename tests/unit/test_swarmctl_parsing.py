"""swarmctl's flag value parsing: ports, env, labels, durations, counts, filters, -H,
modes, placement and resources."""

from __future__ import annotations

import os

import pytest

from common.api import specs_pb2, types_pb2
from swarmctl import parsing
from swarmctl.client import ManagerAddress
from swarmctl.parsing import (
    DEFAULT_PUBLISH_MODE,
    FlagValueError,
    endpoint_mode_name,
    format_bytes,
    format_nano_cpus,
    format_platform,
    parse_bool,
    parse_command,
    parse_duration_value,
    parse_endpoint_mode,
    parse_env,
    parse_env_key,
    parse_filters,
    parse_label,
    parse_label_key,
    parse_memory_bytes,
    parse_mode,
    parse_nano_cpus,
    parse_network,
    parse_placement_pref,
    parse_placement_strategy,
    parse_platform,
    parse_port_ref,
    parse_positive_duration,
    parse_publish,
    parse_replicas,
    parse_restart_condition,
    parse_scale,
)

TCP, UDP = types_pb2.PORT_PROTOCOL_TCP, types_pb2.PORT_PROTOCOL_UDP


def ports(text: str) -> list[tuple[int, int, types_pb2.PortProtocol.ValueType]]:
    """(published, target, protocol) of each PortConfig; all in the default mode."""
    out = []
    for port in parse_publish(text):
        assert port.publish_mode == DEFAULT_PUBLISH_MODE
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
        ("mode=bogus,target=80", "unknown publish mode 'bogus'; use mode=ingress"),
    ],
)
def test_publish_errors_name_the_value_and_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(FlagValueError) as err:
        parse_publish(text)
    assert message in str(err.value)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("mode=ingress,target=80,published=8080", types_pb2.PUBLISH_MODE_INGRESS),
        ("MODE=Ingress,target=80", types_pb2.PUBLISH_MODE_INGRESS),
        ("mode=host,target=80,published=8080,protocol=tcp", types_pb2.PUBLISH_MODE_HOST),
    ],
)
def test_publish_long_syntax_takes_either_mode(text: str, mode: int) -> None:
    (port,) = parse_publish(text)
    assert port.publish_mode == mode
    assert port.target_port == 80


@pytest.mark.parametrize("default", [types_pb2.PUBLISH_MODE_INGRESS, types_pb2.PUBLISH_MODE_HOST])
def test_the_default_publish_mode_is_one_constant(
    monkeypatch: pytest.MonkeyPatch, default: int
) -> None:
    """Flipping DEFAULT_PUBLISH_MODE (to ingress, once the routing mesh is wired) changes
    the short syntax and a long one without mode=, and nothing else."""
    monkeypatch.setattr(parsing, "DEFAULT_PUBLISH_MODE", default)
    for text in ("8080:80", "80", "8000-8001:80-81/udp", "target=80,published=8080"):
        assert {p.publish_mode for p in parse_publish(text)} == {default}, text
    assert parse_publish("mode=host,target=80")[0].publish_mode == types_pb2.PUBLISH_MODE_HOST
    assert parse_publish("mode=ingress,target=80")[0].publish_mode == types_pb2.PUBLISH_MODE_INGRESS


def test_the_default_publish_mode_is_host_until_the_routing_mesh_is_wired() -> None:
    assert DEFAULT_PUBLISH_MODE == types_pb2.PUBLISH_MODE_HOST


@pytest.mark.parametrize(
    ("text", "target", "aliases"),
    [
        ("front", "front", []),
        (" front ", "front", []),
        ("abc123", "abc123", []),
        ("name=front", "front", []),
        ("name=front,alias=web,alias=www.example", "front", ["web", "www.example"]),
        ("alias=web,NAME=front", "front", ["web"]),
    ],
)
def test_network_short_and_long_syntax(text: str, target: str, aliases: list[str]) -> None:
    attachment = parse_network(text)
    assert attachment.target == target
    assert list(attachment.aliases) == aliases


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "give a network name or id, or name=NETWORK,alias=ALIAS"),
        ("alias=web", "network name/id is not specified"),
        ("name=", "network name/id is not specified"),
        ("name=front,alias", "invalid field 'alias'"),
        ("name=front,color=blue", "invalid field key 'color'; use name and alias"),
        ("name=front,driver-opt=com.docker.network.x=1", "driver-opt is not supported"),
        ("name=front,ip=10.0.0.9", "ip cannot be set for a service"),
    ],
)
def test_network_errors_name_the_value_and_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(FlagValueError) as err:
        parse_network(text)
    assert message in str(err.value)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("vip", specs_pb2.RESOLUTION_MODE_VIP),
        ("dnsrr", specs_pb2.RESOLUTION_MODE_DNSRR),
        (" DNSRR ", specs_pb2.RESOLUTION_MODE_DNSRR),
    ],
)
def test_endpoint_mode(text: str, mode: int) -> None:
    assert parse_endpoint_mode(text) == mode
    assert endpoint_mode_name(mode) in ("vip", "dnsrr")


def test_bad_endpoint_mode() -> None:
    with pytest.raises(FlagValueError) as err:
        parse_endpoint_mode("roundrobin")
    assert str(err.value) == "invalid endpoint mode 'roundrobin': use vip or dnsrr"


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


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("replicated", "replicated"),
        ("global", "global"),
        ("replicated-job", "replicated_job"),
        ("Global-Job", "global_job"),
    ],
)
def test_modes_name_the_spec_field_they_set(text: str, field: str) -> None:
    assert parse_mode(text) == field


def test_unknown_mode() -> None:
    with pytest.raises(FlagValueError) as err:
        parse_mode("job")
    assert str(err.value) == (
        "invalid mode 'job': use replicated, global, replicated-job or global-job"
    )


def test_placement_preferences_are_spread_descriptors() -> None:
    assert parse_placement_pref("spread=node.labels.zone") == "node.labels.zone"
    assert parse_placement_pref("spread=engine.labels.rack") == "engine.labels.rack"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("binpack=node.labels.zone", "unsupported placement preference 'binpack' (only spread"),
        ("node.labels.zone", "expected spread=node.labels.KEY"),
        ("spread=a=b", "expected spread=node.labels.KEY"),
        ("spread=", "expected spread=node.labels.KEY"),
    ],
)
def test_bad_placement_preferences(text: str, message: str) -> None:
    with pytest.raises(FlagValueError) as err:
        parse_placement_pref(text)
    assert message in str(err.value)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0.5", 500_000_000),
        ("2", 2_000_000_000),
        (" 1.25 ", 1_250_000_000),
        ("1/4", 250_000_000),
        ("0.000000001", 1),
        ("0", 0),
        ("1e-3", 1_000_000),
    ],
)
def test_cpus_are_nano_cpus(text: str, nanos: int) -> None:
    assert parse_nano_cpus(text) == nanos


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.0000000001", "too precise"),
        ("-1", "must not be negative"),
        ("half", "use a number of CPUs"),
        ("", "use a number of CPUs"),
        ("1/0", "use a number of CPUs"),
        ("1_000", "use a number of CPUs"),
        ("\u0661", "use a number of CPUs"),  # an Arabic-Indic 1
        ("1e30", "too large"),
        ("1e999999999", "too large"),  # at once, without computing the power of ten
        ("1e-999999999", "too precise"),
        ("-1e999999999", "must not be negative"),
    ],
)
def test_bad_cpus(text: str, message: str) -> None:
    with pytest.raises(FlagValueError, match=message):
        parse_nano_cpus(text)


MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 * MIB),
        ("512m", 512 * MIB),
        ("512mb", 512 * MIB),
        ("512MiB", 512 * MIB),
        ("512 MB", 512 * MIB),
        ("1.5g", 1536 * MIB),
        ("1GB", 1024 * MIB),
        ("64k", 64 * 1024),
        ("2kib", 2048),
        ("1t", 1 << 40),
        ("1p", 1 << 50),
        ("100", 100),
        ("100b", 100),
        ("100B", 100),
        ("0", 0),
    ],
)
def test_memory_uses_dockers_1024_units(text: str, size: int) -> None:
    assert parse_memory_bytes(text) == size


@pytest.mark.parametrize("text", ["512x", "-1m", "m", "1.5.5g", "512i", "", "1e3m", "12 m b"])
def test_bad_memory(text: str) -> None:
    with pytest.raises(FlagValueError) as err:
        parse_memory_bytes(text)
    assert str(err.value).startswith(f"invalid memory size {text!r}: use a number")


def test_resource_formatting() -> None:
    assert format_nano_cpus(500_000_000) == "0.5"
    assert format_nano_cpus(2_000_000_000) == "2"
    assert format_nano_cpus(1) == "0.000000001"
    assert format_bytes(512 * MIB) == "512MiB"
    assert format_bytes(1536 * MIB) == "1.5GiB"
    assert format_bytes(100) == "100B"


def test_platforms() -> None:
    linux_amd64 = parse_platform("linux/amd64")
    assert (linux_amd64.os, linux_amd64.architecture) == ("linux", "amd64")
    linux = parse_platform("linux")
    assert (linux.os, linux.architecture) == ("linux", "")
    arm = parse_platform("/arm64")
    assert (arm.os, arm.architecture) == ("", "arm64")
    assert [format_platform(p) for p in (linux_amd64, linux, arm)] == [
        "linux/amd64",
        "linux",
        "/arm64",
    ]
    for bad in ("linux/arm/v7", "", "/"):
        with pytest.raises(FlagValueError, match="expected OS\\[/ARCH\\]"):
            parse_platform(bad)


def test_placement_strategy_bool_and_positive_duration() -> None:
    assert parse_placement_strategy("spread") == specs_pb2.PLACEMENT_STRATEGY_SPREAD
    assert parse_placement_strategy("BinPack") == specs_pb2.PLACEMENT_STRATEGY_BINPACK
    with pytest.raises(FlagValueError, match="use spread or binpack"):
        parse_placement_strategy("random")
    assert [parse_bool(v) for v in ("true", "1", "T", "false", "0", "F")] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    with pytest.raises(FlagValueError, match="use true or false"):
        parse_bool("yes please")
    assert parse_positive_duration("300ms").nanos == 300_000_000
    with pytest.raises(FlagValueError, match="must be more than 0"):
        parse_positive_duration("0s")


def test_update_settings_parse_like_dockers_flags() -> None:
    from swarmctl.parsing import (
        failure_action_name,
        parse_failure_action,
        parse_failure_ratio,
        parse_rollback_failure_action,
        parse_update_order,
        update_order_name,
    )

    assert parse_failure_action("rollback") == specs_pb2.UPDATE_FAILURE_ACTION_ROLLBACK
    assert parse_failure_action(" Continue ") == specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE
    assert failure_action_name(specs_pb2.UPDATE_FAILURE_ACTION_PAUSE) == "pause"
    with pytest.raises(FlagValueError, match="use pause, continue or rollback"):
        parse_failure_action("retry")
    # A rollback cannot itself be rolled back.
    assert parse_rollback_failure_action("pause") == specs_pb2.UPDATE_FAILURE_ACTION_PAUSE
    with pytest.raises(FlagValueError, match="use pause or continue"):
        parse_rollback_failure_action("rollback")
    assert parse_update_order("start-first") == specs_pb2.UPDATE_ORDER_START_FIRST
    assert update_order_name(specs_pb2.UPDATE_ORDER_STOP_FIRST) == "stop-first"
    with pytest.raises(FlagValueError, match="use stop-first or start-first"):
        parse_update_order("first")
    assert parse_failure_ratio("0.25") == 0.25
    assert parse_failure_ratio("1") == 1.0
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(FlagValueError, match="from 0 to 1"):
            parse_failure_ratio(bad)


def test_times_are_durations_before_now_rfc3339_or_unix() -> None:
    from swarmctl.parsing import parse_timestamp, parse_until

    now = 1_800_000_000.0
    assert parse_timestamp("10m", now) == now - 600
    assert parse_timestamp("1h30m", now) == now - 5400
    assert parse_timestamp("1700000000.5", now) == 1_700_000_000.5
    assert parse_timestamp("2026-11-28T01:02:03Z", now) == 1_795_827_723.0
    assert parse_timestamp("2026-11-28T01:02:03.123456789Z", now) == pytest.approx(
        1_795_827_723.123456789
    )
    assert parse_timestamp("2026-11-28T02:02:03+01:00", now) == 1_795_827_723.0
    # Without an offset, a time is UTC (as Docker reads it); a date alone is midnight.
    assert parse_timestamp("2026-11-28T01:02:03", now) == 1_795_827_723.0
    assert parse_timestamp("2026-11-28", now) == 1_795_824_000.0
    with pytest.raises(FlagValueError, match="use a duration like 10m"):
        parse_timestamp("yesterday", now)
    # --until: a duration is after now.
    assert parse_until("5s", now) == now + 5
    assert parse_until("2026-11-28T01:02:03Z", now) == 1_795_827_723.0
