"""Finding a task by what the operator typed, on the real cache (tasks kept
serialized): by name within its service, by name once the service is gone, by id and
id prefix."""

from __future__ import annotations

import pytest

from common.api import objects_pb2
from manager.controlapi.tasks import find_task
from manager.store import Cache, NotFoundError
from tests.fakes import offline_cache


def _cache(*objs: objects_pb2.Service | objects_pb2.Task) -> Cache:
    # These tests feed the cache with `load` and never write.
    return offline_cache(*objs)


def _service(service_id: str, name: str) -> objects_pb2.Service:
    service = objects_pb2.Service(id=service_id)
    service.spec.annotations.name = name
    return service


def _task(task_id: str, service_id: str, name: str, created: int) -> objects_pb2.Task:
    task = objects_pb2.Task(id=task_id, service_id=service_id, slot=1)
    task.annotations.name = name
    task.meta.created_at.FromSeconds(created)
    return task


def test_a_name_finds_the_newest_task_of_its_slot() -> None:
    cache = _cache(
        _service("s1", "web"),
        _task("aaa1", "s1", "web.1", 100),
        _task("aaa2", "s1", "web.1", 200),
        _service("s2", "db"),
        _task("bbb1", "s2", "db.1", 300),
    )
    assert find_task(cache, "web.1").id == "aaa2"
    assert find_task(cache, " db.1 ").id == "bbb1"


def test_a_name_still_finds_tasks_of_a_removed_service() -> None:
    cache = _cache(_task("ccc1", "gone", "old.1", 100))
    assert find_task(cache, "old.1").id == "ccc1"


def test_ids_and_prefixes() -> None:
    cache = _cache(_service("s1", "web"), _task("abc1", "s1", "web.1", 1))
    assert find_task(cache, "abc1").id == "abc1"
    assert find_task(cache, "ab").id == "abc1"
    with pytest.raises(NotFoundError):
        find_task(cache, "web.2")
    with pytest.raises(NotFoundError):
        find_task(cache, "zz")
