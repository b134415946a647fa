"""The constraint enforcer on a real manager (embedded etcd) with hollow agents: when the
label a service is constrained to goes from a node, the service's tasks there are shut
down with the reason in their error, and their replacements run on a node that still
has it; tasks of services that still fit stay where they are."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

from tests.harness import wait_until
from tests.integration.test_scheduling import RUNNING, Farm, start_farm

SHUTDOWN = 640


@pytest.fixture
def farm() -> Iterator[Farm]:
    f = start_farm(("z-", [], 3))
    try:
        yield f
    finally:
        f.cleanup()


def test_removing_a_label_moves_the_tasks(farm: Farm) -> None:
    farm.ctl("node", "update", "--label-add", "zone=east", "z-1", check=True)
    farm.create("east", "--replicas", "4", "--constraint", "node.labels.zone==east")
    farm.create("anywhere", "--replicas", "3")
    assert farm.wait_running("east", 4) == Counter({"z-1": 4})
    before = farm.wait_running("anywhere", 3)
    first = {t.id for t in farm.tasks("east")}

    farm.ctl("node", "update", "--label-add", "zone=east", "z-2", check=True)
    farm.ctl("node", "update", "--label-rm", "zone", "z-1", check=True)
    wait_until(lambda: farm.running("east") == Counter({"z-2": 4}), 20, what="east's tasks on z-2")

    tasks = farm.tasks("east")
    old = [t for t in tasks if t.id in first]
    assert len(old) == 4
    for t in old:
        assert t.desired_state == SHUTDOWN
        assert t.status.err == "constraint no longer satisfied: node.labels.zone==east"
    # The agent's report that the task stopped keeps the reason.
    wait_until(
        lambda: all(t.status.state == SHUTDOWN for t in farm.tasks("east") if t.id in first),
        20,
        what="the old tasks to stop",
    )
    assert all(
        t.status.err.startswith("constraint no longer") for t in farm.tasks("east") if t.id in first
    )
    # `service ps` shows why (the ERROR column).
    assert "constraint no longer satisfied: node.labels.zone==east" in farm.ps("east")
    # Nothing else moved, and the replacements are new slots' tasks, not restarts.
    assert farm.running("anywhere") == before
    new = [t for t in tasks if t.id not in first and t.desired_state == RUNNING]
    assert sorted(t.slot for t in new) == [1, 2, 3, 4]
    assert all(t.restart_attempt == 0 for t in new)
