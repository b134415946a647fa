"""Rolling updates, rollbacks and health checks on real containers, driven by swarmctl.

A sampler reads ListTasks about every 50 ms while `swarmctl service update` runs, to
check what the update order promises: with start-first the running count never drops
below the replicas; with stop-first at most `parallelism` slots are down at a time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from common import states
from common.api import control_pb2, objects_pb2, specs_pb2
from tests.conftest import Cluster
from tests.harness import HEALTHCHECKED, SLEEPER, wait_until

pytestmark = pytest.mark.docker

# The sleeper image's own command: a shell that exits at once on SIGTERM.
GOOD_ARGS = "sh -c \"trap 'exit 0' TERM INT; sleep 3600 & wait\""
FAILING_ARGS = "sh -c 'exit 1'"


@dataclass
class Samples:
    """What the sampler saw: per sample, the running tasks and the slots without one."""

    running: list[int] = field(default_factory=list)
    down: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextmanager
def sampling(cluster: Cluster, service: str, replicas: int) -> Iterator[Samples]:
    """Sample the service's tasks every ~50 ms while the block runs."""
    samples = Samples()
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                tasks = cluster.manager.tasks(service)
            except Exception as exc:  # keep sampling; report at the end
                samples.errors.append(repr(exc))
            else:
                observed = [t for t in tasks if t.status.state == states.RUNNING]
                samples.running.append(
                    sum(1 for t in observed if t.desired_state == states.RUNNING)
                )
                up = {t.slot for t in observed}
                samples.down.append(sum(1 for s in range(1, replicas + 1) if s not in up))
            stop.wait(0.05)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(5)


def inspect(cluster: Cluster, name: str) -> dict[str, Any]:
    (data,) = json.loads(cluster.ctl("service", "inspect", name, check=True).stdout)
    result: dict[str, Any] = data
    return result


def running(cluster: Cluster, name: str) -> list[Any]:
    return cluster.manager.running_tasks(name)


def service(cluster: Cluster, name: str) -> Any:
    request = control_pb2.GetServiceRequest(service_id=name)
    return cluster.manager.api().GetService(request).service


def test_parallel_updates_keep_to_their_order(cluster: Cluster, name: str) -> None:
    cluster.ctl(
        "service", "create", "--name", name, "--replicas", "4", "--update-parallelism", "2",
        "--update-monitor", "1s", SLEEPER, check=True, timeout=90,
    )  # fmt: skip
    before = {t.id for t in running(cluster, name)}
    assert len(before) == 4

    with sampling(cluster, name, 4) as stop_first:
        out = cluster.ctl("service", "update", "--env-add", "V=1", name, check=True, timeout=90)
    assert "overall progress: 4 out of 4 tasks" in out.stdout
    assert out.stdout.rstrip().endswith("converged")
    after_stop_first = {t.id for t in running(cluster, name)}
    assert len(after_stop_first) == 4
    assert not after_stop_first & before
    assert not any(t.replaces for t in running(cluster, name))
    assert not stop_first.errors
    assert len(stop_first.down) > 20
    # Stop-first takes two slots out of service at once (the parallelism), never more.
    # Whether both are seen stopped at the same moment depends on how fast the engine
    # stops one and starts its replacement; the desired states say what was decided.
    assert min(stop_first.running) == 2, stop_first.running
    assert max(stop_first.down) <= 2, stop_first.down

    with sampling(cluster, name, 4) as start_first:
        cluster.ctl(
            "service", "update", "--update-order", "start-first", "--env-add", "V=2", name,
            check=True, timeout=90,
        )  # fmt: skip
    new_tasks = running(cluster, name)
    after_start_first = {t.id for t in new_tasks}
    assert len(after_start_first) == 4
    assert not after_start_first & after_stop_first
    # Each new task was started beside the one it replaced.
    assert {t.replaces for t in new_tasks} == after_stop_first
    assert not start_first.errors
    assert len(start_first.running) > 20
    # Start-first starts each new task beside the old one: never fewer than 4 running.
    assert min(start_first.running) >= 4, start_first.running
    assert max(start_first.down) == 0
    status = inspect(cluster, name)["update_status"]
    assert status["state"] == "UPDATE_STATE_COMPLETED"
    assert status["message"] == "update completed"
    cluster.ctl("service", "rm", name, check=True)


def test_a_failing_update_rolls_back_by_itself(cluster: Cluster, name: str) -> None:
    cluster.ctl(
        "service", "create", "--name", name, "--replicas", "3", "-e", "V=old",
        "--update-failure-action", "rollback", "--update-monitor", "3s",
        "--rollback-monitor", "1s", "--restart-delay", "500ms", SLEEPER,
        check=True, timeout=90,
    )  # fmt: skip
    out = cluster.ctl(
        "service", "update", "--env-add", "V=new", "--args", FAILING_ARGS, name, timeout=120
    )
    assert out.returncode == 1, out
    assert "rollback: update rolled back due to failure or early termination of task" in (
        out.stdout
    )
    assert "overall progress: rolling back update: 3 out of 3 tasks" in out.stdout
    assert out.stdout.rstrip().endswith("rollback: rollback completed")
    assert out.stderr.startswith(
        f"Error: the update of service {name} failed and was rolled back due to failure or "
        "early termination of task "
    ), out.stderr

    data = inspect(cluster, name)
    assert data["update_status"]["state"] == "UPDATE_STATE_ROLLBACK_COMPLETED"
    assert data["update_status"]["message"] == "rollback completed"
    container = data["spec"]["task"]["container"]
    assert container["env"] == ["V=old"]
    assert container["args"] == []
    # The spec it rolled back from is the one that failed.
    assert data["previous_spec"]["task"]["container"]["env"] == ["V=new"]
    tasks = running(cluster, name)
    assert sorted(t.slot for t in tasks) == [1, 2, 3]
    assert all(list(t.spec.container.env) == ["V=old"] for t in tasks)
    assert all(not t.spec.container.args for t in tasks)
    assert len(cluster.containers(name)) == 3
    pretty = cluster.ctl("service", "inspect", "--pretty", name, check=True).stdout
    assert " State:         rollback_completed" in pretty
    cluster.ctl("service", "rm", name, check=True)


def test_a_paused_update_resumes_on_the_next_update(cluster: Cluster, name: str) -> None:
    cluster.ctl(
        "service", "create", "--name", name, "--replicas", "2", "--update-monitor", "2s",
        "--update-failure-action", "pause", "--restart-delay", "500ms", SLEEPER,
        check=True, timeout=90,
    )  # fmt: skip
    out = cluster.ctl("service", "update", "--args", FAILING_ARGS, name, timeout=120)
    assert out.returncode == 1, out
    status = service(cluster, name).update_status
    assert status.state == objects_pb2.UpdateStatus.UPDATE_STATE_PAUSED
    assert status.message.startswith("update paused due to failure or early termination of task")
    assert out.stderr == f"Error: {status.message}\n"
    # The message names a task of the new spec that failed.
    failed_id = status.message.rsplit(" ", 1)[1]
    failed = next(t for t in cluster.manager.tasks(name) if t.id == failed_id)
    assert list(failed.spec.container.args) == ["sh", "-c", "exit 1"]
    assert failed.status.state == states.FAILED
    pretty = cluster.ctl("service", "inspect", "--pretty", name, check=True).stdout
    assert " State:         paused" in pretty
    assert f" Message:       {status.message}" in pretty

    out = cluster.ctl("service", "update", "--args", GOOD_ARGS, name, timeout=120)
    assert out.returncode == 0, out
    assert out.stdout.rstrip().endswith("converged")
    assert service(cluster, name).update_status.state == (
        objects_pb2.UpdateStatus.UPDATE_STATE_COMPLETED
    )
    tasks = running(cluster, name)
    assert sorted(t.slot for t in tasks) == [1, 2]
    assert all(t.spec.container.args[0:2] == ["sh", "-c"] for t in tasks)
    assert all("trap" in t.spec.container.args[2] for t in tasks)
    cluster.ctl("service", "rm", name, check=True)


def test_a_paused_update_resumes_on_an_update_config_change(cluster: Cluster, name: str) -> None:
    """Any `service update` of a paused service resumes its rollout, as in Docker: here
    one that changes nothing but the update config."""
    # Nothing answers at 127.0.0.1:9, so the image cannot be pulled until it is tagged.
    image = f"127.0.0.1:9/{name}:1"
    try:
        cluster.ctl(
            "service", "create", "--name", name, "--replicas", "2", "--update-monitor", "1s",
            "--update-parallelism", "1", "--restart-delay", "500ms", SLEEPER,
            check=True, timeout=90,
        )  # fmt: skip
        old = {t.slot: t.id for t in running(cluster, name)}
        out = cluster.ctl("service", "update", "--image", image, name, timeout=120)
        assert out.returncode == 1, out
        status = service(cluster, name).update_status
        assert status.state == objects_pb2.UpdateStatus.UPDATE_STATE_PAUSED
        # Paused after slot 1: slot 2 still runs its old task.
        assert [t.id for t in running(cluster, name) if t.slot == 2] == [old[2]]

        cluster.docker.images.get(SLEEPER).tag(image)
        out = cluster.ctl(
            "service", "update", "--update-failure-action", "continue", name, timeout=120
        )
        assert out.returncode == 0, out
        assert out.stdout.rstrip().endswith("converged")
        svc = service(cluster, name)
        assert svc.update_status.state == objects_pb2.UpdateStatus.UPDATE_STATE_COMPLETED
        assert svc.spec.update.failure_action == specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE
        tasks = running(cluster, name)
        assert sorted(t.slot for t in tasks) == [1, 2]
        assert all(t.spec.container.image == image for t in tasks)
        assert not {t.id for t in tasks} & set(old.values())
    finally:
        cluster.ctl("service", "rm", name)
        wait_until(lambda: not cluster.containers(name, all=True), 30, what="containers gone")
        with contextlib.suppress(docker.errors.ImageNotFound):
            cluster.docker.images.remove(image)


def test_an_update_failing_its_health_check_rolls_back(cluster: Cluster, name: str) -> None:
    """New tasks that never become healthy are failures to the update monitor."""
    cluster.ctl(
        "service", "create", "--name", name, "--replicas", "2",
        "--update-failure-action", "rollback", "--update-monitor", "5s",
        "--rollback-monitor", "1s", SLEEPER, check=True, timeout=90,
    )  # fmt: skip
    old = {t.id for t in running(cluster, name)}
    out = cluster.ctl(
        "service", "update", "--health-cmd", "false", "--health-interval", "500ms",
        "--health-retries", "1", name, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out
    reason = "update rolled back due to failure or early termination of task "
    assert f"rollback: {reason}" in out.stdout
    assert out.stdout.rstrip().endswith("rollback: rollback completed")
    data = inspect(cluster, name)
    assert data["update_status"]["state"] == "UPDATE_STATE_ROLLBACK_COMPLETED"
    assert "healthcheck" not in data["spec"]["task"]["container"]
    # The failure that started the rollback: a new task that was unhealthy.
    failed_id = out.stdout.split(reason, 1)[1].split()[0]
    failed = next(t for t in cluster.manager.tasks(name) if t.id == failed_id)
    assert failed.status.state == states.FAILED
    assert failed.status.err == "task: unhealthy container"
    assert list(failed.spec.container.healthcheck.test) == ["CMD-SHELL", "false"]
    tasks = running(cluster, name)
    assert sorted(t.slot for t in tasks) == [1, 2]
    assert all(not t.spec.container.HasField("healthcheck") for t in tasks)
    # Parallelism 1: the first new task never became healthy, so the update went no
    # further; the rollback replaced it, and the other slot kept its task.
    assert len({t.id for t in tasks} & old) == 1
    cluster.ctl("service", "rm", name, check=True)


READY_AFTER = 8


def test_health_checks_gate_running(cluster: Cluster, name: str) -> None:
    # Docker's semantics: failures in the start period do not count, the first pass
    # makes the container healthy. /tmp is made: the image is FROM scratch. The
    # container turns healthy READY_AFTER seconds in: long enough that both tasks are
    # seen waiting first even on a loaded CI machine (3 s was not, once).
    started = time.monotonic()
    cluster.ctl(
        "service", "create", "-d", "--name", name, "--replicas", "2",
        "--health-cmd", "test -f /tmp/ready", "--health-interval", "500ms",
        "--health-start-period", "30s", SLEEPER,
        "sh", "-c", f"trap 'exit 0' TERM; sleep {READY_AFTER}; mkdir -p /tmp; "
        "touch /tmp/ready; sleep 3600 & wait",
        check=True,
    )  # fmt: skip

    def waiting_for_health() -> bool:
        tasks = [t for t in cluster.manager.tasks(name) if t.desired_state == states.RUNNING]
        return len(tasks) == 2 and all(
            t.status.state == states.STARTING
            and t.status.message == "starting: waiting for the health check"
            for t in tasks
        )

    wait_until(waiting_for_health, 30, 0.05, what="2 tasks waiting for their health check")
    assert time.monotonic() - started < READY_AFTER  # before the command made /tmp/ready
    ps = cluster.ctl("service", "ps", name, check=True).stdout
    assert ps.count("Starting") == 2
    wait_until(lambda: len(running(cluster, name)) == 2, 30, 0.05, what="2 healthy tasks")
    assert time.monotonic() - started >= READY_AFTER
    # The container that was waited for is the one running: nothing failed or restarted.
    assert len(cluster.manager.tasks(name)) == 2
    pretty = cluster.ctl("service", "inspect", "--pretty", name, check=True).stdout
    assert "  Command:      test -f /tmp/ready" in pretty
    cluster.ctl("service", "rm", name, check=True)


def test_an_unhealthy_task_fails_and_is_replaced(cluster: Cluster, name: str) -> None:
    cluster.ctl(
        "service", "create", "-d", "--name", name, "--health-cmd", "false",
        "--health-interval", "500ms", "--health-retries", "1", "--restart-delay", "200ms",
        SLEEPER, check=True,
    )  # fmt: skip

    def replaced() -> list[Any]:
        tasks = sorted(cluster.manager.tasks(name), key=lambda t: t.meta.created_at.ToNanoseconds())
        failed = [t for t in tasks if t.status.state == states.FAILED]
        return failed if failed and tasks[-1].id != failed[0].id else []

    failed = wait_until(replaced, 60, what="an unhealthy task failed and replaced")
    assert failed[0].status.err == "task: unhealthy container"
    assert failed[0].status.message == "unhealthy"
    ps = cluster.ctl("service", "ps", "--no-trunc", name, check=True).stdout
    assert '"task: unhealthy container"' in ps
    # It never counted as running: the manager's events show it failed without running
    # (it may go straight from assigned: a transitional state that lasts less than the
    # status writer's hold is never stored).
    events = cluster.ctl(
        "events", "--since", "2m", "--until", "0s", "-f", "type=task", check=True
    ).stdout
    seen = [line for line in events.splitlines() if f" {failed[0].id} " in line]
    assert any("state=failed" in line for line in seen), seen
    assert not any("state=running" in line for line in seen), seen
    cluster.ctl("service", "rm", name, check=True)


def wait_for_health(cluster: Cluster, name: str) -> Any:
    """The service's one task once it waits for its health check (STARTING)."""

    def waiting() -> Any:
        tasks = [t for t in cluster.manager.tasks(name) if t.desired_state == states.RUNNING]
        if len(tasks) != 1 or tasks[0].status.state != states.STARTING:
            return None
        return (
            tasks[0]
            if tasks[0].status.message == "starting: waiting for the health check"
            else None
        )

    return wait_until(waiting, 30, 0.05, what="the task waiting for its health check")


def test_the_images_own_health_check_gates_running(cluster: Cluster, name: str) -> None:
    cluster.ctl("service", "create", "-d", "--name", name, HEALTHCHECKED, check=True)
    task = wait_for_health(cluster, name)
    # Healthy once /tmp/ready exists, which only this test makes.
    (container,) = cluster.containers(name)
    assert container.attrs["Config"]["Healthcheck"]["Test"] == ["CMD", "test", "-f", "/tmp/ready"]
    assert container.attrs["State"]["Health"]["Status"] == "starting"
    assert [t.id for t in cluster.manager.tasks(name)] == [task.id]
    code, _ = container.exec_run(["touch", "/tmp/ready"])
    assert code == 0
    (up,) = wait_until(lambda: running(cluster, name), 30, 0.05, what="the healthy task")
    # The container that was waited for is the one running: nothing failed or restarted.
    assert up.id == task.id
    assert len(cluster.manager.tasks(name)) == 1
    container.reload()
    assert container.attrs["State"]["Health"]["Status"] == "healthy"
    cluster.ctl("service", "rm", name, check=True)


def test_no_healthcheck_turns_the_images_own_off(cluster: Cluster, name: str) -> None:
    # /tmp/ready never exists: with the image's health check the task could not run.
    cluster.ctl(
        "service", "create", "--name", name, "--no-healthcheck", HEALTHCHECKED,
        check=True, timeout=90,
    )  # fmt: skip
    (task,) = running(cluster, name)
    assert list(task.spec.container.healthcheck.test) == ["NONE"]
    (container,) = cluster.containers(name)
    assert container.attrs["Config"]["Healthcheck"]["Test"] == ["NONE"]
    assert "Health" not in container.attrs["State"]
    cluster.ctl("service", "rm", name, check=True)


def test_rollback_and_force_show_their_progress(cluster: Cluster, name: str) -> None:
    cluster.ctl(
        "service", "create", "--name", name, "--replicas", "2", "-e", "V=1",
        "--update-monitor", "1s", "--rollback-monitor", "1s", SLEEPER, check=True, timeout=90,
    )  # fmt: skip
    cluster.ctl("service", "update", "--env-add", "V=2", name, check=True, timeout=90)
    out = cluster.ctl("service", "rollback", name, timeout=90)
    assert out.returncode == 0, out
    lines = out.stdout.splitlines()
    assert lines[0] == name
    assert "rollback: manually requested rollback" in lines
    assert "overall progress: rolling back update: 2 out of 2 tasks" in lines
    assert lines[-2:] == [
        f"verify: Service {service(cluster, name).id} converged",
        "rollback: rollback completed",
    ]
    data = inspect(cluster, name)
    assert data["update_status"]["state"] == "UPDATE_STATE_ROLLBACK_COMPLETED"
    assert data["spec"]["task"]["container"]["env"] == ["V=1"]
    assert all(list(t.spec.container.env) == ["V=1"] for t in running(cluster, name))

    # --force redeploys every task without another change, as a rolling update.
    before = {t.id for t in running(cluster, name)}
    out = cluster.ctl("service", "update", "--force", name, timeout=90)
    assert out.returncode == 0, out
    assert "overall progress: 2 out of 2 tasks" in out.stdout
    after = {t.id for t in running(cluster, name)}
    assert len(after) == 2
    assert not after & before
    assert inspect(cluster, name)["update_status"]["state"] == "UPDATE_STATE_COMPLETED"

    # update --rollback is the same as rollback.
    out = cluster.ctl("service", "update", "--rollback", name, timeout=90)
    assert out.returncode == 0, out
    assert "rollback: manually requested rollback" in out.stdout
    assert inspect(cluster, name)["update_status"]["state"] == "UPDATE_STATE_ROLLBACK_COMPLETED"
    cluster.ctl("service", "rm", name, check=True)
