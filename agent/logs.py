"""Publishing task logs to the manager that asked for them.

Managers tell the agent about log subscriptions in its session; for each one the agent
reads the lines of its own matching tasks (from the engine) and streams them, in
batches, straight to the subscribing manager over mutual TLS. Without --follow it says
`close` once it has sent everything; with --follow it also picks up matching tasks that
start later, until the subscription ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import grpc

from agent.credentials import NodeCredentials, channel_options
from agent.executor import LogLine
from agent.taskrunner import TaskRunner
from common.api import logs_pb2, logs_pb2_grpc
from common.log import get_logger
from common.timeutil import timestamp_seconds

_log = get_logger("logs")
_BATCH = 200
_FLUSH = 0.05
_NEW_TASKS_EVERY = 0.5


def _matches(sub: logs_pb2.LogSubscription, runner: TaskRunner) -> bool:
    sel = sub.selector
    return runner.task.id in sel.task_ids or runner.task.service_id in sel.service_ids


class LogPublisher:
    """One publishing task per active subscription."""

    def __init__(
        self,
        runners: Callable[[], dict[str, TaskRunner]],
        credentials: Callable[[], NodeCredentials],
    ) -> None:
        self.runners = runners
        self.credentials = credentials
        self.active: dict[str, asyncio.Task[None]] = {}

    def handle(self, sub: logs_pb2.LogSubscription, close: bool) -> None:
        if close:
            task = self.active.pop(sub.id, None)
            if task is not None:
                task.cancel()
            return
        if sub.id in self.active:
            return
        if not sub.options.follow and not any(_matches(sub, r) for r in self.runners().values()):
            return  # nothing of ours; the manager does not wait for us
        task = asyncio.create_task(self._publish(sub), name=f"logs-{sub.id}")
        self.active[sub.id] = task
        task.add_done_callback(functools.partial(self._done, sub.id))

    def _done(self, subscription_id: str, _task: asyncio.Task[None]) -> None:
        self.active.pop(subscription_id, None)

    async def stop(self) -> None:
        for task in list(self.active.values()):
            task.cancel()
        await asyncio.gather(*self.active.values(), return_exceptions=True)

    async def _publish(self, sub: logs_pb2.LogSubscription) -> None:
        outbox: asyncio.Queue[logs_pb2.PublishLogsMessage | None] = asyncio.Queue()
        lines: asyncio.Queue[logs_pb2.LogMessage | None] = asyncio.Queue(10_000)
        readers: dict[str, asyncio.Task[None]] = {}
        options = sub.options
        since = timestamp_seconds(options.since) if options.HasField("since") else 0.0
        tail = options.tail if options.tail else -1

        def start_reader(runner: TaskRunner) -> None:
            readers[runner.task.id] = asyncio.create_task(
                self._read(runner, options.follow, tail, since, lines)
            )

        async def requests() -> AsyncIterator[logs_pb2.PublishLogsMessage]:
            while True:
                message = await outbox.get()
                if message is None:
                    return
                yield message

        creds = self.credentials()
        async with grpc.aio.secure_channel(
            sub.publisher_addr, creds.channel_credentials(), options=channel_options()
        ) as channel:
            call = logs_pb2_grpc.LogBrokerStub(channel).PublishLogs(requests())
            batcher = asyncio.create_task(self._batch(sub.id, lines, outbox))
            try:
                while True:
                    for runner in list(self.runners().values()):
                        if (
                            runner.task.id not in readers
                            and _matches(sub, runner)
                            and (runner.status.container_status.container_id)
                        ):
                            start_reader(runner)
                    if not options.follow:
                        await asyncio.gather(*readers.values(), return_exceptions=True)
                        break
                    await asyncio.sleep(_NEW_TASKS_EVERY)
                await lines.put(None)  # flush, then close
                await batcher
                await outbox.put(logs_pb2.PublishLogsMessage(subscription_id=sub.id, close=True))
                await outbox.put(None)
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await asyncio.wait_for(call, 10)
            except grpc.aio.AioRpcError as exc:
                _log.warning("publishing logs failed", subscription=sub.id, error=exc.details())
            finally:
                for reader in readers.values():
                    reader.cancel()
                batcher.cancel()
                call.cancel()

    async def _read(
        self,
        runner: TaskRunner,
        follow: bool,
        tail: int,
        since: float,
        out: asyncio.Queue[logs_pb2.LogMessage | None],
    ) -> None:
        task = runner.task
        context = logs_pb2.LogContext(service_id=task.service_id, task_id=task.id)
        try:
            line: LogLine
            async for line in runner.controller.logs(follow=follow, tail=tail, since=since):
                message = logs_pb2.LogMessage(
                    context=context,
                    stream=logs_pb2.LOG_STREAM_STDERR
                    if line.stderr
                    else logs_pb2.LOG_STREAM_STDOUT,
                    data=line.data,
                )
                message.timestamp.FromNanoseconds(round(line.timestamp * 1e9))
                await out.put(message)
        except Exception as exc:
            _log.debug("reading a task's log failed", task_id=task.id, error=str(exc))

    async def _batch(
        self,
        subscription_id: str,
        lines: asyncio.Queue[logs_pb2.LogMessage | None],
        outbox: asyncio.Queue[logs_pb2.PublishLogsMessage | None],
    ) -> None:
        while True:
            first = await lines.get()
            if first is None:
                return
            batch = [first]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_FLUSH):
                    while len(batch) < _BATCH:
                        nxt = await lines.get()
                        if nxt is None:
                            await outbox.put(
                                logs_pb2.PublishLogsMessage(
                                    subscription_id=subscription_id, messages=batch
                                )
                            )
                            return
                        batch.append(nxt)
            await outbox.put(
                logs_pb2.PublishLogsMessage(subscription_id=subscription_id, messages=batch)
            )
