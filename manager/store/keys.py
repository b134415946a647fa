"""Key layout in etcd: one key per object, `<prefix><kind>/<id>`, values serialized protobuf.

Service and network names are unique; `<prefix>names/services/<name>` (and
`names/networks/<name>`) holds the id of the object with that name and is written in
the same transaction as the object. The cluster object
reserves `<prefix>names/clusters/default` the same way, so two managers starting at
once create one cluster.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from google.protobuf.message import Message

from common.api import logs_pb2, objects_pb2


class Kind(Enum):
    """The kinds of stored object, each with its key folder and protobuf type."""

    NODE = ("nodes", objects_pb2.Node)
    SERVICE = ("services", objects_pb2.Service)
    TASK = ("tasks", objects_pb2.Task)
    CLUSTER = ("clusters", objects_pb2.Cluster)
    NETWORK = ("networks", objects_pb2.Network)
    # Held on a manager's lease: they vanish when that manager dies.
    SESSION = ("sessions", objects_pb2.NodeSession)
    MANAGER = ("managers", objects_pb2.ManagerPresence)
    LOGSUB = ("logsubs", logs_pb2.LogSubscription)

    def __init__(self, folder: str, message: type[Message]) -> None:
        self.folder = folder
        self.message = message

    @classmethod
    def of(cls, obj: Message) -> Kind:
        return _KIND_BY_TYPE[type(obj)]


_KIND_BY_TYPE: dict[type[Message], Kind] = {k.message: k for k in Kind}


class KeySpace:
    """Builds and parses keys under one prefix (default `/swarmlet/`)."""

    def __init__(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            prefix += "/"
        self.prefix = prefix
        self._prefix_bytes = prefix.encode()

    def folder(self, kind: Kind) -> bytes:
        return f"{self.prefix}{kind.folder}/".encode()

    def key(self, kind: Kind, obj_id: str) -> bytes:
        return f"{self.prefix}{kind.folder}/{obj_id}".encode()

    def key_of(self, obj: Any) -> bytes:
        return self.key(Kind.of(obj), obj.id)

    def name_key(self, kind: Kind, name: str) -> bytes:
        """The key reserving `name` among objects of `kind` (service names, the cluster)."""
        return f"{self.prefix}names/{kind.folder}/{name}".encode()

    @property
    def leader_key(self) -> bytes:
        """Held (on its lease) by the manager that is the leader; its value is that id."""
        return f"{self.prefix}leader".encode()

    def service_name_key(self, name: str) -> bytes:
        return self.name_key(Kind.SERVICE, name)

    def parse(self, key: bytes) -> tuple[Kind, str] | None:
        """(kind, id) of an object key; None for keys that are not objects (name index)."""
        if not key.startswith(self._prefix_bytes):
            return None
        folder, _, obj_id = key[len(self._prefix_bytes) :].decode().partition("/")
        kind = _KIND_BY_FOLDER.get(folder)
        if kind is None or not obj_id:
            return None
        return kind, obj_id


_KIND_BY_FOLDER = {k.folder: k for k in Kind}


def decode(kind: Kind, value: bytes, mod_revision: int) -> Any:
    """The object stored in `value`, with meta.version set to the key's mod_revision."""
    obj = kind.message.FromString(value)
    obj.meta.version = mod_revision  # type: ignore[attr-defined]
    return obj
