"""Is etcd answering? A linearizable read every second, and etcd's alarms and database
size every few seconds (the space-quota alarm stops all writes until an operator acts).
The control API refuses calls with UNAVAILABLE and this message while etcd is unhealthy,
rather than answering from a cache that can no longer be trusted.

A failed probe alone does not make etcd unhealthy: losing one member (the leader, say)
costs an election of about a second, during which reads fail with "leader changed" while
the cluster is fine. Only failures lasting UNHEALTHY_AFTER do, so a lost quorum shows
within about three seconds and an election interrupts nothing. With a `SideThread` the
probes run on it, so a manager busy for seconds does not mistake its own delay for etcd's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Protocol

import grpc
from etcd3aio import EtcdError
from prometheus_client import Gauge

from common.log import get_logger
from manager.store.etcd import describe
from manager.store.side import SideThread

_log = get_logger("store.health")
ETCD_DB_BYTES = Gauge(
    "swarmlet_etcd_db_bytes", "Size of etcd's database file (of the member this manager uses)."
)
ETCD_DB_IN_USE_BYTES = Gauge(
    "swarmlet_etcd_db_in_use_bytes", "Bytes of etcd's database file in use (the rest is free)."
)
PROBE_INTERVAL = 1.0
RETRY_INTERVAL = 0.25  # between probes while they fail, to see recovery quickly
UNHEALTHY_AFTER = 2.0  # seconds of failing probes (an election takes about one)
ALARM_INTERVAL = 5.0


# What the probes ask of etcd (etcd3aio's Etcd3Client and its services satisfy these);
# tests script an election with fakes of them.
class _Status(Protocol):
    @property
    def dbSize(self) -> int: ...

    @property
    def dbSizeInUse(self) -> int: ...


class _Alarm(Protocol):
    @property
    def alarm(self) -> int: ...


class _Alarms(Protocol):
    @property
    def alarms(self) -> Iterable[_Alarm]: ...


class ProbeKV(Protocol):
    """The read the probe makes."""

    async def get(
        self, key: bytes, *, timeout: float | None = None, max_attempts: int | None = None
    ) -> object: ...


class ProbeMaintenance(Protocol):
    """etcd's member status (the database size) and its alarms."""

    async def status(
        self, *, timeout: float | None = None, max_attempts: int | None = None
    ) -> _Status: ...

    async def alarms(
        self, *, timeout: float | None = None, max_attempts: int | None = None
    ) -> _Alarms: ...


class ProbedEtcd(Protocol):
    """The etcd client the probes use (connected: both services set)."""

    @property
    def kv(self) -> ProbeKV | None: ...

    @property
    def maintenance(self) -> ProbeMaintenance | None: ...


class EtcdHealth:
    """The last known health of etcd, probed in the background."""

    def __init__(
        self,
        client: ProbedEtcd,
        endpoints: str,
        probe_key: bytes,
        side: SideThread | None = None,
    ) -> None:
        self._client = client
        self._side = side
        self.endpoints = endpoints
        self.probe_key = probe_key
        self.problem = ""  # empty while healthy
        self.alarm = ""
        self.db_size = 0  # bytes, as etcd last said

    @property
    def healthy(self) -> bool:
        return not self.problem

    async def run(self) -> None:
        if self._side is not None:
            await self._side.run(self._probe_forever)
        else:
            await self._probe_forever(self._client)

    async def _probe_forever(self, client: ProbedEtcd) -> None:
        assert client.kv is not None
        assert client.maintenance is not None
        self._kv = client.kv
        self._maintenance = client.maintenance
        loop = asyncio.get_running_loop()
        next_alarm_check = 0.0
        failing_since: float | None = None
        while True:
            try:
                await self._kv.get(self.probe_key, timeout=PROBE_INTERVAL * 1.5, max_attempts=1)
            except (EtcdError, TimeoutError, grpc.aio.AioRpcError) as exc:
                now = loop.time()
                if failing_since is None:
                    failing_since = now
                    _log.warning("etcd probe failed", error=describe(exc))
                if now - failing_since >= UNHEALTHY_AFTER:
                    if not self.problem:
                        _log.error("etcd unhealthy", error=describe(exc))
                    self.problem = (
                        f"etcd at {self.endpoints} does not answer (no quorum, or unreachable: "
                        f"{describe(exc)}); the cluster's state cannot be read or changed "
                        "until it is back"
                    )
            else:
                if self.problem:
                    _log.info("etcd healthy again")
                self.problem = ""
                failing_since = None
            if loop.time() >= next_alarm_check:
                next_alarm_check = loop.time() + ALARM_INTERVAL
                await self._check_alarms()
            await asyncio.sleep(RETRY_INTERVAL if failing_since is not None else PROBE_INTERVAL)

    async def _check_alarms(self) -> None:
        try:
            status = await self._maintenance.status(timeout=PROBE_INTERVAL)
        except (EtcdError, TimeoutError, grpc.aio.AioRpcError):
            pass
        else:
            self.db_size = int(status.dbSize)
            ETCD_DB_BYTES.set(status.dbSize)
            ETCD_DB_IN_USE_BYTES.set(status.dbSizeInUse)
        try:
            response = await self._maintenance.alarms(timeout=PROBE_INTERVAL)
        except (EtcdError, TimeoutError, grpc.aio.AioRpcError):
            return
        nospace = any(a.alarm == 1 for a in response.alarms)  # AlarmType.NOSPACE
        alarm = (
            f"etcd at {self.endpoints} is over its space quota (NOSPACE alarm): no change can "
            "be stored until it is compacted and defragmented and the alarm disarmed "
            "(etcdctl compact, etcdctl defrag, etcdctl alarm disarm)"
            if nospace
            else ""
        )
        if alarm and not self.alarm:
            _log.error("etcd space quota alarm", endpoints=self.endpoints)
        self.alarm = alarm
