"""EtcdHealth tolerates a short run of failed probes (an etcd leader election) and flags
a lasting one (a lost quorum). etcd is replaced by a scripted fake here because the
timing of a real election cannot be chosen; tests/integration/test_ha.py runs the real
thing."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import pytest

from manager.store import health as health_module
from manager.store.health import EtcdHealth


class ScriptedKV:
    """Fake etcd KV: `get` fails while `failing` is set, as during an election."""

    def __init__(self) -> None:
        self.failing = False

    async def get(self, *_: Any, **__: Any) -> None:
        if self.failing:
            raise TimeoutError


class QuietMaintenance:
    """Fake etcd maintenance service that reports nothing (its calls time out)."""

    async def status(self, **_: Any) -> NoReturn:
        raise TimeoutError

    async def alarms(self, **_: Any) -> NoReturn:
        raise TimeoutError


class ScriptedEtcd:
    """Fake etcd client (a `ProbedEtcd`): the scripted KV and the quiet maintenance."""

    def __init__(self) -> None:
        self.kv = ScriptedKV()
        self.maintenance = QuietMaintenance()


@pytest.fixture
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_module, "PROBE_INTERVAL", 0.02)
    monkeypatch.setattr(health_module, "RETRY_INTERVAL", 0.01)
    monkeypatch.setattr(health_module, "UNHEALTHY_AFTER", 0.6)


async def test_short_failure_is_not_unhealthy_but_a_lasting_one_is(fast: None) -> None:
    client = ScriptedEtcd()
    kv = client.kv
    health = EtcdHealth(client, "http://e1:2379", b"probe")
    task = asyncio.create_task(health.run())
    try:
        await asyncio.sleep(0.05)
        assert health.healthy
        kv.failing = True  # an election: shorter than UNHEALTHY_AFTER
        await asyncio.sleep(0.2)
        assert health.healthy
        kv.failing = False
        await asyncio.sleep(0.05)
        kv.failing = True  # the failure run starts again from zero, then lasts
        await asyncio.sleep(0.2)
        assert health.healthy
        await asyncio.sleep(1.0)
        assert not health.healthy
        assert "http://e1:2379 does not answer" in health.problem
        kv.failing = False
        await asyncio.sleep(0.2)
        assert health.healthy
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
