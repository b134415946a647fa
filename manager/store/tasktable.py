"""The cache's tasks, kept serialized and decoded when read.

Tasks are most of what the manager holds: at 150,000 tasks a decoded Task (a upb
message and its Python wrapper) costs about 2 KB of memory, the same task serialized
about 0.3 KB. So the cache keeps each task as the bytes etcd returned and decodes it
on every read (about 1.5 microseconds); readers get a fresh object each time, which
they may keep or change without touching the cache.

The key's mod_revision (which the cache hands out as `meta.version`) is appended to
the stored bytes as a second `meta { version: N }` field. Protobuf merges repeated
occurrences of a message field, so decoding yields the stored task with its version
set, at no cost beyond the parse.

`TaskGroup` is an index entry (the tasks of one service or one node): it holds ids and
reads the tasks from the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping

from common.api import objects_pb2

_Task = objects_pb2.Task


_META_TAG = (_Task.DESCRIPTOR.fields_by_name["meta"].number << 3) | 2  # length-delimited
_VERSION_TAG = _Task().meta.DESCRIPTOR.fields_by_name["version"].number << 3  # varint


def varint(value: int) -> bytes:
    """`value` (not negative) as a protobuf varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def with_revision(value: bytes, revision: int) -> bytes:
    """`value` (a serialized Task) with `meta.version = revision` appended. Written by
    hand: protobuf would leave out a version of 0 (the default), and the stored one
    would then show through."""
    version = varint(revision)
    return value + bytes((_META_TAG, len(version) + 1, _VERSION_TAG)) + version


class TaskTable(MutableMapping[str, objects_pb2.Task]):
    """Every task by id, serialized; reads decode a fresh Task. Setting a task stores
    it serialized, with its own `meta.version` (tests and tools fill the cache so)."""

    __slots__ = ("_blobs",)

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}

    def __getitem__(self, task_id: str) -> objects_pb2.Task:
        return _Task.FromString(self._blobs[task_id])

    def serialized(self, task_id: str) -> bytes:
        """The task as stored: a serialized Task (its `meta.version` included), which
        can go into a response as it is."""
        return self._blobs[task_id]

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._blobs

    def __iter__(self) -> Iterator[str]:
        return iter(self._blobs)

    def __len__(self) -> int:
        return len(self._blobs)

    def put(self, task_id: str, value: bytes, revision: int) -> None:
        """Store `value` (a serialized Task) as read at `revision`."""
        self._blobs[task_id] = with_revision(value, revision)

    def __setitem__(self, task_id: str, task: objects_pb2.Task) -> None:
        self._blobs[task_id] = with_revision(task.SerializeToString(), task.meta.version)

    def __delitem__(self, task_id: str) -> None:
        del self._blobs[task_id]


class TaskGroup(Mapping[str, objects_pb2.Task]):
    """The tasks of one service (or node): their ids, read from the table."""

    __slots__ = ("_table", "ids")

    def __init__(self, table: TaskTable) -> None:
        self._table = table
        # Ordered like a set (a dict of ids to None).
        self.ids: dict[str, None] = {}

    def __getitem__(self, task_id: str) -> objects_pb2.Task:
        if task_id not in self.ids:
            raise KeyError(task_id)
        return self._table[task_id]

    def __contains__(self, task_id: object) -> bool:
        return task_id in self.ids

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


class TaskIndex(dict[str, TaskGroup]):
    """Task groups by key (service id, node id); a missing key reads as an empty group,
    as a defaultdict would give."""

    def __init__(self, table: TaskTable) -> None:
        super().__init__()
        self._table = table

    def __missing__(self, key: str) -> TaskGroup:
        group = self[key] = TaskGroup(self._table)
        return group

    def add(self, key: str, task_id: str) -> None:
        self[key].ids[task_id] = None

    def discard(self, key: str, task_id: str) -> None:
        group = self.get(key)
        if group is not None:
            group.ids.pop(task_id, None)
            if not group.ids:
                del self[key]
