"""New tasks and ids: the fast paths make exactly what the plain construction does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from common import states
from common.api import objects_pb2, types_pb2
from common.ids import ID_LENGTH, _base36_128, new_id, to_base36
from manager.domain.tasks import TaskMaker, new_task
from tests.unit import factories as f


def _built_field_by_field(
    service: objects_pb2.Service,
    slot: int,
    node_id: str,
    desired: states.TaskState.ValueType,
    restart_attempt: int,
    recent_restarts: list[float],
) -> objects_pb2.Task:
    """new_task as it was written before TaskMaker: every field set from the service."""
    task = objects_pb2.Task(
        service_id=service.id,
        slot=slot,
        node_id=node_id,
        service_name=service.spec.annotations.name,
        spec_version=service.spec_version,
        desired_state=desired,
        restart_attempt=restart_attempt,
    )
    task.annotations.name = f"{service.spec.annotations.name}.{slot if slot else node_id}"
    task.annotations.labels.update(service.spec.annotations.labels)
    task.spec.CopyFrom(service.spec.task)
    task.endpoint.CopyFrom(service.spec.endpoint)
    task.status.state = states.PENDING
    task.status.message = "pending task scheduling"
    for when in recent_restarts:
        task.recent_restarts.add().FromNanoseconds(round(when * 1e9))
    return task


@given(
    slot=st.integers(0, 10_000),
    node_id=st.sampled_from(["", "n1"]),
    desired=st.sampled_from([states.RUNNING, states.COMPLETE]),
    restart_attempt=st.integers(0, 5),
    recent_restarts=st.lists(st.floats(1e9, 2e9), max_size=3),
    labels=st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["x", ""]), max_size=2),
)
def test_task_maker_makes_what_the_fields_say(
    slot: int,
    node_id: str,
    desired: states.TaskState.ValueType,
    restart_attempt: int,
    recent_restarts: list[float],
    labels: dict[str, str],
) -> None:
    service = f.service(replicas=3)
    service.spec.annotations.labels.update(labels)
    service.spec.endpoint.ports.add(
        target_port=80, published_port=8080, publish_mode=types_pb2.PUBLISH_MODE_HOST
    )
    expected = _built_field_by_field(
        service, slot, node_id, desired, restart_attempt, recent_restarts
    )
    maker = TaskMaker(service)
    made = [
        maker(
            slot,
            node_id=node_id,
            desired=desired,
            restart_attempt=restart_attempt,
            recent_restarts=recent_restarts,
        ),
        new_task(
            service,
            slot,
            node_id=node_id,
            desired=desired,
            restart_attempt=restart_attempt,
            recent_restarts=recent_restarts,
        ),
    ]
    for task in made:
        assert len(task.id) == ID_LENGTH
        assert task.status.timestamp.seconds > 0
        task.id = ""
        task.status.ClearField("timestamp")
        assert task == expected


def test_tasks_of_one_maker_are_separate_objects() -> None:
    maker = TaskMaker(f.service(replicas=2))
    one, two = maker(1), maker(2)
    one.spec.container.image = "changed"
    assert two.spec.container.image != "changed"
    assert maker.template.spec.container.image != "changed"
    assert one.id != two.id


@given(st.integers(0, 2**128 - 1))
def test_ids_are_base36_of_128_random_bits(value: int) -> None:
    assert _base36_128(value) == to_base36(value.to_bytes(16, "big"), ID_LENGTH)


def test_new_ids_look_like_swarmkits() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == ID_LENGTH and i.isalnum() and i == i.lower() for i in ids)
    # Below 2**128: the first of 25 base36 digits is at most "f".
    assert max(i[0] for i in ids) <= "f"


def test_a_task_that_joins_a_network_waits_for_its_addresses() -> None:
    service = f.service(replicas=1)
    assert TaskMaker(service)(1).status.state == states.PENDING
    service.spec.task.networks.add(target="net1")
    assert TaskMaker(service)(1).status.state == states.NEW
    published = f.service(replicas=1)
    published.spec.endpoint.ports.add(target_port=80)  # ingress mode: the routing mesh
    assert TaskMaker(published)(1).status.state == states.NEW
