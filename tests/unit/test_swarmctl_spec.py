"""The ServiceSpecs swarmctl sends for `service create` and `service update`."""

from __future__ import annotations

import pytest

from common.api import specs_pb2, types_pb2
from common.timeutil import duration
from swarmctl.errors import SwarmctlError
from swarmctl.parsing import parse_publish
from swarmctl.service_spec import CreateOptions, UpdateOptions, apply_update, build_spec


def test_create_defaults_are_explicit() -> None:
    spec = build_spec(CreateOptions(image="busybox", args=["sh", "-c", "echo hi"]))
    assert spec.WhichOneof("mode") == "replicated"
    assert spec.replicated.replicas == 1
    assert spec.task.HasField("restart")
    assert spec.task.restart.condition == specs_pb2.RESTART_CONDITION_ANY
    assert spec.task.restart.delay.seconds == 5
    assert not spec.task.restart.HasField("window")
    container = spec.task.container
    assert container.image == "busybox"
    assert list(container.args) == ["sh", "-c", "echo hi"]
    assert list(container.command) == []
    assert not container.HasField("stop_grace_period")


def test_create_with_every_option() -> None:
    spec = build_spec(
        CreateOptions(
            image="nginx",
            name="web",
            replicas=0,
            env=["A=1"],
            labels={"tier": "front"},
            container_labels={"c": "1"},
            ports=parse_publish("8080:80"),
            restart_condition=specs_pb2.RESTART_CONDITION_ON_FAILURE,
            restart_delay=duration(1),
            restart_max_attempts=3,
            restart_window=duration(60),
            stop_grace_period=duration(10),
            entrypoint=["/bin/sh", "-c"],
            workdir="/srv",
            user="nobody",
            hostname="web-host",
        )
    )
    assert spec.annotations.name == "web"
    assert dict(spec.annotations.labels) == {"tier": "front"}
    assert spec.HasField("replicated")
    assert spec.replicated.replicas == 0
    c = spec.task.container
    assert (list(c.command), list(c.env), dict(c.labels)) == (
        ["/bin/sh", "-c"],
        ["A=1"],
        {"c": "1"},
    )
    assert (c.dir, c.user, c.hostname, c.stop_grace_period.seconds) == (
        "/srv",
        "nobody",
        "web-host",
        10,
    )
    r = spec.task.restart
    assert (r.condition, r.delay.seconds, r.max_attempts, r.window.seconds) == (
        specs_pb2.RESTART_CONDITION_ON_FAILURE,
        1,
        3,
        60,
    )
    (port,) = spec.endpoint.ports
    assert port.publish_mode == types_pb2.PUBLISH_MODE_HOST


def test_create_global() -> None:
    spec = build_spec(CreateOptions(image="agent", global_mode=True))
    assert spec.WhichOneof("mode") == "global"


def base_spec() -> specs_pb2.ServiceSpec:
    return build_spec(
        CreateOptions(
            image="nginx:1",
            name="web",
            replicas=2,
            env=["A=1", "B=2"],
            labels={"keep": "1", "drop": "1"},
            container_labels={"c": "1"},
            ports=parse_publish("8080:80") + parse_publish("53/udp"),
        )
    )


def test_update_changes_only_what_was_asked() -> None:
    before = base_spec()
    after = apply_update(before, UpdateOptions(image="nginx:2"))
    assert after.task.container.image == "nginx:2"
    after.task.container.image = "nginx:1"
    assert after == before
    assert before.task.container.image == "nginx:1"  # the original is untouched


def test_update_env_labels_ports_restart_force() -> None:
    after = apply_update(
        base_spec(),
        UpdateOptions(
            env_add=["B=3", "C=4"],
            env_rm=["A"],
            label_add={"new": "x"},
            label_rm=["drop"],
            container_label_add={"d": "2"},
            container_label_rm=["c"],
            publish_add=parse_publish("9090:90"),
            publish_rm=[(53, types_pb2.PORT_PROTOCOL_UDP)],
            replicas=5,
            restart_condition=specs_pb2.RESTART_CONDITION_NONE,
            restart_delay=duration(2),
            restart_max_attempts=1,
            force=True,
        ),
    )
    assert list(after.task.container.env) == ["B=3", "C=4"]
    assert dict(after.annotations.labels) == {"keep": "1", "new": "x"}
    assert dict(after.task.container.labels) == {"d": "2"}
    assert [(p.published_port, p.target_port) for p in after.endpoint.ports] == [
        (8080, 80),
        (9090, 90),
    ]
    assert after.replicated.replicas == 5
    assert after.task.restart.condition == specs_pb2.RESTART_CONDITION_NONE
    assert after.task.restart.delay.seconds == 2
    assert after.task.restart.max_attempts == 1
    assert after.task.force_update == 1
    assert apply_update(after, UpdateOptions(force=True)).task.force_update == 2


def test_publish_add_replaces_a_port_on_the_same_node_port() -> None:
    after = apply_update(base_spec(), UpdateOptions(publish_add=parse_publish("8080:81")))
    assert [(p.published_port, p.target_port) for p in after.endpoint.ports] == [
        (0, 53),
        (8080, 81),
    ]
    same = apply_update(base_spec(), UpdateOptions(publish_add=parse_publish("8080:80")))
    assert same.endpoint == base_spec().endpoint


def test_replicas_of_a_global_service_is_an_error() -> None:
    spec = build_spec(CreateOptions(image="agent", name="agents", global_mode=True))
    with pytest.raises(SwarmctlError, match="service agents is not in replicated mode"):
        apply_update(spec, UpdateOptions(replicas=2))


def test_changes_spec() -> None:
    assert not UpdateOptions().changes_spec()
    assert not UpdateOptions(force=True).changes_spec()
    assert UpdateOptions(image="x").changes_spec()
    assert UpdateOptions(replicas=0).changes_spec()
    assert UpdateOptions(env_rm=["A"]).changes_spec()
    assert UpdateOptions(restart_condition=specs_pb2.RESTART_CONDITION_NONE).changes_spec()
