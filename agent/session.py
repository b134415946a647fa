"""The agent's session with a manager, and the loop that keeps one open.

A session: open the Session stream (node description in; session id, heartbeat period
and manager list out, then assignments, log subscriptions and changes of the managers'
list as they come), re-send every task's status, then heartbeat, follow the session
stream and send status reports side by side until any of them fails. Then the next manager
in the list (never the one that just failed, when there is another) is tried after a
jittered backoff (100 ms doubling to 8 s). Running tasks are untouched by all of this.

A manager that dies with its host, or is cut off, sends no TCP RST: its connections
just go silent. When there is another manager to move to, the agent notices that
within one heartbeat period through HTTP/2 keepalive pings (`liveness_options`), and
gives a manager it cannot even connect to at most a period (`connect_timeout`) before
it tries the next.

A manager that accepted the connection but has not answered the Session call in time
is alive and overloaded, not dead: each attempt in a row that opens no session gives
the next one longer for that answer (`open_timeout`), rather than sending it one new
connection, TLS handshake and registration after another, each adding to the load
that held the answers up (a farm of 5,000 hollow agents kept up such a storm for
minutes, docs/performance.md). A manager that does not even accept the connection is
still left after a period, every time.
"""

from __future__ import annotations

import asyncio
import random
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from agent.credentials import NodeCredentials, channel_options
from agent.executor import Executor, ExecutorError
from agent.logs import LogPublisher
from agent.metrics import ASSIGNMENT_MESSAGES, HEARTBEATS_SENT, SESSIONS_UP
from agent.reporter import StatusReporter
from agent.worker import Worker
from common.api import dispatcher_pb2, dispatcher_pb2_grpc, network_pb2, objects_pb2
from common.defaults import HEARTBEAT_PERIOD, MISSED_HEARTBEATS
from common.log import get_logger
from common.looplag import wait_excluding_stalls
from common.timeutil import duration_seconds

MIN_BACKOFF = 0.1
# How often the agent asks its container engine whether it answers, and how long an
# answer may take before the engine counts as not answering.
ENGINE_CHECK_INTERVAL = 2.0
ENGINE_CHECK_TIMEOUT = 10.0
MAX_BACKOFF = 8.0
# The heartbeat period until a manager says otherwise (the cluster default).
DEFAULT_PERIOD = HEARTBEAT_PERIOD
# A manager that accepted the connection answers the Session call within this (it
# writes the node to etcd first). A dead one is noticed much sooner, by the pings.
_OPEN_TIMEOUT = 10.0
_MIN_CONNECT_TIMEOUT = 0.5
# How many times longer the opening timeout gets after failed attempts in a row.
MAX_PATIENCE = 4
_CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    # No bandwidth-probing pings after each message received (heartbeat answers,
    # assignments): the manager does without them too (daemon/listeners.py), and
    # their cost per message is what an idle cluster spends most on.
    ("grpc.http2.bdp_probe", 0),
]


def liveness_options(period: float) -> list[tuple[str, str | int]]:
    """Channel options that notice a silent manager within one heartbeat period.

    How the agent tells a dead manager from a slow one, in line with the manager's own
    tolerance (it expires a session after MISSED_HEARTBEATS = 3 periods without one):

    - Dead host, stopped process, broken link (no RST, the connection goes silent):
      HTTP/2 keepalive pings, one after every period/3 without anything received, each
      to be acknowledged within 2/3 of a period. So a silent manager is given up at
      most one period after it fell silent, and the agent moves on while the
      manager's 3-period grace (and node health's) still holds. Pings are acknowledged
      by gRPC's core threads, not by the manager's Python event loop: a manager whose
      loop is stalled by load still acknowledges them (tried: a grpc.aio server whose
      loop was busy for 4 s kept a 300/600 ms keepalive; a SIGSTOP broke it in < 1 s),
      so load alone does not drop sessions.
    - Live but slow manager: only the heartbeat's deadline applies, 3 periods (see
      `_heartbeat`): when the manager itself would drop the session. Giving up sooner
      would drop sessions the manager still holds whenever it (or this node) is busy,
      and every reconnection (all task statuses re-sent, the full assignment set) adds
      load where there is already too much.
    """
    interval_ms = max(100, int(period * 1000 / 3))
    timeout_ms = max(200, int(period * 2000 / 3))
    return [
        ("grpc.keepalive_time_ms", interval_ms),
        ("grpc.keepalive_timeout_ms", timeout_ms),
        # gRPC core times a keepalive ping out by the ping timeout when another ping
        # (e.g. a flow-control probe) is outstanding: 60 s unless set.
        ("grpc.http2.ping_timeout_ms", timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def patience(failures: int) -> int:
    """By how much the opening timeout grows after `failures` attempts in a row that
    opened no session: doubling, up to MAX_PATIENCE."""
    return min(1 << min(failures, MAX_PATIENCE), MAX_PATIENCE)


def connect_timeout(period: float) -> float:
    """How long a manager gets to accept the connection (TCP and TLS handshakes)."""
    return max(period, _MIN_CONNECT_TIMEOUT)


def open_timeout(failures: int = 0) -> float:
    """How long a manager that accepted the connection gets to answer the Session call,
    after `failures` attempts in a row that opened no session."""
    return _OPEN_TIMEOUT * patience(failures)


class SessionEnded(Exception):
    """The manager ended the session (it expired, was replaced, or the manager stops)."""


class _Reopen(Exception):
    """The session's connection does not watch the managers' liveness, and there now is
    another manager to move to: open the session again on one that does."""


class NodeRemovedError(Exception):
    """The managers refuse this node: it was removed from the cluster."""


class SessionLoop:
    """Keeps this node in session with one of `managers`."""

    def __init__(
        self,
        managers: list[str],
        creds: NodeCredentials,
        executor: Executor,
        worker: Worker,
        reporter: StatusReporter,
    ) -> None:
        self.managers = list(dict.fromkeys(managers))
        self.credentials = creds
        node_id = creds.node_id
        self.node_id = node_id
        self.executor = executor
        self.worker = worker
        self.reporter = reporter
        self.log = get_logger("session", node_id=node_id)
        # Called with each network view the manager sends (the agent's data plane).
        self.on_networks: Callable[[network_pb2.NetworkView], None] | None = None
        self.connected = asyncio.Event()
        self.session_id = ""
        self.manager = ""
        # The last heartbeat period a manager gave (the default until the first session:
        # the first channel pings on the default's schedule, which is only quicker).
        self.period = DEFAULT_PERIOD
        self.removed: NodeRemovedError | None = None
        self.logs: LogPublisher | None = None
        self._current: asyncio.Future[bool] | None = None
        # Which part of the last session ended it (heartbeats, assignments...).
        self.last_failure = ""
        # Whether the current session's connection pings the manager (`_liveness`).
        self._pinging = False
        # Attempts in a row that opened no session (`patience`).
        self.failures = 0
        self._switching = False
        # What the container engine said when it last failed to answer ("" while it
        # answers; `watch_engine`), sent with every heartbeat.
        self.engine_error = ""
        # The node's description when the engine last gave it: a session opened while
        # the engine is down sends that (and the engine error) rather than none at all.
        self._description: objects_pb2.NodeDescription | None = None
        # The open session's stub (None between sessions), for `goodbye`.
        self._stub: dispatcher_pb2_grpc.DispatcherAsyncStub | None = None

    async def watch_engine(self, interval: float = ENGINE_CHECK_INTERVAL) -> None:
        """Ask the engine whether it answers every `interval` seconds; keep what it said
        in `engine_error` for the heartbeats (the manager schedules nothing to a node
        whose engine does not answer, and shows why)."""
        while True:
            try:
                await asyncio.wait_for(self.executor.ping(), ENGINE_CHECK_TIMEOUT)
                error = ""
            except TimeoutError:
                error = f"engine not answering: no answer within {ENGINE_CHECK_TIMEOUT:g}s"
            except ExecutorError as exc:
                error = f"engine not answering: {exc}"
            if error != self.engine_error:
                if error:
                    self.log.warning("the container engine does not answer", error=error)
                else:
                    self.log.info("the container engine answers again")
                self.engine_error = error
            await asyncio.sleep(interval)

    async def _describe(self) -> objects_pb2.NodeDescription:
        """The node's description; the last one the engine gave while it does not
        answer (an agent does not open sessions before its engine answered once)."""
        try:
            self._description = await self.executor.describe()
        except ExecutorError as exc:
            if self._description is None:
                raise
            self.engine_error = f"engine not answering: {exc}"
        return self._description

    async def goodbye(self, reason: str, timeout: float = 2.0) -> float | None:
        """Tell the manager this agent stops cleanly and leaves its containers running,
        so that it keeps the node ready for its restart grace; the grace it granted
        (None: no session, or no answer within `timeout`)."""
        stub, session_id = self._stub, self.session_id
        if stub is None or not session_id:
            return None
        try:
            answer = await stub.Goodbye(
                dispatcher_pb2.GoodbyeRequest(session_id=session_id, reason=reason),
                timeout=timeout,
            )
        except grpc.aio.AioRpcError as exc:
            self.log.warning("the manager did not take the goodbye", error=_describe(exc))
            return None
        grace = duration_seconds(answer.grace)
        self.log.info("said goodbye to the manager", manager=self.manager, grace=grace)
        return grace

    def use(self, creds: NodeCredentials) -> None:
        """Switch to renewed credentials: the session is reopened with them at once."""
        self.credentials = creds
        if self._current is not None and not self._current.done():
            self._switching = True
            self._current.cancel()

    async def run(self) -> None:
        backoff = MIN_BACKOFF
        index = 0
        while True:
            addr = self.managers[index % len(self.managers)]
            established = False
            self.last_failure = ""
            try:
                self._current = asyncio.ensure_future(self._session(addr))
                established = await self._current
                self.log.warning(
                    "session ended by the manager", manager=addr, ended=self.last_failure or None
                )
            except asyncio.CancelledError:
                if not self._switching:
                    raise
                self._switching = False
                self.log.info("reopening the session with the renewed certificate")
                continue
            except _Reopen:
                self.log.info(
                    "reopening the session to watch the managers' liveness",
                    managers=len(self.managers),
                )
                continue
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                    self.removed = NodeRemovedError(exc.details() or "node refused")
                    self.log.error(
                        "the cluster refuses this node", manager=addr, error=exc.details()
                    )
                    return
                self.log.warning(
                    "no session with manager",
                    manager=addr,
                    error=_describe(exc),
                    failed=self.last_failure or None,
                    retry_in=round(backoff, 2),
                )
            except (ExecutorError, TimeoutError, SessionEnded, OSError) as exc:
                self.log.warning(
                    "no session with manager",
                    manager=addr,
                    error=_describe(exc),
                    failed=self.last_failure or None,
                    retry_in=round(backoff, 2),
                )
            except Exception:
                # Whatever went wrong, this node must not stay without a session.
                self.log.exception(
                    "session failed unexpectedly; opening another",
                    manager=addr,
                    failed=self.last_failure or None,
                    retry_in=round(backoff, 2),
                )
            finally:
                self._current = None  # nor keep the ended attempt's error (see _session)
                if self.connected.is_set():
                    SESSIONS_UP.dec()
                else:
                    self.failures += 1
                self.connected.clear()
                self._stub = None
                self.session_id = ""
            if established:
                backoff = MIN_BACKOFF
            # The next manager, not the one that just failed: a dead host would cost
            # another connect timeout, and a dead manager's agents all move on at once.
            index += 1
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _session(self, addr: str) -> bool:
        try:
            return await self._open_session(addr)
        except BaseException as exc:
            # gRPC closes a channel's connection only once the Python objects of its
            # calls are freed, not on close() (grpc/grpc#42125). The traceback keeps
            # the frames that hold them, in reference cycles that wait for the garbage
            # collector: minutes in a busy process. In a reconnection storm a farm of
            # 5,000 hollow agents held 20,000 such connections, and the manager ran
            # out of file descriptors. Free them now.
            traceback.clear_frames(exc.__traceback__)
            raise

    async def _open_session(self, addr: str) -> bool:
        description = await self._describe()
        liveness = self._liveness()
        self._pinging = bool(liveness)
        async with grpc.aio.secure_channel(
            addr,
            self.credentials.channel_credentials(),
            options=_CHANNEL_OPTIONS + liveness + channel_options(),
        ) as channel:
            stub = dispatcher_pb2_grpc.DispatcherStub(channel)
            call = stub.Session(
                dispatcher_pb2.SessionRequest(
                    node_id=self.node_id,
                    description=description,
                    running_task_ids=self.worker.running_task_ids(),
                )
            )
            first = await self._first_message(channel, call)
            if first is grpc.aio.EOF:
                raise SessionEnded("the manager closed the session at once")
            assert isinstance(first, dispatcher_pb2.SessionMessage)
            session_id = first.session_id
            period = duration_seconds(first.heartbeat_period) or DEFAULT_PERIOD
            self.period = period
            self._learn_managers(first)
            self.session_id, self.manager = session_id, addr
            self.log.info(
                "session established", manager=addr, session_id=session_id, heartbeat_period=period
            )
            self.connected.set()
            self._stub = stub
            self.failures = 0
            SESSIONS_UP.inc()
            for task_id, status in self.worker.statuses().items():
                self.reporter.add(task_id, status)
            parts: dict[str, Coroutine[Any, Any, None]] = {
                "heartbeats": self._heartbeat(stub, session_id, period),
                "status reports": self.reporter.send_forever(
                    stub, session_id, timeout=max(5.0, 3 * period)
                ),
                "session stream": self._follow_session(call),
            }
            tasks = [asyncio.create_task(p, name=n) for n, p in parts.items()]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                call.cancel()
            for t in done:
                exc = t.exception()
                if exc is not None:
                    self.last_failure = t.get_name()
                    raise exc
            self.last_failure = next(iter(done)).get_name()
            return True

    def _liveness(self) -> list[tuple[str, str | int]]:
        """Keepalive pings only when there is another manager to move to: they are
        there to leave a dead one quickly, and at thousands of nodes a ping every third
        of a period on every connection costs the manager more than the heartbeats do.
        With one manager, the heartbeat's deadline notices a dead one."""
        return liveness_options(self.period) if len(self.managers) > 1 else []

    async def _first_message(
        self,
        channel: grpc.aio.Channel,
        call: grpc.aio.UnaryStreamCall,  # type: ignore[type-arg]
    ) -> object:
        """The session's first message. A manager that has not even completed the
        handshakes within `connect_timeout` (a dead host accepts no connection, or a
        stopped process never answers the TLS hello) is given up; one that is
        connected gets `open_timeout` to register the node, longer after attempts in
        a row that failed. (Neither counts time this process's event loop stood still:
        `wait_excluding_stalls`.)"""
        read = asyncio.ensure_future(call.read())
        limit = connect_timeout(self.period)
        opening = open_timeout(self.failures)
        try:
            if (
                not await wait_excluding_stalls(read, limit)
                and channel.get_state() != grpc.ChannelConnectivity.READY
            ):
                raise TimeoutError(f"no connection within {limit:g}s")
            if not await wait_excluding_stalls(read, opening):
                raise TimeoutError(f"no answer to the session's opening within {opening:g}s")
        finally:
            if not read.done():
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
        return read.result()

    async def _heartbeat(
        self, stub: dispatcher_pb2_grpc.DispatcherAsyncStub, session_id: str, period: float
    ) -> None:
        """Heartbeat on one stream for the session. An answer later than
        MISSED_HEARTBEATS periods ends the session: by then the manager has given up on
        it too. (A dead manager is noticed sooner by the pings, when there is another
        to move to; this deadline is for one that is alive but does not answer, and a
        shorter one would drop sessions whenever this node or the manager is busy.)"""
        call = stub.Heartbeats()
        request = dispatcher_pb2.HeartbeatRequest(session_id=session_id)
        try:
            # The first at once (it tells the manager the session was taken up), then
            # one a period after each answer.
            while True:
                HEARTBEATS_SENT.inc()
                if request.engine_error != self.engine_error:
                    request = dispatcher_pb2.HeartbeatRequest(
                        session_id=session_id, engine_error=self.engine_error
                    )
                beat = asyncio.ensure_future(_beat(call, request))
                try:
                    answered = await wait_excluding_stalls(beat, MISSED_HEARTBEATS * period)
                finally:
                    if not beat.done():
                        beat.cancel()
                if not answered:
                    raise TimeoutError(
                        f"no answer to a heartbeat within {MISSED_HEARTBEATS * period:g}s"
                    )
                try:
                    response = beat.result()
                except asyncio.InvalidStateError:
                    response = grpc.aio.EOF  # the manager ended the stream
                if response is grpc.aio.EOF:
                    code = await call.code()
                    details = await call.details()
                    raise SessionEnded(f"the manager ended the heartbeats: {code.name}: {details}")
                assert isinstance(response, dispatcher_pb2.HeartbeatResponse)
                period = duration_seconds(response.period) or period
                self.period = period
                await asyncio.sleep(period * random.uniform(0.8, 1.0))
        finally:
            call.cancel()

    async def _follow_session(self, call: grpc.aio.UnaryStreamCall) -> None:  # type: ignore[type-arg]
        # The first message was taken with read(); gRPC forbids mixing it with iteration.
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return
            assert isinstance(message, dispatcher_pb2.SessionMessage)
            # The networks first: tasks in the same message may join them.
            if message.HasField("networks") and self.on_networks is not None:
                self.on_networks(message.networks)
            if message.HasField("assignments"):
                ASSIGNMENT_MESSAGES.inc()
                self.worker.apply(message.assignments)
            if message.subscriptions and self.logs is not None:
                for sub in message.subscriptions:
                    self.logs.handle(sub.subscription, sub.close)
            if message.managers:
                self._learn_managers(message)

    def _learn_managers(self, message: dispatcher_pb2.SessionMessage) -> None:
        for peer in message.managers:
            if peer.addr and peer.addr not in self.managers:
                self.managers.append(peer.addr)
        if not self._pinging and len(self.managers) > 1:
            # Learnt of another manager on a connection opened without pings (there was
            # none to move to): reopen once, so a dead manager is left within a period.
            raise _Reopen


async def _beat(
    call: grpc.aio.StreamStreamCall,  # type: ignore[type-arg]
    request: dispatcher_pb2.HeartbeatRequest,
) -> object:
    await call.write(request)
    return await call.read()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc) or type(exc).__name__
