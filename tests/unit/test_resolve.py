"""Finding objects by id, name or id prefix (manager/controlapi/resolve.py)."""

from __future__ import annotations

import grpc
import pytest

from common import states
from common.api import objects_pb2
from manager.controlapi.resolve import resolve, resolve_task
from manager.grpc_errors import InvalidArgumentError, status_for
from manager.store import NotFoundError
from tests.unit import factories as f
from tests.unit.factories import NOW


def svc(service_id: str, name: str) -> objects_pb2.Service:
    return f.service(service_id=service_id, name=name)


def name_of(s: objects_pb2.Service) -> str:
    return s.spec.annotations.name


TABLE = {
    s.id: s
    for s in [
        svc("abc123", "web"),
        svc("abd456", "db"),
        svc("xyz789", "cache"),
        svc("web", "frontend"),  # an id that is also another service's name
        svc("q1", "twin"),
        svc("q2", "twin"),
    ]
}


def test_by_full_id() -> None:
    assert resolve("service", TABLE, "abc123", name_of).id == "abc123"


def test_by_name() -> None:
    assert resolve("service", TABLE, "db", name_of).id == "abd456"


def test_by_unique_prefix() -> None:
    assert resolve("service", TABLE, "x", name_of).id == "xyz789"
    assert resolve("service", TABLE, "abc", name_of).id == "abc123"


def test_surrounding_space_is_ignored() -> None:
    assert resolve("service", TABLE, "  db\n", name_of).id == "abd456"


def test_full_id_wins_over_name() -> None:
    assert resolve("service", TABLE, "web", name_of).id == "web"


def test_name_wins_over_prefix() -> None:
    table = {s.id: s for s in [svc("cache99", "x"), svc("zz", "cache")]}
    assert resolve("service", table, "cache", name_of).id == "zz"


def test_without_names_only_ids_count() -> None:
    assert resolve("service", TABLE, "xy").id == "xyz789"
    with pytest.raises(NotFoundError):
        resolve("service", TABLE, "db")


def test_ambiguous_name() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        resolve("service", TABLE, "twin", name_of)
    message = str(err.value)
    assert "service name 'twin' is ambiguous: 2 services have it (q1, q2)" in message
    assert "use the id instead" in message


def test_ambiguous_prefix() -> None:
    with pytest.raises(InvalidArgumentError) as err:
        resolve("service", TABLE, "ab", name_of)
    message = str(err.value)
    assert "service id prefix 'ab' is ambiguous: it matches 2 services (abc123, abd456)" in message


def test_ambiguity_lists_at_most_five_ids() -> None:
    table = {f"id{i}": svc(f"id{i}", f"s{i}") for i in range(9)}
    with pytest.raises(InvalidArgumentError) as err:
        resolve("service", table, "id", name_of)
    assert "9 services (id0, id1, id2, id3, id4)" in str(err.value)


def test_not_found() -> None:
    with pytest.raises(NotFoundError, match="service 'nope' not found"):
        resolve("service", TABLE, "nope", name_of)
    with pytest.raises(NotFoundError):
        resolve("node", {}, "n1")


@pytest.mark.parametrize("ref", ["", "   ", "\t"])
def test_nothing_given(ref: str) -> None:
    with pytest.raises(InvalidArgumentError, match="no node given"):
        resolve("node", TABLE, ref)


def test_errors_map_to_grpc_codes() -> None:
    assert status_for(InvalidArgumentError("x")) is grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(NotFoundError("x")) is grpc.StatusCode.NOT_FOUND
    assert status_for(ValueError("x")) is None


# ---- resolve_task ---------------------------------------------------------------------


def tasks_of(*tasks: objects_pb2.Task) -> dict[str, objects_pb2.Task]:
    return {t.id: t for t in tasks}


def test_task_by_name_is_the_newest_wanted_task_of_the_slot() -> None:
    s = f.service(3)
    old = f.task(s, 1, state=states.FAILED, desired=states.SHUTDOWN, created_at=NOW - 50)
    current = f.task(s, 1, created_at=NOW - 40)
    newer_but_gone = f.task(s, 1, desired=states.SHUTDOWN, created_at=NOW - 10)
    other = f.task(s, 2, created_at=NOW)
    table = tasks_of(old, current, newer_but_gone, other)
    assert resolve_task(table, "web.1").id == current.id
    assert resolve_task(table, " web.2 ").id == other.id


def test_task_by_name_when_all_have_ended() -> None:
    s = f.service()
    a = f.task(s, 1, state=states.FAILED, desired=states.SHUTDOWN, created_at=NOW - 50)
    b = f.task(s, 1, state=states.FAILED, desired=states.SHUTDOWN, created_at=NOW - 20)
    assert resolve_task(tasks_of(a, b), "web.1").id == b.id


def test_task_by_id_or_prefix() -> None:
    s = f.service()
    a = f.task(s, 1, task_id="k1abc")
    b = f.task(s, 2, task_id="k2abc")
    table = tasks_of(a, b)
    assert resolve_task(table, "k1abc").id == a.id
    assert resolve_task(table, "k2").id == b.id
    with pytest.raises(InvalidArgumentError, match="task id prefix 'k' is ambiguous"):
        resolve_task(table, "k")
    with pytest.raises(NotFoundError, match=r"task 'web\.9' not found"):
        resolve_task(table, "web.9")
    with pytest.raises(InvalidArgumentError, match="no task given"):
        resolve_task(table, " ")
