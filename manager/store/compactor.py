"""Compaction of etcd's history, on the leader: every write leaves a revision behind,
and without compaction a busy cluster's database only grows (150,000 tasks started
write hundreds of thousands of them in two minutes). Revisions older than RETENTION
seconds are compacted every INTERVAL seconds. A manager whose cache watch lags by more
than RETENTION lists everything again, as after any compaction.

etcd's own auto-compaction (the embedded etcd's 5 minutes) may also run; compacting
an already compacted revision is harmless.
"""

from __future__ import annotations

import asyncio
import collections
import time

import grpc
from etcd3aio import Etcd3Client, EtcdError
from prometheus_client import Gauge

from common.log import get_logger
from manager.store.cache import Cache

_log = get_logger("store.compactor")
INTERVAL = 10.0
RETENTION = 60.0
COMPACTED = Gauge("swarmlet_etcd_compacted_revision", "The revision etcd was last compacted to.")


class Compactor:
    """Compacts to the revision the cache was at RETENTION seconds ago."""

    def __init__(self, client: Etcd3Client, cache: Cache) -> None:
        assert client.kv is not None
        self._kv = client.kv
        self.cache = cache
        self.compacted = 0

    async def run(self) -> None:
        """Run for as long as this manager leads (cancelled when it stops leading)."""
        marks: collections.deque[tuple[float, int]] = collections.deque()
        while True:
            await asyncio.sleep(INTERVAL)
            now = time.monotonic()
            marks.append((now, self.cache.revision))
            target = 0
            while marks and now - marks[0][0] >= RETENTION:
                target = marks.popleft()[1]
            if target <= self.compacted:
                continue
            try:
                await self._kv.compact(target, timeout=INTERVAL)
            except (EtcdError, TimeoutError, grpc.aio.AioRpcError) as exc:
                if "compacted" not in str(exc):
                    _log.warning("could not compact etcd", revision=target, error=str(exc))
                    continue
            self.compacted = target
            COMPACTED.set(target)
            _log.debug("etcd compacted", revision=target)
