"""Store errors, each mapping to one gRPC status code in the control API."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of everything the store raises."""


class StoreUnavailableError(StoreError):
    """etcd did not answer (down, no quorum, or over its space quota)."""


class ConflictError(StoreError):
    """The object changed since it was read (its version is stale)."""


class AlreadyExistsError(StoreError):
    """An object with this id or unique name exists."""


class NotFoundError(StoreError):
    """The object does not exist (any more)."""


class NotLeaderError(StoreError):
    """A leader-only write from a manager that is no longer the leader."""


class TooLargeError(StoreError):
    """etcd refused a request as too large (an object bigger than it takes)."""
