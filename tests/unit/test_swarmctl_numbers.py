"""Numbers out of range are clear errors, on both sides of the control API.

Every numeric flag of `service create` and `service update`, given NaN, infinity, a
huge or a negative value, is a usage error naming the flag (exit code 2), never
"unexpected ValueError". And whatever a flag accepts, the spec swarmctl sends passes
the manager's validation or is refused by it with INVALID_ARGUMENT; the validation
itself refuses every number it cannot store or act on, whatever a client sends.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from common.api import control_pb2, specs_pb2, types_pb2
from common.limits import INT32_MAX, INT64_MAX, UINT64_MAX
from manager.controlapi.validation import complete_service_spec, validate_service_spec
from manager.grpc_errors import InvalidArgumentError
from swarmctl.main import app
from swarmctl.parsing import FlagValueError, parse_publish
from tests.unit.test_swarmctl_e2e import FakeControl, fake_manager  # noqa: F401 - a fixture

# The numeric flags of `service create`, each with the flags it needs to apply.
CREATE_FLAGS: dict[str, tuple[str, ...]] = {
    "--replicas": (),
    "--max-concurrent": ("--mode", "replicated-job"),
    "--replicas-max-per-node": (),
    "--reserve-cpu": (),
    "--limit-cpu": (),
    "--reserve-memory": (),
    "--limit-memory": (),
    "--restart-delay": (),
    "--restart-max-attempts": (),
    "--restart-window": (),
    "--stop-grace-period": (),
    "--update-parallelism": (),
    "--update-delay": (),
    "--update-monitor": (),
    "--update-max-failure-ratio": (),
    "--rollback-parallelism": (),
    "--rollback-delay": (),
    "--rollback-monitor": (),
    "--rollback-max-failure-ratio": (),
    "--health-interval": (),
    "--health-timeout": (),
    "--health-retries": (),
    "--health-start-period": (),
    "--publish": (),
    "--timeout": (),
}
# `service update` has the same ones but --publish, and --publish-add/-rm.
UPDATE_FLAGS = [f for f in CREATE_FLAGS if f != "--publish"] + ["--publish-add", "--publish-rm"]
BAD_NUMBERS = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "1e30",
    "1e999999999",
    "-1",
    "99999999999999999999999999999",
    "-99999999999999999999999999999",
]


def swarmctl(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"SWARMCTL_HOST": None})


def assert_usage_error(result: Result, flag: str) -> None:
    assert result.exit_code == 2, result.output
    assert f"Error: Invalid value for '{flag}'" in result.stderr, result.stderr
    assert "unexpected" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def _cases(flags: list[str]) -> list[tuple[str, str]]:
    """Each flag with one bad number, in turn, so that every bad number meets several
    flags (a run of the command line costs about 0.1 s: not all pairs)."""
    return [(flag, BAD_NUMBERS[i % len(BAD_NUMBERS)]) for i, flag in enumerate(flags)]


@pytest.mark.parametrize(("flag", "value"), _cases(list(CREATE_FLAGS)))
def test_bad_numbers_for_service_create_are_usage_errors(flag: str, value: str) -> None:
    args = ["service", "create", "--no-resolve-image", *CREATE_FLAGS[flag], f"{flag}={value}"]
    result = swarmctl("-H", "/nonexistent/control.sock", *args, "busybox")
    assert_usage_error(result, flag)


@pytest.mark.parametrize(("flag", "value"), _cases(list(reversed(UPDATE_FLAGS))))
def test_bad_numbers_for_service_update_are_usage_errors(flag: str, value: str) -> None:
    result = swarmctl(
        "-H", "/nonexistent/control.sock", "service", "update", f"{flag}={value}", "web"
    )
    assert_usage_error(result, flag)


def test_the_reported_case_says_what_is_wrong() -> None:
    result = swarmctl(
        "-H", "/nonexistent/control.sock", "service", "create", "--reserve-cpu", "1e30", "busybox"
    )
    assert result.stderr.endswith(
        "Invalid value for '--reserve-cpu': invalid CPU value '1e30': too large (at most "
        "9223372036.854775807)\n"
    )


# Text that looks more or less like a number: digits in other scripts, superscripts,
# exponents, units, fractions, underscores, signs.
_NUMBERISH = st.one_of(
    st.sampled_from(BAD_NUMBERS),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(alphabet="0123456789.e+-/_smhkgbpi:²١ ", max_size=14),
    st.from_regex(r"\A[0-9]{1,25}(\.[0-9]{1,12})?(e[-+]?[0-9]{1,10})?(ns|ms|s|m|h|k|g|p)?\Z"),
)


def _sent_spec(fake: FakeControl) -> specs_pb2.ServiceSpec | None:
    for request in reversed(fake.requests):
        if isinstance(request, control_pb2.CreateServiceRequest | control_pb2.UpdateServiceRequest):
            return request.spec
    return None


def _check_manager_side(spec: specs_pb2.ServiceSpec) -> None:
    """The manager accepts what swarmctl sent, or refuses it as INVALID_ARGUMENT."""
    with contextlib.suppress(InvalidArgumentError):
        validate_service_spec(complete_service_spec(spec))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flag=st.sampled_from(list(CREATE_FLAGS)), value=_NUMBERISH)
def test_any_number_is_refused_or_sent_in_range(
    fake_manager: tuple[FakeControl, str],  # noqa: F811 - the fixture imported above
    flag: str,
    value: str,
) -> None:
    fake, address = fake_manager
    fake.requests.clear()
    fake.services.clear()
    fake.tasks.clear()
    args = ["service", "create", "-d", "--no-resolve-image", *CREATE_FLAGS[flag]]
    result = swarmctl("-H", address, *args, f"{flag}={value}", "busybox")
    assert "unexpected" not in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code == 2:
        assert f"Invalid value for '{flag}'" in result.stderr
        return
    assert result.exit_code == 0, result.output
    spec = _sent_spec(fake)
    assert spec is not None
    _check_manager_side(spec)


# The control API's side: every numeric field of a service spec, at and past the ends
# of its protobuf type (what any client can send).
_DURATION_PARTS = st.tuples(
    st.sampled_from([0, 1, -1, 2**62, INT64_MAX, -(2**63), 315_576_000_000, 9_223_372_036]),
    st.sampled_from([0, 1, -1, 999_999_999, -999_999_999, 10**9, INT32_MAX, -(2**31)]),
)
_UINT64 = st.sampled_from([0, 1, 100_000, 100_001, 2**32, INT64_MAX, UINT64_MAX])
_INT64 = st.sampled_from([0, 1, -1, 6 * 1024 * 1024, INT64_MAX, -(2**63)])
_FLOAT = st.floats(width=32, allow_nan=True, allow_infinity=True)


def _set_duration(d: Any, parts: tuple[int, int]) -> None:
    d.seconds, d.nanos = parts


_SETTERS: dict[str, Callable[[specs_pb2.ServiceSpec, Any], None]] = {
    "replicas": lambda s, v: setattr(s.replicated, "replicas", v),
    "max_replicas": lambda s, v: setattr(s.task.placement, "max_replicas", v),
    "max_attempts": lambda s, v: setattr(s.task.restart, "max_attempts", v),
    "parallelism": lambda s, v: setattr(s.update, "parallelism", v),
    "rollback_parallelism": lambda s, v: setattr(s.rollback, "parallelism", v),
    "force_update": lambda s, v: setattr(s.task, "force_update", v),
}


@settings(max_examples=300, deadline=None)
@given(
    counts=st.dictionaries(st.sampled_from(list(_SETTERS)), _UINT64),
    cpus=st.tuples(_INT64, _INT64),
    memory=st.tuples(_INT64, _INT64),
    ratio=_FLOAT,
    retries=st.sampled_from([0, 3, -1, INT32_MAX, -(2**31)]),
    durations=st.dictionaries(
        st.sampled_from(
            [
                "restart.delay",
                "restart.window",
                "update.delay",
                "update.monitor",
                "rollback.delay",
                "rollback.monitor",
                "container.stop_grace_period",
                "healthcheck.interval",
                "healthcheck.timeout",
                "healthcheck.start_period",
            ]
        ),
        _DURATION_PARTS,
    ),
    ports=st.lists(
        st.tuples(st.sampled_from([0, 1, 80, 65535, 65536, 2**32 - 1]), st.integers(0, 2**32 - 1)),
        max_size=3,
    ),
)
def test_the_control_api_refuses_numbers_it_cannot_use(
    counts: dict[str, int],
    cpus: tuple[int, int],
    memory: tuple[int, int],
    ratio: float,
    retries: int,
    durations: dict[str, tuple[int, int]],
    ports: list[tuple[int, int]],
) -> None:
    spec = specs_pb2.ServiceSpec()
    spec.annotations.name = "web"
    spec.task.container.image = "busybox"
    spec.replicated.replicas = 1
    for name, value in counts.items():
        _SETTERS[name](spec, value)
    res = spec.task.resources
    res.reservations.nano_cpus, res.limits.nano_cpus = cpus
    res.reservations.memory_bytes, res.limits.memory_bytes = memory
    spec.update.max_failure_ratio = ratio
    spec.task.container.healthcheck.retries = retries
    for path, parts in durations.items():
        group, name = path.split(".")
        owner = {
            "restart": spec.task.restart,
            "update": spec.update,
            "rollback": spec.rollback,
            "container": spec.task.container,
            "healthcheck": spec.task.container.healthcheck,
        }[group]
        _set_duration(getattr(owner, name), parts)
    for target, published in ports:
        port = spec.endpoint.ports.add(target_port=target, published_port=published)
        port.publish_mode = types_pb2.PUBLISH_MODE_HOST
    try:
        validate_service_spec(spec)
    except InvalidArgumentError:
        return
    # What passed is in range: no NaN, nothing negative, durations Go can hold.
    assert not math.isnan(spec.update.max_failure_ratio)
    assert 0 <= spec.update.max_failure_ratio <= 1
    assert min(cpus) >= 0
    assert min(memory) >= 0
    assert retries >= 0
    for target, published in ports:
        assert 1 <= target <= 65535
        assert 0 <= published <= 65535
    for seconds, nanos in durations.values():
        assert 0 <= seconds * 10**9 + nanos <= INT64_MAX
    complete_service_spec(spec)


@pytest.mark.parametrize("text", ["mode=host,target=²", "²:80", "80:²", "8080:١٢"])
def test_digits_of_other_kinds_are_no_port_numbers(text: str) -> None:
    # "²".isdigit() is true but int("²") fails: that was an unexpected ValueError.
    with pytest.raises(FlagValueError, match="is not a number"):
        parse_publish(text)
