"""The ServiceSpecs swarmctl sends for `service create` and `service update`."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from common.api import specs_pb2, types_pb2
from common.timeutil import duration
from swarmctl.errors import SwarmctlError
from swarmctl.parsing import DEFAULT_PUBLISH_MODE, parse_network, parse_platform, parse_publish
from swarmctl.service_spec import (
    CreateOptions,
    Resources,
    UpdateOptions,
    apply_update,
    build_spec,
    mode_conflict,
    resolve_network_refs,
    set_replicas,
)


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
    assert port.publish_mode == DEFAULT_PUBLISH_MODE


def test_create_global() -> None:
    spec = build_spec(CreateOptions(image="agent", mode="global"))
    assert spec.WhichOneof("mode") == "global"
    assert spec.task.restart.condition == specs_pb2.RESTART_CONDITION_ANY


def test_create_replicated_job_defaults_like_docker() -> None:
    spec = build_spec(CreateOptions(image="batch", mode="replicated_job"))
    assert spec.WhichOneof("mode") == "replicated_job"
    assert (spec.replicated_job.total_completions, spec.replicated_job.max_concurrent) == (1, 1)
    # A job's task that exits 0 is done: Docker's default restart condition for jobs.
    assert spec.task.restart.condition == specs_pb2.RESTART_CONDITION_ON_FAILURE
    five = build_spec(CreateOptions(image="batch", mode="replicated_job", replicas=5))
    assert (five.replicated_job.total_completions, five.replicated_job.max_concurrent) == (5, 5)
    two_at_a_time = build_spec(
        CreateOptions(image="batch", mode="replicated_job", replicas=5, max_concurrent=2)
    )
    assert two_at_a_time.replicated_job.total_completions == 5
    assert two_at_a_time.replicated_job.max_concurrent == 2


def test_create_global_job_and_an_explicit_restart_condition() -> None:
    spec = build_spec(CreateOptions(image="batch", mode="global_job"))
    assert spec.WhichOneof("mode") == "global_job"
    assert spec.task.restart.condition == specs_pb2.RESTART_CONDITION_ON_FAILURE
    explicit = build_spec(
        CreateOptions(
            image="batch",
            mode="global_job",
            restart_condition=specs_pb2.RESTART_CONDITION_NONE,
        )
    )
    assert explicit.task.restart.condition == specs_pb2.RESTART_CONDITION_NONE


@pytest.mark.parametrize(
    ("mode", "flags", "conflict"),
    [
        ("replicated", {}, None),
        ("replicated", {"replicas": True, "max_replicas": True}, None),
        ("replicated_job", {"replicas": True, "max_concurrent": True, "max_replicas": True}, None),
        ("global", {}, None),
        ("global_job", {}, None),
        (
            "global",
            {"replicas": True},
            ("--replicas", "replicas can only be used with replicated or replicated-job mode"),
        ),
        (
            "global_job",
            {"replicas": True},
            ("--replicas", "replicas can only be used with replicated or replicated-job mode"),
        ),
        (
            "global",
            {"max_replicas": True},
            (
                "--replicas-max-per-node",
                "replicas-max-per-node can only be used with replicated or replicated-job mode",
            ),
        ),
        (
            "replicated",
            {"max_concurrent": True},
            ("--max-concurrent", "max-concurrent can only be used with replicated-job mode"),
        ),
        (
            "global_job",
            {"max_concurrent": True},
            ("--max-concurrent", "max-concurrent can only be used with replicated-job mode"),
        ),
    ],
)
def test_mode_conflicts_are_dockers(
    mode: str, flags: dict[str, bool], conflict: tuple[str, str] | None
) -> None:
    given = {"replicas": False, "max_concurrent": False, "max_replicas": False, **flags}
    assert mode_conflict(mode, **given) == conflict


def test_create_placement_and_resources() -> None:
    spec = build_spec(
        CreateOptions(
            image="nginx",
            constraints=["node.labels.zone == east", "node.role!=manager"],
            preferences=["node.labels.zone", "node.labels.rack"],
            max_replicas=2,
            platforms=[parse_platform("linux/amd64"), parse_platform("linux/arm64")],
            strategy=specs_pb2.PLACEMENT_STRATEGY_BINPACK,
            resources=Resources(reserve_cpu=500_000_000, limit_memory=512 * 1024 * 1024),
        )
    )
    placement = spec.task.placement
    # Constraints go as written: the manager parses (and explains) them.
    assert list(placement.constraints) == ["node.labels.zone == east", "node.role!=manager"]
    assert [p.spread.spread_descriptor for p in placement.preferences] == [
        "node.labels.zone",
        "node.labels.rack",
    ]
    assert placement.max_replicas == 2
    assert [(p.os, p.architecture) for p in placement.platforms] == [
        ("linux", "amd64"),
        ("linux", "arm64"),
    ]
    assert placement.strategy == specs_pb2.PLACEMENT_STRATEGY_BINPACK
    res = spec.task.resources
    assert (res.reservations.nano_cpus, res.reservations.memory_bytes) == (500_000_000, 0)
    assert (res.limits.nano_cpus, res.limits.memory_bytes) == (0, 512 * 1024 * 1024)


def test_create_without_resources_leaves_them_unset() -> None:
    spec = build_spec(CreateOptions(image="nginx"))
    assert not spec.task.HasField("resources")
    assert spec.task.placement.strategy == specs_pb2.PLACEMENT_STRATEGY_SPREAD


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
    spec = build_spec(CreateOptions(image="agent", name="agents", mode="global"))
    with pytest.raises(SwarmctlError) as err:
        apply_update(spec, UpdateOptions(replicas=2))
    assert str(err.value) == (
        "service agents is in global mode: replicas can only be used with replicated or "
        "replicated-job mode"
    )
    job = build_spec(CreateOptions(image="agent", name="once", mode="global_job"))
    with pytest.raises(SwarmctlError, match="is in global-job mode"):
        set_replicas(job, 2, "once")


def test_replicas_and_max_concurrent_of_a_replicated_job() -> None:
    job = build_spec(CreateOptions(image="batch", mode="replicated_job", replicas=5))
    after = apply_update(job, UpdateOptions(replicas=8, max_concurrent=3))
    assert after.replicated_job.total_completions == 8
    assert after.replicated_job.max_concurrent == 3
    with pytest.raises(SwarmctlError) as err:
        apply_update(base_spec(), UpdateOptions(max_concurrent=2))
    assert str(err.value) == (
        "service web is in replicated mode: max-concurrent can only be used with "
        "replicated-job mode"
    )


def placed_spec() -> specs_pb2.ServiceSpec:
    return build_spec(
        CreateOptions(
            image="nginx",
            name="web",
            constraints=["node.role==worker", "node.labels.zone==east"],
            preferences=["node.labels.zone", "node.labels.rack"],
            platforms=[parse_platform("linux/amd64")],
            resources=Resources(reserve_cpu=250_000_000, reserve_memory=64, limit_memory=128),
        )
    )


def test_constraint_add_and_rm() -> None:
    after = apply_update(
        placed_spec(),
        UpdateOptions(
            constraint_add=["node.labels.disk==ssd", "node.role==worker", "node.labels.disk==ssd"],
            constraint_rm=["node.labels.zone==east"],
        ),
    )
    # Kept in order; one already there is not added twice; removal is by exact text.
    assert list(after.task.placement.constraints) == ["node.role==worker", "node.labels.disk==ssd"]
    unchanged = apply_update(placed_spec(), UpdateOptions(constraint_rm=["node.role == worker"]))
    assert unchanged == placed_spec()
    # Added and removed in one update: Docker adds, then removes.
    both = apply_update(
        placed_spec(), UpdateOptions(constraint_add=["a==b"], constraint_rm=["a==b"])
    )
    assert list(both.task.placement.constraints) == ["node.role==worker", "node.labels.zone==east"]


def test_placement_pref_rm_then_add_keeps_order() -> None:
    def descriptors(spec: specs_pb2.ServiceSpec) -> list[str]:
        return [p.spread.spread_descriptor for p in spec.task.placement.preferences]

    added = apply_update(placed_spec(), UpdateOptions(placement_pref_add=["node.labels.row"]))
    assert descriptors(added) == ["node.labels.zone", "node.labels.rack", "node.labels.row"]
    removed = apply_update(placed_spec(), UpdateOptions(placement_pref_rm=["node.labels.zone"]))
    assert descriptors(removed) == ["node.labels.rack"]
    # Removing and adding the same one moves it to the end (the innermost level).
    moved = apply_update(
        placed_spec(),
        UpdateOptions(
            placement_pref_rm=["node.labels.zone"], placement_pref_add=["node.labels.zone"]
        ),
    )
    assert descriptors(moved) == ["node.labels.rack", "node.labels.zone"]
    again = apply_update(placed_spec(), UpdateOptions(placement_pref_add=["node.labels.rack"]))
    assert descriptors(again) == ["node.labels.zone", "node.labels.rack"]


def test_platform_add_and_rm() -> None:
    after = apply_update(
        placed_spec(),
        UpdateOptions(
            platform_add=[parse_platform("linux/arm64"), parse_platform("Linux/AMD64")],
            platform_rm=[parse_platform("linux/amd64")],
        ),
    )
    assert [(p.os, p.architecture) for p in after.task.placement.platforms] == [("linux", "arm64")]


def test_resources_strategy_and_max_replicas_change_only_what_is_given() -> None:
    after = apply_update(
        placed_spec(),
        UpdateOptions(
            resources=Resources(reserve_cpu=1_000_000_000, limit_memory=0),
            max_replicas=3,
            strategy=specs_pb2.PLACEMENT_STRATEGY_BINPACK,
        ),
    )
    res = after.task.resources
    assert (res.reservations.nano_cpus, res.reservations.memory_bytes) == (1_000_000_000, 64)
    assert (res.limits.nano_cpus, res.limits.memory_bytes) == (0, 0)
    assert after.task.placement.max_replicas == 3
    assert after.task.placement.strategy == specs_pb2.PLACEMENT_STRATEGY_BINPACK
    assert list(after.task.placement.constraints) == list(placed_spec().task.placement.constraints)


def test_changes_spec() -> None:
    assert not UpdateOptions().changes_spec()
    assert not UpdateOptions(force=True).changes_spec()
    assert UpdateOptions(image="x").changes_spec()
    assert UpdateOptions(replicas=0).changes_spec()
    assert UpdateOptions(env_rm=["A"]).changes_spec()
    assert UpdateOptions(restart_condition=specs_pb2.RESTART_CONDITION_NONE).changes_spec()
    assert UpdateOptions(resources=Resources(limit_cpu=0)).changes_spec()
    assert UpdateOptions(constraint_rm=["a==b"]).changes_spec()
    assert UpdateOptions(platform_add=[parse_platform("linux")]).changes_spec()
    assert UpdateOptions(max_concurrent=1).changes_spec()
    assert UpdateOptions(strategy=specs_pb2.PLACEMENT_STRATEGY_SPREAD).changes_spec()


def test_create_writes_dockers_update_and_rollback_defaults() -> None:
    from swarmctl.service_spec import UpdateConfigOptions

    spec = build_spec(CreateOptions(image="busybox"))
    for cfg in (spec.update, spec.rollback):
        assert cfg.parallelism == 1
        assert cfg.delay == duration(0)
        assert cfg.failure_action == specs_pb2.UPDATE_FAILURE_ACTION_PAUSE
        assert cfg.monitor == duration(5)
        assert cfg.max_failure_ratio == 0
        assert cfg.order == specs_pb2.UPDATE_ORDER_STOP_FIRST
    assert not spec.task.container.HasField("healthcheck")

    spec = build_spec(
        CreateOptions(
            image="busybox",
            update_config=UpdateConfigOptions(
                parallelism=0,
                delay=duration(2),
                failure_action=specs_pb2.UPDATE_FAILURE_ACTION_ROLLBACK,
                monitor=duration(3),
                max_failure_ratio=0.5,
                order=specs_pb2.UPDATE_ORDER_START_FIRST,
            ),
            rollback_config=UpdateConfigOptions(parallelism=4),
        )
    )
    # parallelism 0 is "all at once", kept so by the explicit monitor.
    assert spec.update == specs_pb2.UpdateConfig(
        parallelism=0,
        delay=duration(2),
        failure_action=specs_pb2.UPDATE_FAILURE_ACTION_ROLLBACK,
        monitor=duration(3),
        max_failure_ratio=0.5,
        order=specs_pb2.UPDATE_ORDER_START_FIRST,
    )
    assert spec.rollback.parallelism == 4
    assert spec.rollback.monitor == duration(5)


def test_update_settings_change_only_what_is_given() -> None:
    from swarmctl.service_spec import UpdateConfigOptions

    spec = build_spec(CreateOptions(image="busybox"))
    opts = UpdateOptions(
        update_config=UpdateConfigOptions(order=specs_pb2.UPDATE_ORDER_START_FIRST),
        rollback_config=UpdateConfigOptions(monitor=duration(1)),
    )
    assert opts.changes_spec()
    new = apply_update(spec, opts)
    assert new.update.order == specs_pb2.UPDATE_ORDER_START_FIRST
    assert new.update.parallelism == 1
    assert new.rollback.monitor == duration(1)
    assert new.task == spec.task  # no rollout for a change of settings
    assert not UpdateOptions().changes_spec()


def test_health_flags_on_create() -> None:
    from swarmctl.service_spec import HealthOptions

    spec = build_spec(
        CreateOptions(
            image="busybox",
            health=HealthOptions(
                cmd="test -f /tmp/ready",
                interval=duration(0.5),
                timeout=duration(2),
                retries=1,
                start_period=duration(10),
            ),
        )
    )
    assert spec.task.container.healthcheck == specs_pb2.HealthConfig(
        test=["CMD-SHELL", "test -f /tmp/ready"],
        interval=duration(0.5),
        timeout=duration(2),
        retries=1,
        start_period=duration(10),
    )
    # Settings without a command keep the image's command (an empty test).
    spec = build_spec(CreateOptions(image="busybox", health=HealthOptions(retries=5)))
    assert spec.task.container.healthcheck == specs_pb2.HealthConfig(retries=5)
    spec = build_spec(CreateOptions(image="busybox", health=HealthOptions(disable=True)))
    assert list(spec.task.container.healthcheck.test) == ["NONE"]
    conflicting = HealthOptions(disable=True, cmd="true")
    assert conflicting.conflict() == "--no-healthcheck conflicts with --health-* options"
    with pytest.raises(SwarmctlError, match="conflicts"):
        build_spec(CreateOptions(image="busybox", health=conflicting))


def test_health_flags_on_update_edit_the_existing_check() -> None:
    from swarmctl.service_spec import HealthOptions

    spec = build_spec(
        CreateOptions(
            image="busybox",
            health=HealthOptions(cmd="true", interval=duration(1), retries=3),
        )
    )
    new = apply_update(spec, UpdateOptions(health=HealthOptions(retries=1)))
    assert new.task.container.healthcheck == specs_pb2.HealthConfig(
        test=["CMD-SHELL", "true"], interval=duration(1), retries=1
    )
    new = apply_update(new, UpdateOptions(health=HealthOptions(cmd="false")))
    assert list(new.task.container.healthcheck.test) == ["CMD-SHELL", "false"]
    assert new.task.container.healthcheck.retries == 1
    # An empty command goes back to the image's.
    new = apply_update(new, UpdateOptions(health=HealthOptions(cmd="")))
    assert list(new.task.container.healthcheck.test) == []
    disabled = apply_update(new, UpdateOptions(health=HealthOptions(disable=True)))
    assert disabled.task.container.healthcheck == specs_pb2.HealthConfig(test=["NONE"])
    # A setting given to a disabled check turns the image's back on.
    again = apply_update(disabled, UpdateOptions(health=HealthOptions(interval=duration(2))))
    assert again.task.container.healthcheck == specs_pb2.HealthConfig(interval=duration(2))
    assert UpdateOptions(health=HealthOptions(disable=True)).changes_spec()


# networks and the endpoint mode


def test_create_with_networks_and_endpoint_mode() -> None:
    spec = build_spec(
        CreateOptions(
            image="web",
            networks=[parse_network("front"), parse_network("name=back,alias=api,alias=v1")],
            endpoint_mode=specs_pb2.RESOLUTION_MODE_DNSRR,
        )
    )
    assert [(n.target, list(n.aliases)) for n in spec.task.networks] == [
        ("front", []),
        ("back", ["api", "v1"]),
    ]
    assert spec.endpoint.mode == specs_pb2.RESOLUTION_MODE_DNSRR
    assert build_spec(CreateOptions(image="web")).endpoint.mode == specs_pb2.RESOLUTION_MODE_VIP


IDS = {"front": "frontid", "back": "backid", "frontid": "frontid", "fr": "frontid"}


def resolved(
    *,
    network_add: Sequence[specs_pb2.NetworkAttachmentConfig] = (),
    network_rm: Sequence[str] = (),
) -> UpdateOptions:
    """UpdateOptions with their networks resolved as the manager would."""
    opts = UpdateOptions(network_add=list(network_add), network_rm=list(network_rm))
    resolve_network_refs(opts, IDS.__getitem__)
    return opts


def on_networks(*targets: str) -> specs_pb2.ServiceSpec:
    spec = build_spec(CreateOptions(image="web"))
    for target in targets:
        spec.task.networks.add(target=target)
    return spec


def test_network_add_and_rm_work_on_ids() -> None:
    spec = on_networks("frontid")
    new = apply_update(
        spec, resolved(network_add=[parse_network("name=back,alias=api")], network_rm=["fr"])
    )
    assert [(n.target, list(n.aliases)) for n in new.task.networks] == [("backid", ["api"])]
    assert [n.target for n in spec.task.networks] == ["frontid"]  # the input is unchanged


def test_network_rm_then_add_changes_the_aliases() -> None:
    new = apply_update(
        on_networks("frontid", "backid"),
        resolved(network_rm=["front"], network_add=[parse_network("name=front,alias=www")]),
    )
    assert [(n.target, list(n.aliases)) for n in new.task.networks] == [
        ("backid", []),
        ("frontid", ["www"]),
    ]


def test_network_rm_of_a_network_not_attached_does_nothing() -> None:
    spec = on_networks("frontid")
    assert apply_update(spec, resolved(network_rm=["back"])) == spec


@pytest.mark.parametrize("ref", ["front", "fr"])
def test_network_add_of_an_attached_network_is_refused_as_docker(ref: str) -> None:
    with pytest.raises(SwarmctlError) as err:
        apply_update(on_networks("frontid"), resolved(network_add=[parse_network(ref)]))
    assert str(err.value).startswith(f"service is already attached to network {ref}: ")
    assert f"--network-rm {ref}" in str(err.value)


def test_network_refs_are_looked_up_once_each_and_count_as_a_change() -> None:
    asked: list[str] = []

    def lookup(ref: str) -> str:
        asked.append(ref)
        return IDS[ref]

    opts = UpdateOptions(network_add=[parse_network("back")], network_rm=["front"])
    resolve_network_refs(opts, lookup)
    assert asked == ["back", "front"]
    assert (opts.network_add[0].target, opts.network_rm) == ("backid", ["frontid"])
    assert opts.changes_spec()
    assert not UpdateOptions().changes_spec()
    assert UpdateOptions(endpoint_mode=specs_pb2.RESOLUTION_MODE_VIP).changes_spec()


def test_endpoint_mode_update() -> None:
    spec = on_networks()
    new = apply_update(spec, UpdateOptions(endpoint_mode=specs_pb2.RESOLUTION_MODE_DNSRR))
    assert new.endpoint.mode == specs_pb2.RESOLUTION_MODE_DNSRR
    assert apply_update(new, UpdateOptions()).endpoint.mode == specs_pb2.RESOLUTION_MODE_DNSRR
