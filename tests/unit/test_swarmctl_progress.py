"""The convergence display: which slots count, when to give up, what is printed."""

from __future__ import annotations

import itertools

import pytest
import typer

from common import states
from common.api import objects_pb2
from swarmctl.errors import SwarmctlError
from swarmctl.progress import (
    ChangedLinesOutput,
    ConvergenceTracker,
    compute_convergence,
    progress_bar,
    wait_for_convergence,
)

_ids = itertools.count(1)


def service(replicas: int = 3, image: str = "nginx", spec_version: int = 1) -> objects_pb2.Service:
    svc = objects_pb2.Service(id="svc1", spec_version=spec_version)
    svc.spec.annotations.name = "web"
    svc.spec.task.container.image = image
    svc.spec.replicated.replicas = replicas
    return svc


def task(
    svc: objects_pb2.Service,
    slot: int,
    state: int,
    *,
    desired: int = states.RUNNING,
    err: str = "",
    node: str = "n1",
    created: int | None = None,
) -> objects_pb2.Task:
    n = next(_ids)
    t = objects_pb2.Task(
        id=f"task{n}",
        service_id=svc.id,
        service_name="web",
        slot=slot,
        node_id=node,
        desired_state=desired,  # type: ignore[arg-type]
        spec=svc.spec.task,
        endpoint=svc.spec.endpoint,
        spec_version=svc.spec_version,
    )
    t.status.state = state  # type: ignore[assignment]
    t.status.err = err
    t.meta.created_at.seconds = created if created is not None else 1000 + n
    return t


def texts(lines: list[tuple[str, str]]) -> list[str]:
    return [text for _, text in lines]


def test_bar_grows_with_dockers_stages() -> None:
    assert progress_bar(states.NEW) == "[=====>" + " " * 45 + "]"
    assert progress_bar(states.PREPARING) == "[" + "=" * 33 + ">" + " " * 17 + "]"
    assert progress_bar(states.RUNNING) == "[" + "=" * 50 + ">]"
    assert all(len(progress_bar(s)) == 53 for s in (states.NEW, states.READY, states.RUNNING))


def test_slots_show_state_bars_and_errors() -> None:
    svc = service(3)
    tasks = [
        task(svc, 1, states.RUNNING),
        task(svc, 2, states.PREPARING),
        task(svc, 3, states.REJECTED, desired=states.SHUTDOWN, err="No such image: nosuch:latest"),
    ]
    conv = compute_convergence(svc, tasks)
    assert (conv.running, conv.desired, conv.converged) == (1, 3, False)
    assert texts(conv.lines()) == [
        "overall progress: 1 out of 3 tasks",
        "1/3: running   [" + "=" * 50 + ">]",
        "2/3: preparing [" + "=" * 33 + ">" + " " * 17 + "]",
        "3/3: rejected  No such image: nosuch:latest",
    ]
    assert conv.errors == ("No such image: nosuch:latest",)


def test_only_the_newest_runnable_task_of_a_slot_counts() -> None:
    svc = service(1)
    old = task(svc, 1, states.RUNNING, desired=states.SHUTDOWN)
    new = task(svc, 1, states.STARTING)
    conv = compute_convergence(svc, [new, old])
    assert conv.running == 0
    assert conv.slots[0].task == new
    # A READY desired state (prepared, waiting to start) is runnable too.
    ready = task(svc, 1, states.READY, desired=states.READY)
    assert compute_convergence(svc, [old, new, ready]).slots[0].task == ready


def test_a_failed_slot_shows_its_error_while_the_replacement_starts() -> None:
    svc = service(1)
    failed = task(svc, 1, states.FAILED, desired=states.SHUTDOWN, err="exit status 1")
    replacement = task(svc, 1, states.PENDING)
    conv = compute_convergence(svc, [failed, replacement])
    assert conv.slots[0].task == replacement
    assert texts(conv.lines())[1] == "1/1: failed    exit status 1"
    running = task(svc, 1, states.RUNNING)
    assert texts(compute_convergence(svc, [failed, running]).lines())[1].startswith(
        "1/1: running   [="
    )


def test_tasks_of_an_older_spec_do_not_count() -> None:
    old = service(2, image="nginx:1", spec_version=1)
    stale = [task(old, 1, states.RUNNING), task(old, 2, states.RUNNING)]
    new = service(2, image="nginx:2", spec_version=2)
    conv = compute_convergence(new, [*stale, task(new, 1, states.RUNNING)])
    assert (conv.running, conv.converged) == (1, False)
    assert texts(conv.lines())[2] == "2/2:"
    # Scaling bumps spec_version but keeps the task spec: existing tasks still count.
    scaled = service(3, image="nginx:1", spec_version=2)
    assert compute_convergence(scaled, stale).running == 2
    # New published ports replace the tasks even though the task template is the same.
    published = service(2, image="nginx:1", spec_version=2)
    published.spec.endpoint.ports.add(target_port=80, published_port=8080)
    assert compute_convergence(published, stale).running == 0


def test_tasks_on_down_nodes_do_not_count() -> None:
    svc = service(2)
    tasks = [task(svc, 1, states.RUNNING, node="up"), task(svc, 2, states.RUNNING, node="down")]
    assert compute_convergence(svc, tasks, active_nodes={"up"}).running == 1
    assert compute_convergence(svc, tasks).running == 2


def test_rows_stay_put_across_polls() -> None:
    svc = service(2)
    positions: dict[str, int] = {}
    first = compute_convergence(svc, [task(svc, 7, states.PENDING)], positions=positions)
    assert texts(first.lines())[1:] == ["1/2: pending   " + progress_bar(states.PENDING), "2/2:"]
    second = compute_convergence(
        svc, [task(svc, 3, states.PENDING), task(svc, 7, states.RUNNING)], positions=positions
    )
    assert positions == {"7": 1, "3": 2}
    assert texts(second.lines())[1].startswith("1/2: running")


def test_give_up_only_when_every_slot_not_running_failed_twice() -> None:
    svc = service(2)
    err = "No such image: nosuch:latest"

    def failed(slot: int) -> objects_pb2.Task:
        return task(svc, slot, states.REJECTED, desired=states.SHUTDOWN, err=err)

    once = [failed(1), task(svc, 1, states.PENDING), task(svc, 2, states.RUNNING)]
    assert not compute_convergence(svc, once).hopeless
    twice = [failed(1), failed(1), task(svc, 1, states.PENDING), task(svc, 2, states.RUNNING)]
    assert compute_convergence(svc, twice).hopeless
    # A slot with no task yet has not failed: keep waiting.
    svc3 = service(3)
    missing = [failed(1), failed(1), failed(2), failed(2)]
    for t in missing:
        t.service_id = svc3.id
        t.spec.CopyFrom(svc3.spec.task)
    assert not compute_convergence(svc3, missing).hopeless
    assert compute_convergence(service(2), missing).hopeless
    # Everything running is convergence, not failure, even with failures in the history.
    done = [failed(1), failed(1), task(svc, 1, states.RUNNING), task(svc, 2, states.RUNNING)]
    assert not compute_convergence(svc, done).hopeless
    assert compute_convergence(svc, done).converged


def test_a_slot_the_restart_policy_declined_is_given_up_on() -> None:
    svc = service(1)
    ended = task(svc, 1, states.FAILED, err="exit status 2")
    ended.restart_declined = True
    assert compute_convergence(svc, [ended]).hopeless


def test_zero_replicas_converge_and_global_services_wait_for_tasks() -> None:
    assert compute_convergence(service(0), []).converged
    glob = objects_pb2.Service(id="g")
    getattr(glob.spec, "global").SetInParent()
    conv = compute_convergence(glob, [])
    assert not conv.converged
    assert texts(conv.lines()) == ["overall progress: waiting for new tasks"]
    tasks = [task(glob, 0, states.RUNNING, node="nodeA"), task(glob, 0, states.NEW, node="nodeB")]
    conv = compute_convergence(glob, tasks)
    assert (conv.running, conv.desired) == (1, 2)
    assert texts(conv.lines())[1:] == [
        "nodeA: running   " + progress_bar(states.RUNNING),
        "nodeB: new       " + progress_bar(states.NEW),
    ]


def test_more_than_20_slots_show_only_the_overall_line() -> None:
    svc = service(21)
    conv = compute_convergence(svc, [task(svc, i, states.RUNNING) for i in range(1, 22)])
    assert texts(conv.lines()) == ["overall progress: 21 out of 21 tasks"]


def test_tracker_verifies_for_a_second_then_reports_convergence() -> None:
    svc = service(1)
    running = [task(svc, 1, states.RUNNING)]
    tracker = ConvergenceTracker("svc1", verify_seconds=1.0)
    step = tracker.observe(svc, running, now=10.0)
    assert not step.done
    assert step.lines[-1] == (
        "verify",
        "verify: Waiting 1 seconds to verify that tasks are stable...",
    )
    lost = tracker.observe(svc, [task(svc, 1, states.FAILED, err="boom")], now=10.5)
    assert lost.lines[-1] == ("verify", "verify: Detected task failure")
    assert not tracker.observe(svc, running, now=10.6).done
    assert not tracker.observe(svc, running, now=11.5).done
    final = tracker.observe(svc, running, now=11.6)
    assert final.done
    assert final.lines[-1] == ("verify", "verify: Service svc1 converged")


def test_tracker_reports_paused_updates_and_rollbacks() -> None:
    svc = service(1)
    svc.update_status.state = objects_pb2.UpdateStatus.UPDATE_STATE_ROLLBACK_STARTED
    svc.update_status.message = "update rolled back due to failure"
    step = ConvergenceTracker("svc1").observe(svc, [task(svc, 1, states.PENDING)], now=0)
    assert texts(step.lines)[:2] == [
        "rollback: update rolled back due to failure",
        "overall progress: rolling back update: 0 out of 1 tasks",
    ]
    svc.update_status.state = objects_pb2.UpdateStatus.UPDATE_STATE_PAUSED
    svc.update_status.message = "update paused due to failure"
    step = ConvergenceTracker("svc1").observe(svc, [], now=0)
    assert step.failure == "service update paused: update paused due to failure"


def test_changed_lines_output_prints_only_changes() -> None:
    printed: list[str] = []
    out = ChangedLinesOutput(printed.append)
    out.show([("overall", "0 of 1"), ("1/1", "1/1: new")])
    out.show([("overall", "0 of 1"), ("1/1", "1/1: pending")])
    out.show([("overall", "1 of 1"), ("1/1", "1/1: pending")])
    assert printed == ["0 of 1", "1/1: new", "1/1: pending", "1 of 1"]
    # A slot without a task yet is not worth a line in a log.
    blank: list[str] = []
    ChangedLinesOutput(blank.append).show([("overall", "0 of 2"), ("1/2", "1/2:")])
    assert blank == ["0 of 2"]


class FakeClient:
    """Stands in for ControlClient: replays a list of task lists, one per poll."""

    def __init__(self, svc: objects_pb2.Service, polls: list[list[objects_pb2.Task]]) -> None:
        self.svc = svc
        self.polls = polls
        self.calls = 0

    def get_service(self, ref: str) -> objects_pb2.Service:
        return self.svc

    def list_tasks(self, filters: object) -> list[objects_pb2.Task]:
        self.calls += 1
        return self.polls[min(self.calls, len(self.polls)) - 1]

    def list_nodes(self, filters: object = None) -> list[objects_pb2.Node]:
        node = objects_pb2.Node(id="n1")
        node.status.state = 2  # type: ignore[assignment]
        return [node]


class Clock:
    """A fake monotonic clock that sleeping moves forward."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run(client: FakeClient, timeout: float = 60.0) -> list[str]:
    printed: list[str] = []
    clock = Clock()
    wait_for_convergence(
        client,  # type: ignore[arg-type]
        client.svc,
        timeout=timeout,
        output=ChangedLinesOutput(printed.append),
        clock=clock,
        sleep=clock.sleep,
    )
    return printed


def test_wait_until_converged() -> None:
    svc = service(1)
    client = FakeClient(svc, [[task(svc, 1, states.PENDING)], [task(svc, 1, states.RUNNING)]])
    printed = run(client)
    assert printed[0] == "overall progress: 0 out of 1 tasks"
    assert printed[-1] == "verify: Service svc1 converged"
    assert client.calls >= 11  # 100 ms polls through the 1 s verify period


def test_wait_gives_up_at_the_timeout_with_the_task_errors() -> None:
    svc = service(2)
    stuck = [
        task(svc, 1, states.PENDING, err="no suitable node (insufficient memory on 2 nodes)"),
        task(svc, 2, states.RUNNING),
    ]
    with pytest.raises(SwarmctlError) as err:
        run(FakeClient(svc, [stuck]), timeout=1.5)
    assert str(err.value) == (
        "service web did not converge: 1 out of 2 tasks running after 1.5s\n"
        "  no suitable node (insufficient memory on 2 nodes)"
    )


def test_wait_gives_up_early_when_tasks_keep_failing() -> None:
    svc = service(1)
    err = "No such image: nosuch:latest"
    history = [task(svc, 1, states.REJECTED, desired=states.SHUTDOWN, err=err) for _ in range(2)]
    client = FakeClient(svc, [[*history, task(svc, 1, states.NEW)]])
    with pytest.raises(SwarmctlError, match="each slot not running has failed 2 or more times"):
        run(client)
    assert client.calls == 1


def test_ctrl_c_leaves_the_service_converging(capsys) -> None:  # type: ignore[no-untyped-def]
    svc = service(1)

    class Interrupting(FakeClient):
        def list_tasks(self, filters: object) -> list[objects_pb2.Task]:
            raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as exc:
        run(Interrupting(svc, []))
    assert exc.value.exit_code == 130
    assert capsys.readouterr().out == (
        "Operation continuing in background.\nUse 'swarmctl service ps web' to check progress.\n"
    )
