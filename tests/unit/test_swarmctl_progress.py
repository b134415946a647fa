"""The convergence display: which slots count, when to give up, what is printed."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import typer

from common import states
from common.api import objects_pb2, specs_pb2
from swarmctl.convergence import (
    ConvergenceTracker,
    JobTracker,
    compute_convergence,
    compute_job_progress,
)
from swarmctl.errors import SwarmctlError
from swarmctl.progress import (
    ChangedLinesOutput,
    job_progress_bar,
    progress_bar,
    progress_lines,
    ratio_bar,
    step_lines,
    wait_for_convergence,
)
from swarmctl.rebalance import Requested, wait_for_rebalance

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
    state: states.TaskState.ValueType,
    *,
    desired: states.TaskState.ValueType = states.RUNNING,
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
        desired_state=desired,
        spec=svc.spec.task,
        endpoint=svc.spec.endpoint,
        spec_version=svc.spec_version,
    )
    t.status.state = state
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
    assert texts(progress_lines(conv)) == [
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
    assert texts(progress_lines(conv))[1] == "1/1: failed    exit status 1"
    running = task(svc, 1, states.RUNNING)
    assert texts(progress_lines(compute_convergence(svc, [failed, running])))[1].startswith(
        "1/1: running   [="
    )


def test_tasks_of_an_older_spec_do_not_count() -> None:
    old = service(2, image="nginx:1", spec_version=1)
    stale = [task(old, 1, states.RUNNING), task(old, 2, states.RUNNING)]
    new = service(2, image="nginx:2", spec_version=2)
    conv = compute_convergence(new, [*stale, task(new, 1, states.RUNNING)])
    assert (conv.running, conv.converged) == (1, False)
    assert texts(progress_lines(conv))[2] == "2/2:"
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
    assert texts(progress_lines(first))[1:] == [
        "1/2: pending   " + progress_bar(states.PENDING),
        "2/2:",
    ]
    second = compute_convergence(
        svc, [task(svc, 3, states.PENDING), task(svc, 7, states.RUNNING)], positions=positions
    )
    assert positions == {"7": 1, "3": 2}
    assert texts(progress_lines(second))[1].startswith("1/2: running")


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
    assert texts(progress_lines(conv)) == ["overall progress: waiting for new tasks"]
    tasks = [task(glob, 0, states.RUNNING, node="nodeA"), task(glob, 0, states.NEW, node="nodeB")]
    conv = compute_convergence(glob, tasks)
    assert (conv.running, conv.desired) == (1, 2)
    assert texts(progress_lines(conv))[1:] == [
        "nodeA: running   " + progress_bar(states.RUNNING),
        "nodeB: new       " + progress_bar(states.NEW),
    ]


def test_more_than_20_slots_show_only_the_overall_line() -> None:
    svc = service(21)
    conv = compute_convergence(svc, [task(svc, i, states.RUNNING) for i in range(1, 22)])
    assert texts(progress_lines(conv)) == ["overall progress: 21 out of 21 tasks"]


def test_the_model_is_facts_without_text() -> None:
    # swarmctl.convergence says what happened; swarmctl.progress alone words it.
    svc = service(1)
    running = [task(svc, 1, states.RUNNING)]
    tracker = ConvergenceTracker("svc1", verify_seconds=1.0)
    first = tracker.observe(svc, running, now=10.0)
    assert (first.verify_seconds_left, first.done, first.converged_service) == (1, False, "")
    lost = tracker.observe(svc, [task(svc, 1, states.FAILED, err="boom")], now=10.5)
    assert lost.task_failure_detected
    assert lost.verify_seconds_left is None
    tracker.observe(svc, running, now=11.0)
    final = tracker.observe(svc, running, now=12.0)
    assert (final.done, final.converged_service, final.error) == (True, "svc1", None)


def test_tracker_verifies_for_a_second_then_reports_convergence() -> None:
    svc = service(1)
    running = [task(svc, 1, states.RUNNING)]
    tracker = ConvergenceTracker("svc1", verify_seconds=1.0)
    step = tracker.observe(svc, running, now=10.0)
    assert not step.done
    assert step_lines(step)[-1] == (
        "verify",
        "verify: Waiting 1 seconds to verify that tasks are stable...",
    )
    lost = tracker.observe(svc, [task(svc, 1, states.FAILED, err="boom")], now=10.5)
    assert step_lines(lost)[-1] == ("verify", "verify: Detected task failure")
    assert not tracker.observe(svc, running, now=10.6).done
    assert not tracker.observe(svc, running, now=11.5).done
    final = tracker.observe(svc, running, now=11.6)
    assert final.done
    assert step_lines(final)[-1] == ("verify", "verify: Service svc1 converged")


US = objects_pb2.UpdateStatus


def updating(svc: objects_pb2.Service, state: int, message: str = "") -> objects_pb2.Service:
    out = objects_pb2.Service()
    out.CopyFrom(svc)
    out.update_status.state = state  # type: ignore[assignment]
    out.update_status.message = message
    return out


def test_a_paused_update_is_an_error_with_the_managers_message() -> None:
    svc = updating(service(1), US.UPDATE_STATE_PAUSED, "update paused due to failure of task t1")
    step = ConvergenceTracker("svc1").observe(svc, [task(svc, 1, states.FAILED)], now=0)
    assert step.error == "update paused due to failure of task t1"
    svc = updating(svc, US.UPDATE_STATE_ROLLBACK_PAUSED, "rollback paused due to failure")
    assert ConvergenceTracker("svc1").observe(svc, [], now=0).error == (
        "rollback paused due to failure"
    )


def test_an_update_converges_once_the_manager_completes_it() -> None:
    svc = updating(service(2), US.UPDATE_STATE_UPDATING, "update in progress")
    svc.spec.update.monitor.seconds = 3
    running = [task(svc, 1, states.RUNNING), task(svc, 2, states.RUNNING)]
    tracker = ConvergenceTracker("svc1", verify_seconds=1.0)
    tracker.note_status(svc.update_status)
    # Every slot runs the new spec: the manager watches it for the monitor period.
    step = tracker.observe(svc, running, now=10.0)
    assert step_lines(step)[-1] == (
        "verify",
        "verify: Waiting 3 seconds to verify that tasks are stable...",
    )
    step = tracker.observe(svc, running, now=20.0)
    assert not step.done  # as long as the manager says the update runs
    assert step_lines(step)[-1][1] == "verify: Waiting 1 seconds to verify that tasks are stable..."
    done = updating(svc, US.UPDATE_STATE_COMPLETED, "update completed")
    step = tracker.observe(done, running, now=20.1)
    assert step.done
    assert step.error is None
    assert step_lines(step)[-1] == ("verify", "verify: Service svc1 converged")


def test_a_completed_status_left_from_an_earlier_update_needs_the_verify_period() -> None:
    svc = updating(service(1), US.UPDATE_STATE_COMPLETED, "update completed")
    tracker = ConvergenceTracker("svc1", verify_seconds=1.0)
    tracker.note_status(svc.update_status)
    running = [task(svc, 1, states.RUNNING)]
    assert not tracker.observe(svc, running, now=0.0).done
    assert tracker.observe(svc, running, now=1.0).done


def test_an_update_rolled_back_by_the_manager_is_an_error() -> None:
    svc = service(2)
    tracker = ConvergenceTracker("svc1")
    tracker.note_status(updating(svc, US.UPDATE_STATE_UPDATING).update_status)
    reason = "update rolled back due to failure or early termination of task t9"
    rolling = updating(svc, US.UPDATE_STATE_ROLLBACK_STARTED, reason)
    rolling.spec.rollback.monitor.seconds = 2
    tasks = [task(rolling, 1, states.RUNNING), task(rolling, 2, states.STARTING)]
    step = tracker.observe(rolling, tasks, now=0.0)
    assert texts(step_lines(step)) == [
        f"rollback: {reason}",
        "overall progress: rolling back update: 1 out of 2 tasks",
        # Docker's bars run backwards while rolling back.
        "1/2: running   " + progress_bar(states.RUNNING, rollback=True),
        "2/2: starting  " + progress_bar(states.STARTING, rollback=True),
    ]
    assert progress_bar(states.RUNNING, rollback=True) == "[>" + " " * 50 + "]"
    assert step.manager_decides
    tasks = [task(rolling, 1, states.RUNNING), task(rolling, 2, states.RUNNING)]
    step = tracker.observe(rolling, tasks, now=1.0)
    assert step_lines(step)[-1][1] == "verify: Waiting 2 seconds to verify that tasks are stable..."
    done = updating(rolling, US.UPDATE_STATE_ROLLBACK_COMPLETED, "rollback completed")
    step = tracker.observe(done, tasks, now=3.0)
    assert step.done
    assert texts(step_lines(step))[0] == f"rollback: {reason}"
    assert texts(step_lines(step))[-2:] == [
        "verify: Service svc1 converged",
        "rollback: rollback completed",
    ]
    assert step.error == (
        "the update of service web failed and was rolled back due to failure or early "
        "termination of task t9"
    )


def test_a_rollback_the_user_asked_for_succeeds() -> None:
    svc = service(1)
    rolling = updating(svc, US.UPDATE_STATE_ROLLBACK_STARTED, "manually requested rollback")
    tracker = ConvergenceTracker("svc1")
    tracker.note_status(rolling.update_status)
    step = tracker.observe(rolling, [task(svc, 1, states.RUNNING)], now=0.0)
    assert texts(step_lines(step))[0] == "rollback: manually requested rollback"
    done = updating(svc, US.UPDATE_STATE_ROLLBACK_COMPLETED, "rollback completed")
    step = tracker.observe(done, [task(svc, 1, states.RUNNING)], now=0.1)
    assert step.done
    assert step.error is None
    assert texts(step_lines(step))[-1] == "rollback: rollback completed"


def test_failing_slots_of_an_update_are_left_to_the_managers_failure_action() -> None:
    svc = updating(service(1, spec_version=2), US.UPDATE_STATE_UPDATING, "update in progress")
    failed = [task(svc, 1, states.FAILED, err="exit 1") for _ in range(3)]
    step = ConvergenceTracker("svc1").observe(svc, failed, now=0.0)
    assert step.convergence.hopeless
    assert step.manager_decides
    svc.spec.update.failure_action = specs_pb2.UPDATE_FAILURE_ACTION_CONTINUE
    assert not ConvergenceTracker("svc1").observe(svc, failed, now=0.0).manager_decides


def test_wait_reports_a_rolled_back_update(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = service(1)
    wrote = updating(svc, US.UPDATE_STATE_UPDATING, "update in progress")
    rolled = updating(svc, US.UPDATE_STATE_ROLLBACK_COMPLETED, "rollback completed")
    client = FakeClient(rolled, [[task(svc, 1, states.RUNNING)]])
    printed: list[str] = []
    clock = Clock()
    with pytest.raises(SwarmctlError, match="the update of service web failed and was rolled"):
        wait_for_convergence(
            client,
            wrote,
            timeout=10,
            output=ChangedLinesOutput(printed.append),
            clock=clock,
            sleep=clock.sleep,
        )
    assert printed[-2:] == ["verify: Service svc1 converged", "rollback: rollback completed"]


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
        client,
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


# global services


def global_service() -> objects_pb2.Service:
    svc = objects_pb2.Service(id="g", spec_version=1)
    svc.spec.annotations.name = "agents"
    getattr(svc.spec, "global").SetInParent()
    return svc


def test_global_services_show_one_line_per_node() -> None:
    glob = global_service()
    a, b = "a" * 25, "b" * 25
    conv = compute_convergence(
        glob, [task(glob, 0, states.RUNNING, node=b), task(glob, 0, states.STARTING, node=a)]
    )
    assert texts(progress_lines(conv)) == [
        "overall progress: 1 out of 2 tasks",
        f"{'a' * 12}: starting  " + progress_bar(states.STARTING),
        f"{'b' * 12}: running   " + progress_bar(states.RUNNING),
    ]
    assert not conv.converged


def test_a_global_node_waiting_for_a_restart_is_not_converged() -> None:
    glob = global_service()
    failed = task(glob, 0, states.FAILED, desired=states.SHUTDOWN, node="n2", err="exit 1")
    failed.restart_at.seconds = 2000
    tasks = [task(glob, 0, states.RUNNING, node="n1"), failed]
    conv = compute_convergence(glob, tasks)
    assert (conv.running, conv.desired, conv.converged) == (1, 2, False)
    assert texts(progress_lines(conv))[2] == "n2: failed    exit 1"
    # A node drained (its task shut down on purpose, no replacement) no longer counts.
    drained = task(glob, 0, states.SHUTDOWN, desired=states.SHUTDOWN, node="n2")
    conv = compute_convergence(glob, [tasks[0], drained])
    assert (conv.running, conv.desired, conv.converged) == (1, 1, True)
    # Nor does a node that is down.
    assert compute_convergence(glob, tasks, active_nodes={"n1"}).converged


def test_a_global_service_gives_up_per_node() -> None:
    glob = global_service()
    err = "No such image: nosuch:latest"
    tasks = [
        task(glob, 0, states.RUNNING, node="n1"),
        task(glob, 0, states.REJECTED, desired=states.SHUTDOWN, node="n2", err=err),
        task(glob, 0, states.REJECTED, desired=states.SHUTDOWN, node="n2", err=err),
    ]
    conv = compute_convergence(glob, tasks)
    assert conv.hopeless
    assert conv.hopeless_reason() == (
        "1 out of 2 tasks running, and each node not running has failed 2 or more times"
    )


# jobs


def replicated_job(total: int, concurrent: int, iteration: int = 1) -> objects_pb2.Service:
    svc = objects_pb2.Service(id="job1", spec_version=iteration)
    svc.spec.annotations.name = "batch"
    svc.spec.task.container.image = "batch"
    svc.spec.replicated_job.total_completions = total
    svc.spec.replicated_job.max_concurrent = concurrent
    svc.job_status.job_iteration = iteration
    return svc


def global_job(iteration: int = 1) -> objects_pb2.Service:
    svc = objects_pb2.Service(id="gjob", spec_version=iteration)
    svc.spec.annotations.name = "everywhere"
    svc.spec.global_job.SetInParent()
    svc.job_status.job_iteration = iteration
    return svc


def job_task(
    svc: objects_pb2.Service,
    slot: int,
    state: states.TaskState.ValueType,
    *,
    iteration: int | None = None,
    node: str = "n1",
    err: str = "",
) -> objects_pb2.Task:
    desired = states.SHUTDOWN if state in (states.FAILED, states.REJECTED) else states.COMPLETE
    t = task(svc, slot, state, desired=desired, node=node, err=err)
    t.job_iteration = svc.job_status.job_iteration if iteration is None else iteration
    return t


def test_job_bars_run_on_to_complete() -> None:
    assert job_progress_bar(states.COMPLETE) == "[" + "=" * 50 + ">]"
    assert job_progress_bar(states.RUNNING) == "[" + "=" * 45 + ">" + " " * 5 + "]"
    assert ratio_bar(2, 5) == "[" + "=" * 20 + ">" + " " * 30 + "]"
    assert ratio_bar(0, 0) == "[" + "=" * 50 + ">]"


def test_replicated_job_progress_like_docker() -> None:
    svc = replicated_job(total=5, concurrent=2)
    tasks = [
        job_task(svc, 1, states.COMPLETE),
        job_task(svc, 2, states.COMPLETE),
        job_task(svc, 3, states.RUNNING),
        job_task(svc, 4, states.PENDING),
        # The previous run of the job does not count.
        job_task(svc, 5, states.COMPLETE, iteration=0),
    ]
    progress = compute_job_progress(svc, tasks)
    assert (progress.completed, progress.active, progress.converged) == (2, 2, False)
    assert texts(progress_lines(progress)) == [
        "job progress: 2 out of 5 complete " + ratio_bar(2, 5),
        "active tasks: 2 out of 2 tasks",
        "1/5: complete  " + job_progress_bar(states.COMPLETE),
        "2/5: complete  " + job_progress_bar(states.COMPLETE),
        "3/5: running   " + job_progress_bar(states.RUNNING),
        "4/5: pending   " + job_progress_bar(states.PENDING),
        "5/5:",
    ]


def test_replicated_job_active_tasks_shrink_as_it_ends() -> None:
    svc = replicated_job(total=12, concurrent=10)
    tasks = [job_task(svc, n, states.COMPLETE) for n in range(1, 11)]
    tasks.append(job_task(svc, 11, states.RUNNING))
    lines = texts(progress_lines(compute_job_progress(svc, tasks)))
    # Both numbers padded to the width of max-concurrent, as Docker does.
    assert lines[:2] == [
        "job progress: 10 out of 12 complete " + ratio_bar(10, 12),
        "active tasks:  1 out of  2 tasks",
    ]
    many = replicated_job(total=21, concurrent=21)
    assert len(progress_lines(compute_job_progress(many, []))) == 2


def test_a_job_is_done_when_every_completion_is() -> None:
    svc = replicated_job(total=2, concurrent=1)
    failed = job_task(svc, 1, states.FAILED, err="exit status 1")
    tasks = [failed, job_task(svc, 1, states.COMPLETE), job_task(svc, 2, states.COMPLETE)]
    step = JobTracker("job1").observe(svc, tasks, now=0)
    assert step.done
    assert texts(step_lines(step))[-1] == "job complete"
    assert not JobTracker("job1").observe(svc, tasks[:2], now=0).done
    assert compute_job_progress(replicated_job(total=0, concurrent=0), []).converged


def test_a_job_gives_up_when_every_remaining_slot_keeps_failing() -> None:
    svc = replicated_job(total=3, concurrent=3)
    err = "exit status 2"

    def failed(slot: int) -> objects_pb2.Task:
        return job_task(svc, slot, states.FAILED, err=err)

    tasks = [job_task(svc, 1, states.COMPLETE), failed(2), failed(2), failed(3)]
    assert not compute_job_progress(svc, tasks).hopeless
    tasks.append(failed(3))
    progress = compute_job_progress(svc, tasks)
    assert progress.hopeless
    assert progress.hopeless_reason() == (
        "1 out of 3 complete, and each slot not complete has failed 2 or more times"
    )
    assert progress.notes() == [err]
    # A slot shows its failure while the replacement is on its way, not once it runs.
    lines = texts(
        progress_lines(compute_job_progress(svc, [*tasks, job_task(svc, 3, states.PENDING)]))
    )
    assert lines[-1] == f"3/3: failed    {err}"
    lines = texts(
        progress_lines(compute_job_progress(svc, [*tasks, job_task(svc, 3, states.RUNNING)]))
    )
    assert lines[-1] == "3/3: running   " + job_progress_bar(states.RUNNING)
    # A slot waiting for its turn (max-concurrent) has not failed yet.
    waiting = replicated_job(total=3, concurrent=1)
    stuck = [job_task(waiting, 1, states.FAILED, err=err) for _ in range(2)]
    assert not compute_job_progress(waiting, stuck).hopeless
    # A task the restart policy will not replace gives up at once.
    declined = job_task(svc, 2, states.FAILED, err=err)
    declined.restart_declined = True
    assert compute_job_progress(
        svc, [job_task(svc, 1, states.COMPLETE), declined, *[failed(3)] * 2]
    ).hopeless


def test_global_job_progress_counts_the_nodes_of_this_run() -> None:
    svc = global_job(iteration=2)
    assert texts(progress_lines(compute_job_progress(svc, []))) == [
        "job progress: waiting for tasks"
    ]
    assert not compute_job_progress(svc, []).converged
    a, b, c = "a" * 25, "b" * 25, "c" * 25
    tasks = [
        job_task(svc, 0, states.COMPLETE, node=a),
        job_task(svc, 0, states.RUNNING, node=b),
        job_task(svc, 0, states.COMPLETE, node=c, iteration=1),
        # Shut down on purpose (the node was drained): not expected to complete.
        job_task(svc, 0, states.SHUTDOWN, node=c),
    ]
    tasks[3].desired_state = states.SHUTDOWN
    progress = compute_job_progress(svc, tasks)
    assert (progress.completed, progress.total) == (1, 2)
    # No "active tasks" line for a global job: all its tasks start at once.
    assert texts(progress_lines(progress)) == [
        "job progress: 1 out of 2 complete " + ratio_bar(1, 2),
        f"{'a' * 12}: complete  " + job_progress_bar(states.COMPLETE),
        f"{'b' * 12}: running   " + job_progress_bar(states.RUNNING),
    ]
    tasks[1].status.state = states.COMPLETE
    assert compute_job_progress(svc, tasks).converged
    assert not compute_job_progress(svc, tasks, active_nodes={a}).hopeless


def test_wait_for_a_job_to_complete() -> None:
    svc = replicated_job(total=1, concurrent=1)
    client = FakeClient(
        svc,
        [
            [job_task(svc, 1, states.PENDING)],
            [job_task(svc, 1, states.RUNNING)],
            [job_task(svc, 1, states.COMPLETE)],
        ],
    )
    printed = run(client)
    assert printed[0] == "job progress: 0 out of 1 complete " + ratio_bar(0, 1)
    assert printed[-2:] == [
        "1/1: complete  " + job_progress_bar(states.COMPLETE),
        "job complete",
    ]
    assert client.calls == 3  # no verify period for a job


def test_wait_for_a_job_times_out_or_gives_up() -> None:
    svc = replicated_job(total=2, concurrent=2)
    running = [job_task(svc, 1, states.COMPLETE), job_task(svc, 2, states.RUNNING)]
    with pytest.raises(SwarmctlError) as err:
        run(FakeClient(svc, [running]), timeout=0.5)
    assert str(err.value) == "service batch did not complete: 1 out of 2 complete after 500ms"
    failing = [job_task(svc, n, states.FAILED, err="exit status 3") for n in (1, 1, 2, 2)]
    with pytest.raises(SwarmctlError) as err:
        run(FakeClient(svc, [failing]))
    assert str(err.value) == (
        "service batch did not complete: 0 out of 2 complete, and each slot not complete "
        "has failed 2 or more times\n  exit status 3"
    )


# service rebalance


class RebalancingClient:
    """Answers GetService with rebalance_done catching up after `polls` polls."""

    def __init__(self, polls: int) -> None:
        self.polls = polls
        self.calls = 0

    def get_service(self, ref: str) -> objects_pb2.Service:
        self.calls += 1
        svc = service(2)
        svc.rebalance_requested = 3
        svc.rebalance_done = 3 if self.calls > self.polls else 2
        return svc


def requested() -> Requested:
    svc = service(2)
    svc.rebalance_requested = 3
    return Requested("web", svc, before=Counter())


def test_wait_for_rebalance() -> None:
    clock = Clock()
    client = RebalancingClient(polls=3)
    done = wait_for_rebalance(
        client,
        requested(),
        timeout=10,
        clock=clock,
        sleep=clock.sleep,
    )
    assert done.rebalance_done == 3
    assert client.calls == 4
    with pytest.raises(SwarmctlError) as err:
        wait_for_rebalance(
            RebalancingClient(polls=100),
            requested(),
            timeout=1,
            clock=clock,
            sleep=clock.sleep,
        )
    assert str(err.value).startswith("service web was not rebalanced within 1s: ")


def test_ctrl_c_leaves_the_rebalance_going(capsys) -> None:  # type: ignore[no-untyped-def]
    class Interrupting(RebalancingClient):
        def get_service(self, ref: str) -> objects_pb2.Service:
            raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as exc:
        wait_for_rebalance(Interrupting(0), requested(), timeout=1)
    assert exc.value.exit_code == 130
    assert capsys.readouterr().out == (
        "Rebalancing continues in background.\nUse 'swarmctl service ps web' to check progress.\n"
    )
