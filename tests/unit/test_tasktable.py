"""The cache's serialized task table: revisions carried in the bytes, fresh copies on
read, and the id-holding indexes by service and node."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import states
from common.api import objects_pb2
from manager.store.tasktable import (
    TaskIndex,
    TaskTable,
    with_revision,
)


def _task(task_id: str = "t1", version: int = 0, node_id: str = "") -> objects_pb2.Task:
    task = objects_pb2.Task(id=task_id, service_id="s1", slot=1, node_id=node_id)
    task.meta.version = version
    task.meta.created_at.FromSeconds(1_700_000_000)
    task.status.state = states.RUNNING
    task.status.message = "started"
    return task


@given(revision=st.integers(min_value=0, max_value=2**63 - 1), version=st.integers(0, 2**40))
def test_the_appended_revision_is_decoded_as_the_version(revision: int, version: int) -> None:
    value = _task(version=version).SerializeToString()
    blob = with_revision(value, revision)
    decoded = objects_pb2.Task.FromString(blob)
    assert decoded.meta.version == revision
    # Everything else is as stored.
    decoded.meta.version = version
    assert decoded == _task(version=version)


def test_a_task_without_meta_gets_one_with_the_version() -> None:
    blob = with_revision(objects_pb2.Task(id="x").SerializeToString(), 300)
    assert objects_pb2.Task.FromString(blob).meta.version == 300


def test_reads_are_fresh_copies_that_do_not_touch_the_table() -> None:
    table = TaskTable()
    table.put("t1", _task().SerializeToString(), 42)
    assert table["t1"].meta.version == 42
    read = table["t1"]
    read.status.state = states.FAILED
    read.node_id = "elsewhere"
    again = table["t1"]
    assert again.status.state == states.RUNNING
    assert again.node_id == ""
    assert again is not read
    assert "nope" not in table
    assert table.get("nope") is None


def test_setting_a_decoded_task_keeps_its_own_version() -> None:
    table = TaskTable()
    table["t1"] = _task(version=7)
    assert table["t1"] == _task(version=7)
    assert table["t1"].meta.version == 7
    assert list(table) == ["t1"]
    assert len(table) == 1
    assert "t1" in table
    del table["t1"]
    assert "t1" not in table
    with pytest.raises(KeyError):
        table["t1"]


def test_an_index_holds_ids_and_reads_the_current_task() -> None:
    table = TaskTable()
    by_service = TaskIndex(table)
    table.put("t1", _task("t1").SerializeToString(), 5)
    table.put("t2", _task("t2").SerializeToString(), 6)
    by_service.add("s1", "t1")
    by_service.add("s1", "t2")
    group = by_service["s1"]
    assert list(group) == ["t1", "t2"]
    assert len(group) == 2
    # A newer version in the table is what the index reads.
    table.put("t1", _task("t1", node_id="n1").SerializeToString(), 9)
    assert group["t1"].node_id == "n1"
    assert group["t1"].meta.version == 9
    assert [t.id for t in group.values()] == ["t1", "t2"]
    with pytest.raises(KeyError):
        group["t3"]
    by_service.discard("s1", "t1")
    by_service.discard("s1", "t2")
    assert "s1" not in by_service
    # As a defaultdict would: a missing key reads as an empty group; get() does not add.
    assert by_service.get("s2") is None
    assert len(by_service["s2"]) == 0
