"""Checking service specs and filling in their defaults (manager/controlapi/validation.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Unpack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.api import specs_pb2, types_pb2
from common.limits import MAX_REPLICAS
from common.timeutil import duration, duration_seconds
from manager.controlapi.validation import (
    MAX_SPEC_BYTES,
    check_service_update,
    complete_service_spec,
    validate_image,
    validate_name,
    validate_service_spec,
)
from manager.grpc_errors import InvalidArgumentError
from tests.harness import ROOT
from tests.unit import factories as f

DIGEST = "sha256:" + "ab" * 32


def spec(**kw: Unpack[f.ServiceArgs]) -> specs_pb2.ServiceSpec:
    """A complete, valid spec (as create_service stores it)."""
    return complete_service_spec(f.service(**kw).spec)


def invalid(check: Callable[[], object], *words: str) -> str:
    with pytest.raises(InvalidArgumentError) as err:
        check()
    message = str(err.value)
    for w in words:
        assert w in message, message
    return message


# ---- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["web", "a", "Web1", "my-service", "my_service", "a-_-b", "9lives", "x" * 63]
)
def test_valid_names(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize(
    "name", ["", "-web", "web-", "_web", "web_", "my.service", "my service", "wéb", "x" * 64, "a/b"]
)
def test_invalid_names(name: str) -> None:
    invalid(lambda: validate_name(name), "invalid service name", repr(name), "DNS label")


def test_invalid_name_says_what_it_names() -> None:
    invalid(lambda: validate_name("-x", "network"), "invalid network name")


@given(st.text(alphabet="aB1-_.", min_size=1, max_size=14))
def test_name_rule(name: str) -> None:
    ok = name[0].isalnum() and name[-1].isalnum() and all(c.isalnum() or c in "-_" for c in name)
    if ok:
        validate_name(name)
    else:
        invalid(lambda: validate_name(name))


def test_name_check_is_fast_on_bad_input() -> None:
    # re cannot be interrupted from Python, so run the check in a child process.
    code = (
        "from manager.controlapi.validation import validate_name\n"
        "try:\n    validate_name('a' * 50 + '!')\nexcept Exception:\n    pass\n"
    )
    try:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=3, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("validate_name('a' * 50 + '!') ran for more than 3 s")


# ---- images ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "nginx:1.25",
        "nginx:1.25-alpine",
        "library/nginx:latest",
        "ghcr.io/org/app:v1.2.3",
        "localhost:5000/demo",
        "127.0.0.1:5000/a/b/c:tag_1",
        f"nginx@{DIGEST}",
        f"registry.example.com/team/app:1@{DIGEST}",
        "a_b",
        "a__b",
        "a-b--c",
        "a.b",
        "Registry.Example.com/app",
    ],
)
def test_valid_images(image: str) -> None:
    validate_image(image)


@pytest.mark.parametrize(
    "image",
    [
        "nginx:",
        "nginx:-x",
        "nginx:" + "x" * 129,
        "a//b",
        "/nginx",
        "nginx/",
        "-nginx",
        "a___b",
        "nginx@sha256:abc",
        "nginx latest",
        "nginx:1 ",
    ],
)
def test_invalid_images(image: str) -> None:
    message = invalid(lambda: validate_image(image), "invalid image reference", repr(image))
    assert "lower case" not in message


@pytest.mark.parametrize("image", ["Nginx", "library/Nginx:1", "example.com/Team/app"])
def test_upper_case_repository_gets_a_hint(image: str) -> None:
    invalid(lambda: validate_image(image), "repository names must be lower case")


def test_upper_case_tag_is_fine() -> None:
    validate_image("nginx:Latest")


def test_no_image() -> None:
    invalid(lambda: validate_image(""), "no image given")


# ---- validate_service_spec ----------------------------------------------------------------


def test_complete_spec_is_valid() -> None:
    validate_service_spec(spec(replicas=3, ports=[(80, 8080), (443, 0)]))


def test_bad_name_and_image_are_caught() -> None:
    s = spec()
    s.annotations.name = "bad name"
    invalid(lambda: validate_service_spec(s), "invalid service name")
    s = spec()
    s.task.container.image = "UPPER"
    invalid(lambda: validate_service_spec(s), "invalid image reference")
    s = spec()
    s.task.container.image = ""
    invalid(lambda: validate_service_spec(s), "no image given")


@pytest.mark.parametrize("entry", ["=x", " A=1", "=", ""])
def test_bad_environment(entry: str) -> None:
    s = spec()
    s.task.container.env.append(entry)
    invalid(lambda: validate_service_spec(s), "invalid environment variable", "KEY=VALUE")


@pytest.mark.parametrize("entry", ["A=1", "A=", "A", "PATH=/usr/bin:/bin", "a.b-c=x=y"])
def test_good_environment(entry: str) -> None:
    s = spec()
    s.task.container.env.append(entry)
    validate_service_spec(s)


def test_bad_labels() -> None:
    s = spec()
    s.annotations.labels["has space"] = "x"
    invalid(lambda: validate_service_spec(s), "invalid service label key")
    s = spec()
    s.task.container.labels[""] = "x"
    invalid(lambda: validate_service_spec(s), "invalid container label key")


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("stop_grace_period", "stop grace period"),
        ("restart.delay", "restart delay"),
        ("restart.window", "restart window"),
        ("update.delay", "update delay"),
        ("update.monitor", "update monitor"),
        ("rollback.delay", "rollback delay"),
        ("rollback.monitor", "rollback monitor"),
    ],
)
def test_negative_durations(field: str, words: str) -> None:
    s = spec()
    owner, _, name = field.rpartition(".")
    target = {
        "": s.task.container,
        "restart": s.task.restart,
        "update": s.update,
        "rollback": s.rollback,
    }[owner]
    getattr(target, name).CopyFrom(duration(-1))
    invalid(lambda: validate_service_spec(s), f"invalid {words} -1.0s")
    getattr(target, name).CopyFrom(duration(0))
    validate_service_spec(s)


def test_spec_too_large() -> None:
    # Found by the fuzz test: a 1.6 MB environment variable reached etcd, which refused
    # the request (an INTERNAL error then).
    s = spec()
    s.task.container.env.append("BIG=" + "x" * MAX_SPEC_BYTES)
    invalid(lambda: validate_service_spec(s), "the service spec is too large")
    s.task.container.env[-1] = "BIG=" + "x" * (MAX_SPEC_BYTES - 1000)
    validate_service_spec(s)


@pytest.mark.parametrize(
    ("seconds", "nanos", "words"),
    [
        (0, 1_310_535_959, "not a valid duration"),
        (0, -(2**31), "not a valid duration"),
        (5, -1, "not a valid duration"),
        (-5, 1, "not a valid duration"),
        (2**63 - 1, 0, "about 292 years"),
        (315_576_000_001, 0, "about 292 years"),
        (-(2**63), 0, "must not be negative"),
    ],
)
def test_malformed_or_absurd_durations(seconds: int, nanos: int, words: str) -> None:
    # Found by the fuzz test: such durations were stored, and `swarmctl service inspect
    # --format json` (protobuf's JSON conversion) failed on them; restart times computed
    # from huge ones did not fit a Timestamp.
    for owner in ("stop_grace_period", "restart.delay", "update.monitor", "healthcheck"):
        s = spec()
        if owner == "stop_grace_period":
            d = s.task.container.stop_grace_period
        elif owner == "restart.delay":
            d = s.task.restart.delay
        elif owner == "update.monitor":
            d = s.update.monitor
        else:
            d = s.task.container.healthcheck.interval
        d.seconds, d.nanos = seconds, nanos
        invalid(lambda: validate_service_spec(s), words)  # noqa: B023


def test_longest_duration_is_fine() -> None:
    s = spec()
    s.task.restart.window.seconds = (2**63 - 1) // 10**9
    validate_service_spec(s)


def test_negative_health_check_retries() -> None:
    s = spec()
    s.task.container.healthcheck.retries = -1
    invalid(lambda: validate_service_spec(s), "invalid health check retries -1")


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("replicated.replicas", "invalid replicas value"),
        ("replicated_job.total_completions", "invalid total completions value"),
        ("replicated_job.max_concurrent", "invalid max concurrent value"),
    ],
)
def test_counts_beyond_the_limit(field: str, words: str) -> None:
    # Found by the fuzz test: 453116288 replicas were accepted, and planning them froze
    # the manager's event loop (no call was answered any more).
    owner, _, name = field.partition(".")
    for count, ok in ((MAX_REPLICAS, True), (MAX_REPLICAS + 1, False), (2**64 - 1, False)):
        s = spec()
        setattr(getattr(s, owner), name, count)
        if ok:
            validate_service_spec(s)
        else:
            invalid(lambda: validate_service_spec(s), words, f"at most {MAX_REPLICAS}")  # noqa: B023


def test_unknown_restart_condition() -> None:
    s = spec()
    s.task.restart.condition = 7  # type: ignore[assignment]
    invalid(lambda: validate_service_spec(s), "invalid restart condition 7")


@pytest.mark.parametrize("mode", ["global", "replicated_job", "global_job"])
def test_other_modes(mode: str) -> None:
    s = spec()
    getattr(s, mode).SetInParent()
    validate_service_spec(s)


@pytest.mark.parametrize("mode", ["global", "global_job"])
def test_max_replicas_per_node_is_for_replicated_modes_only(mode: str) -> None:
    s = spec()
    s.task.placement.max_replicas = 2
    validate_service_spec(s)
    getattr(s, mode).SetInParent()
    invalid(lambda: validate_service_spec(s), "does not apply to global services")


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_bad_max_failure_ratio(ratio: float) -> None:
    for cfg in ("update", "rollback"):
        s = spec()
        getattr(s, cfg).max_failure_ratio = ratio
        invalid(lambda: validate_service_spec(s), f"invalid {cfg} max failure ratio")  # noqa: B023


def test_max_failure_ratio_bounds_are_fine() -> None:
    s = spec()
    s.update.max_failure_ratio = 1
    s.rollback.max_failure_ratio = 0
    validate_service_spec(s)


def add_port(
    s: specs_pb2.ServiceSpec,
    target: int,
    published: int = 0,
    *,
    udp: bool = False,
    host: bool = True,
) -> None:
    s.endpoint.ports.add(
        target_port=target,
        published_port=published,
        protocol=types_pb2.PORT_PROTOCOL_UDP if udp else types_pb2.PORT_PROTOCOL_TCP,
        publish_mode=types_pb2.PUBLISH_MODE_HOST if host else types_pb2.PUBLISH_MODE_INGRESS,
    )


@pytest.mark.parametrize("target", [0, 65536, 70000])
def test_bad_target_port(target: int) -> None:
    s = spec()
    add_port(s, target)
    invalid(lambda: validate_service_spec(s), f"invalid target port {target}")


def test_bad_published_port() -> None:
    s = spec()
    add_port(s, 80, 65536)
    invalid(lambda: validate_service_spec(s), "invalid published port 65536")


def test_ingress_ports_are_accepted() -> None:
    s = spec()
    add_port(s, 80, 8080, host=False)
    add_port(s, 81, host=False)  # the allocator picks one from 30000-32767
    validate_service_spec(s)


def test_ingress_port_out_of_range_says_who_picks_a_free_one() -> None:
    s = spec()
    add_port(s, 80, 65536, host=False)
    invalid(
        lambda: validate_service_spec(s),
        "invalid published port 65536",
        "0 to let the cluster pick one from 30000-32767",
    )


def test_ingress_port_with_dnsrr_is_refused_with_dockers_words() -> None:
    s = spec()
    s.endpoint.mode = specs_pb2.RESOLUTION_MODE_DNSRR
    add_port(s, 80, 8080)  # host mode goes with dnsrr
    validate_service_spec(s)
    add_port(s, 81, 8081, host=False)
    invalid(
        lambda: validate_service_spec(s),
        "port 81/tcp: port published with ingress mode can't be used with dnsrr mode",
        "mode=host",
        "--endpoint-mode vip",
    )


def test_unknown_endpoint_mode() -> None:
    s = spec()
    s.endpoint.mode = 5  # type: ignore[assignment]
    invalid(lambda: validate_service_spec(s), "invalid endpoint mode 5: use vip or dnsrr")


def test_network_attachment_needs_a_network() -> None:
    s = spec()
    s.task.networks.add(target=" ")
    invalid(lambda: validate_service_spec(s), "a network attachment names no network")


@pytest.mark.parametrize("alias", ["", "-web", "web-", "we b", "wéb", "a" * 254, "a/b"])
def test_bad_network_alias(alias: str) -> None:
    s = spec()
    s.task.networks.add(target="front", aliases=["ok", alias])
    invalid(
        lambda: validate_service_spec(s),
        f"invalid alias {alias!r} on network 'front'",
        "DNS name",
    )


def test_good_network_aliases() -> None:
    s = spec()
    s.task.networks.add(target="front", aliases=["web", "www.example.com", "db_1", "a" * 253])
    validate_service_spec(s)


def test_published_port_twice() -> None:
    s = spec()
    add_port(s, 80, 8080)
    add_port(s, 81, 8080)
    invalid(lambda: validate_service_spec(s), "published port 8080/tcp is given twice")


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("protocol", -1, "invalid port protocol -1"),
        ("protocol", 99, "invalid port protocol 99"),
        ("publish_mode", 7, "invalid publish mode 7: use ingress or host"),
    ],
)
def test_unknown_port_enums(field: str, value: int, words: str) -> None:
    # Found by the fuzz test: an unknown protocol number was an INTERNAL error (ValueError
    # from PortProtocol.Name) instead of INVALID_ARGUMENT.
    s = spec()
    add_port(s, 80)
    setattr(s.endpoint.ports[0], field, value)
    invalid(lambda: validate_service_spec(s), words)


@pytest.mark.parametrize("cfg", ["update", "rollback"])
def test_unknown_update_enums(cfg: str) -> None:
    for field, words in (("failure_action", "failure action 12345"), ("order", "order 12345")):
        s = spec()
        setattr(getattr(s, cfg), field, 12345)
        invalid(lambda: validate_service_spec(s), f"invalid {cfg} {words}")  # noqa: B023


def test_same_published_port_on_two_protocols_is_fine() -> None:
    s = spec()
    add_port(s, 53, 5353)
    add_port(s, 53, 5353, udp=True)
    add_port(s, 80)  # engine-chosen ports never clash
    add_port(s, 81)
    validate_service_spec(s)


# ---- complete_service_spec --------------------------------------------------------------


def test_complete_fills_every_default() -> None:
    raw = specs_pb2.ServiceSpec()
    raw.task.container.image = "nginx"
    out = complete_service_spec(raw)
    validate_name(out.annotations.name)
    assert out.WhichOneof("mode") == "replicated"
    assert out.replicated.replicas == 1
    assert duration_seconds(out.task.container.stop_grace_period) == 10
    assert out.task.restart.condition == specs_pb2.RESTART_CONDITION_ANY
    assert duration_seconds(out.task.restart.delay) == 5
    for cfg in (out.update, out.rollback):
        assert cfg.parallelism == 1
        assert duration_seconds(cfg.monitor) == 5
        assert cfg.HasField("delay")
        assert duration_seconds(cfg.delay) == 0
    validate_service_spec(out)
    assert raw.annotations.name == "", "the input is not changed"
    assert not raw.HasField("replicated")


def test_complete_keeps_what_was_given() -> None:
    raw = f.service(0, condition="none", delay=0.5, parallelism=0).spec
    raw.task.container.stop_grace_period.CopyFrom(duration(30))
    raw.update.monitor.CopyFrom(duration(1))  # an explicit config: parallelism 0 = all at once
    out = complete_service_spec(raw)
    assert out.annotations.name == "web"
    assert out.replicated.replicas == 0
    assert out.task.restart.condition == specs_pb2.RESTART_CONDITION_NONE
    assert duration_seconds(out.task.restart.delay) == 0.5
    assert duration_seconds(out.task.container.stop_grace_period) == 30
    assert out.update.parallelism == 0
    assert duration_seconds(out.update.monitor) == 1
    assert out.rollback.parallelism == 1


@pytest.mark.parametrize(
    ("mode", "condition"),
    [
        ("replicated", specs_pb2.RESTART_CONDITION_ANY),
        ("global", specs_pb2.RESTART_CONDITION_ANY),
        ("replicated_job", specs_pb2.RESTART_CONDITION_ON_FAILURE),
        ("global_job", specs_pb2.RESTART_CONDITION_ON_FAILURE),
    ],
)
def test_default_restart_condition_by_mode(mode: str, condition: int) -> None:
    raw = specs_pb2.ServiceSpec()
    raw.task.container.image = "nginx"
    getattr(raw, mode).SetInParent()
    out = complete_service_spec(raw)
    assert out.WhichOneof("mode") == mode
    assert out.task.restart.condition == condition


def test_complete_is_idempotent() -> None:
    once = complete_service_spec(f.service(3).spec)
    assert complete_service_spec(once) == once


def test_random_names_are_valid() -> None:
    raw = specs_pb2.ServiceSpec()
    raw.task.container.image = "nginx"
    for _ in range(30):
        validate_name(complete_service_spec(raw).annotations.name)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])
@given(
    replicas=st.integers(0, 100),
    condition=st.sampled_from(["none", "on-failure", "any"]),
    delay=st.none() | st.floats(0, 100),
    parallelism=st.integers(0, 5),
)
def test_completed_specs_validate(
    replicas: int, condition: str, delay: float | None, parallelism: int
) -> None:
    raw = f.service(replicas, condition=condition, delay=delay, parallelism=parallelism).spec
    out = complete_service_spec(raw)
    validate_service_spec(out)
    assert complete_service_spec(out) == out


# ---- check_service_update -----------------------------------------------------------------


def test_update_may_change_the_template() -> None:
    svc = f.service(2)
    new = complete_service_spec(svc.spec)
    new.task.container.image = "nginx:2"
    new.replicated.replicas = 5
    check_service_update(svc, new)


def test_update_may_not_rename() -> None:
    svc = f.service()
    new = complete_service_spec(svc.spec)
    new.annotations.name = "other"
    invalid(lambda: check_service_update(svc, new), "renaming services is not supported", "'web'")


def test_update_may_not_change_the_mode() -> None:
    svc = f.service()
    new = complete_service_spec(svc.spec)
    new.ClearField("replicated")
    getattr(new, "global").SetInParent()  # `global` is a Python keyword
    invalid(lambda: check_service_update(svc, new), "changing the mode", "replicated to global")
