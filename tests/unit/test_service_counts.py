"""ServiceCounts: the counts kept from the change stream are those a recount gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common import states
from manager.controlapi.counts import ServiceCounts
from manager.store import Kind
from tests.fakes import FakeCache
from tests.unit import factories as f

STATES = [
    states.PENDING,
    states.ASSIGNED,
    states.STARTING,
    states.RUNNING,
    states.COMPLETE,
    states.SHUTDOWN,
    states.FAILED,
]
DESIRED = [states.RUNNING, states.COMPLETE, states.SHUTDOWN, states.REMOVE]


def recount(cache: FakeCache, service_id: str, run: int | None) -> tuple[int, int, int]:
    running = wanted = completed = 0
    for t in cache.tasks.values():
        if t.service_id != service_id or (run is not None and t.job_iteration != run):
            continue
        completed += t.status.state == states.COMPLETE
        if states.is_runnable(t.desired_state) and not states.is_terminal(t.status.state):
            wanted += 1
            running += t.status.state == states.RUNNING
    return running, wanted, completed


steps = st.lists(
    st.tuples(
        st.integers(0, 5),  # which task
        st.sampled_from(["a", "b"]),  # service
        st.integers(0, 2),  # job run
        st.sampled_from(STATES),
        st.sampled_from(DESIRED),
        st.booleans(),  # delete instead
    ),
    max_size=40,
)


@given(steps)
def test_counts_match_a_recount(
    changes: list[tuple[int, str, int, f.State, f.State, bool]],
) -> None:
    cache = FakeCache()
    counts = ServiceCounts(cache)
    services = {name: f.service(service_id=name, name=name) for name in ("a", "b")}
    for which, service, run, state, desired, delete in changes:
        task_id = f"t{which}"
        if delete:
            if task_id in cache.tasks:
                cache.delete(Kind.TASK, task_id)
        else:
            t = f.task(services[service], which + 1, state=state, desired=desired, task_id=task_id)
            t.job_iteration = run
            cache.put(t)
        for name in services:
            assert counts.get(name) == recount(cache, name, None)
            for r in range(3):
                assert counts.get(name, r) == recount(cache, name, r)
