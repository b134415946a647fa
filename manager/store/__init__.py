"""The store: etcd as the only source of truth, written through optimistic-concurrency
transactions (`store.Store`), read through a list+watch-fed in-memory cache
(`cache.Cache`) that the reconcilers and the control API read."""

from manager.store.cache import Cache, Event
from manager.store.errors import (
    AlreadyExistsError,
    ConflictError,
    NotFoundError,
    NotLeaderError,
    StoreError,
    StoreUnavailableError,
    TooLargeError,
)
from manager.store.keys import Kind
from manager.store.store import BatchResult, Create, Delete, Store, Update

__all__ = [
    "AlreadyExistsError",
    "BatchResult",
    "Cache",
    "ConflictError",
    "Create",
    "Delete",
    "Event",
    "Kind",
    "NotFoundError",
    "NotLeaderError",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "TooLargeError",
    "Update",
]
