"""The dispatcher's gRPC service: sessions, heartbeats, assignments, status reports.

Liveness is kept in memory: each heartbeat only moves a timestamp. A node whose agent
has not sent one for three heartbeat periods is declared down (one etcd write when
that happens, none per heartbeat). If the manager's own event loop stalled, the stall
is added to every node's grace first, so a busy manager never declares healthy nodes
down.

The period agents are told grows with the cluster (`effective_period`): a manager
answers at most MAX_HEARTBEATS_PER_SECOND heartbeats a second even if every node is
connected to it, so 5,000 nodes heartbeat every 10 s (Kubernetes' kubelets renew their
node leases as often) while a small cluster keeps the configured period and its quick
failure detection. Each session is judged by the period it was last told. Agents
heartbeat on one stream per session (`Heartbeats`): a message costs the manager a
fraction of what a call does.

Everything else the manager tells a node goes on its session stream: the session's
facts, then its assignments (the full set, then changes), the log subscriptions that
concern it and changes of the managers' list. One stream rather than one per kind:
at thousands of nodes each open stream costs the manager memory.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import grpc

from common import pki, states
from common.api import dispatcher_pb2, dispatcher_pb2_grpc, logs_pb2, objects_pb2, types_pb2
from common.defaults import AGENT_RESTART_GRACE, MAX_HEARTBEAT_PERIOD, MISSED_HEARTBEATS
from common.ids import new_id
from common.log import get_logger
from common.timeutil import duration, stamp_now, timestamp_seconds
from manager.ca import authz
from manager.dispatcher import adoption
from manager.dispatcher.networkview import NetworkViews
from manager.dispatcher.sessionkeys import SessionKeys
from manager.dispatcher.status import TaskStatusWriter, status_problem, trimmed
from manager.grpc_errors import (
    Context,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
    abort_on_store_errors,
    abort_with,
)
from manager.metrics import HEARTBEATS, NODES_DOWN, SESSIONS
from manager.store import (
    Cache,
    Event,
    Kind,
    NotFoundError,
    Store,
    StoreError,
    Update,
)
from manager.store.batcher import BatchWriter

_log = get_logger("dispatcher")
_NODE_ID = re.compile(r"^[a-z0-9]{1,64}$")
# An agent's engine error is cut to this many characters before it is stored.
MAX_ENGINE_ERROR = 1000
MAX_HEARTBEATS_PER_SECOND = 500
# The longest period a session is ever told (cluster settings allow up to this too).
MAX_PERIOD = MAX_HEARTBEAT_PERIOD
_MAX_CHANGES_PER_MESSAGE = 2000
ASSIGNMENT_BATCHING = 0.1
# Session messages (after each session's first two) the dispatcher sends a second at
# most, and how many may go at once above that rate; see `SendPacer`.
MAX_SESSION_MESSAGES_PER_SECOND = 1000
SESSION_MESSAGE_BURST = 200

Change = dispatcher_pb2.AssignmentChange


def effective_period(configured: float, nodes: int) -> float:
    """The heartbeat period for a cluster of `nodes` nodes: the configured one, or
    longer, so that one manager gets at most MAX_HEARTBEATS_PER_SECOND heartbeats.
    Whole tenths of a second, so that answers can be shared (`_answer`)."""
    period = max(configured, math.ceil(10 * nodes / MAX_HEARTBEATS_PER_SECOND) / 10)
    return min(period, max(configured, MAX_PERIOD))


@functools.lru_cache(maxsize=64)
def _answer(period: float) -> dispatcher_pb2.HeartbeatResponse:
    """The answer to a heartbeat, one object per period (it is never changed)."""
    return dispatcher_pb2.HeartbeatResponse(period=duration(period))


class SendPacer:
    """Turns to send, at most `rate` a second on average, given out in the order asked
    (a token bucket of `burst` tokens, kept as the time of the next free turn).

    A manager pays for a session message about the same whatever it carries, so when
    thousands of nodes each get a task now and then, sending each on its own is what
    limits placement. A session waits for its turn before it builds its message, and
    the changes that arrive meanwhile go in the same message. Under the rate there is
    no wait at all: a small cluster's assignments go out at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.interval = 1.0 / rate
        self.burst = burst * self.interval  # seconds of turns that may be used at once
        self.clock = clock
        self._next = 0.0

    def delay(self) -> float:
        """Take the next turn; how long to wait for it (0: now)."""
        now = self.clock()
        turn = max(self._next, now - self.burst)
        self._next = turn + self.interval
        return max(0.0, turn - now)


@dataclass(eq=False)
class AgentSession:
    """One agent's session with this manager."""

    id: str
    node_id: str
    addr: str
    last_heartbeat: float
    # The heartbeat period it is judged by, and the one it was told last.
    period: float
    told: float = 0.0
    # The node's status timestamp as this manager last wrote it READY (registering or
    # reviving it). A later one means another manager (or a newer session) has
    # registered it since. Heartbeats do not move it: a heartbeat can arrive late (one
    # buffered while this manager was stopped), the timestamp cannot.
    registered: float = 0.0
    # Set while this manager writes the node READY again (see Heartbeat).
    reviving: bool = False
    # After a goodbye: until when (on the dispatcher's clock) the session is kept
    # although no heartbeat comes, so that a restarting agent finds its node ready.
    leaving_until: float | None = None
    # The engine error the agent last reported ("" while its engine answers), and
    # whether this manager is writing a change of it to the node.
    engine_error: str = ""
    engine_writing: bool = False
    closed: bool = False
    # Set whenever there is something to send on the session stream (or it closed).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Assignment changes not yet sent: the action by task id (a later change replaces an
    # earlier one). Only ids are held: a session may wait seconds for its turn to send
    # (`SendPacer`), and the message takes each task as the cache has it then.
    pending: dict[str, Change.Action.ValueType] = field(default_factory=dict)
    # Whether the complete set was sent: changes are collected only from then on.
    streaming: bool = False
    # Set when the list of managers changed and the agent should hear it.
    peers_changed: bool = False
    # Log subscriptions to tell the agent about (subscription, closed).
    subscriptions: list[tuple[logs_pb2.LogSubscription, bool]] = field(default_factory=list)
    # The version of the network view the agent was sent last (NetworkViews.version).
    view_version: int = 0


class Dispatcher(dispatcher_pb2_grpc.DispatcherServicer):
    """Serves agents. `peers()` gives the managers' dispatcher addresses for sessions."""

    def __init__(
        self,
        cache: Cache,
        store: Store,
        *,
        heartbeat_period: float,
        peers: Callable[[], list[dispatcher_pb2.ManagerPeer]],
        clock: Callable[[], float],
        session_keys: SessionKeys | None = None,
        restart_grace: float = AGENT_RESTART_GRACE,
    ) -> None:
        self.cache = cache
        self.restart_grace = restart_grace
        self.store = store
        self.heartbeat_period = heartbeat_period
        self.peers = peers
        self.clock = clock
        self.session_keys = session_keys
        self.sessions: dict[str, AgentSession] = {}  # by node id
        self._by_session_id: dict[str, AgentSession] = {}
        self.status_writer = TaskStatusWriter(store)
        self.registrations = BatchWriter(store, name="node registrations")
        self.heartbeats = 0
        self.pacer = SendPacer(MAX_SESSION_MESSAGES_PER_SECOND, SESSION_MESSAGE_BURST, clock)
        self._background: set[asyncio.Task[None]] = set()
        # What every agent is told of the networks (its `run` is one of the manager's loops).
        self.network_views = NetworkViews(cache, self._views_changed)
        cache.add_listener(self._on_event)

    # ---- sessions ---------------------------------------------------------------------

    def has_session(self, node_id: str) -> bool:
        return node_id in self.sessions

    def period(self) -> float:
        """The heartbeat period agents are told now."""
        return effective_period(self.heartbeat_period, len(self.cache.nodes))

    async def Session(
        self, request: dispatcher_pb2.SessionRequest, context: Context
    ) -> AsyncIterator[dispatcher_pb2.SessionMessage]:
        async with abort_on_store_errors(context):
            node_id = self._caller(context)
            if request.node_id and request.node_id != node_id:
                raise InvalidArgumentError(
                    f"node id {request.node_id!r} does not match the certificate's ({node_id})"
                )
            addr = _peer_host(context.peer())
            node = await self._register(node_id, request.description, addr)
            # Before the assignments are built: tasks it still runs may live again.
            await self._adopt(node_id, request.running_task_ids)
        period = self.period()
        # The first heartbeat is counted from a period from now: the agent sends it once
        # it has read the first message below, which a busy agent (or farm of them) can
        # be slow to do. Nodes were declared down seconds after joining for that alone.
        session = AgentSession(new_id(), node_id, addr, self.clock() + period, period, period)
        session.registered = timestamp_seconds(node.status.timestamp)
        # What the node says of its engine until the agent's first heartbeat tells.
        session.engine_error = node.status.engine_error
        old = self.sessions.get(node_id)
        if old is not None:
            self._close(old)
        self.sessions[session.node_id] = session
        self._by_session_id[session.id] = session
        SESSIONS.set(len(self.sessions))
        if self.session_keys is not None:
            self.session_keys.opened(node_id, session.id, addr)
        log = _log.bind(node_id=session.node_id, session_id=session.id, addr=addr)
        log.info("session opened", hostname=request.description.hostname)
        yield dispatcher_pb2.SessionMessage(
            session_id=session.id,
            node=node,
            heartbeat_period=duration(period),
            managers=self.peers(),
        )
        # The complete assignment set, and the log subscriptions there are. Each is
        # built and changes are collected from then on in one step, with no await in
        # between, so that no change falls between the two (and none is sent twice).
        session.pending.clear()
        session.subscriptions.clear()
        session.streaming = True
        message = dispatcher_pb2.SessionMessage()
        message.assignments.type = dispatcher_pb2.AssignmentsMessage.TYPE_COMPLETE
        changes = message.assignments.changes
        for t in self.cache.tasks_by_node.get(session.node_id, {}).values():
            if t.status.state >= states.ASSIGNED:
                changes.add(action=Change.ACTION_UPDATE, task=t)
        for sub in self.cache.objects[Kind.LOGSUB].values():
            message.subscriptions.add(subscription=sub)
        if self.network_views.version:
            message.networks.CopyFrom(self.network_views.view)
            message.networks.SetInParent()  # an empty view is news too
            session.view_version = self.network_views.version
        yield message
        while not session.closed:
            await session.wake.wait()
            if session.closed:
                break  # no turn taken for a session that is over
            # Our turn (at once under the dispatcher's rate); changes that come while
            # we wait for it go in the same message.
            delay = self.pacer.delay()
            if delay:
                await asyncio.sleep(delay)
            session.wake.clear()
            sent = False
            while not session.closed:
                news = self._next_message(session)
                if news is None:
                    break
                sent = True
                yield news
            if sent:
                # The first change after a quiet spell goes at its turn; those that follow
                # on its heels are gathered for ASSIGNMENT_BATCHING (SwarmKit's batching
                # wait): a node given its tasks a few at a time, as a large cluster's
                # passes do, gets a message every so often rather than one per pass.
                await asyncio.sleep(ASSIGNMENT_BATCHING)
        log.info("session closed")

    def _next_message(self, session: AgentSession) -> dispatcher_pb2.SessionMessage | None:
        """What the session stream has to say next (None: nothing): the managers if
        they changed, log subscriptions, up to _MAX_CHANGES_PER_MESSAGE assignment
        changes."""
        views = self.network_views
        new_view = session.view_version != views.version
        if not (session.peers_changed or session.subscriptions or session.pending or new_view):
            return None
        message = dispatcher_pb2.SessionMessage()
        if new_view:
            message.networks.CopyFrom(views.view)
            message.networks.SetInParent()  # an empty view is news too
            session.view_version = views.version
        if session.peers_changed:
            session.peers_changed = False
            message.managers.extend(self.peers())
        for sub, ended in session.subscriptions:
            message.subscriptions.add(subscription=sub, close=ended)
        session.subscriptions.clear()
        if session.pending:
            message.assignments.type = dispatcher_pb2.AssignmentsMessage.TYPE_INCREMENTAL
            changes = message.assignments.changes
            serialized = self.cache.tasks.serialized
            for task_id in list(itertools.islice(session.pending, _MAX_CHANGES_PER_MESSAGE)):
                action = session.pending.pop(task_id)
                change = changes.add()
                if action == Change.ACTION_UPDATE:
                    try:
                        change.task.MergeFromString(serialized(task_id))
                    except KeyError:
                        action = Change.ACTION_REMOVE  # deleted since: gone for the node too
                change.action = action
                change.task.id = task_id
        return message

    def _caller(self, context: Context) -> str:
        """The node id of the caller's certificate (checked against this cluster)."""
        cluster = self.cache.cluster()
        assert cluster is not None
        ident = authz.require(context, cluster.id, (pki.ROLE_WORKER, pki.ROLE_MANAGER))
        return ident.node_id

    async def _register(
        self, node_id: str, description: objects_pb2.NodeDescription, addr: str
    ) -> objects_pb2.Node:
        def refresh(node: objects_pb2.Node) -> objects_pb2.Node:
            node.description.CopyFrom(description)
            node.status.state = types_pb2.NODE_STATE_READY
            # An engine error stays until the agent's heartbeats say otherwise.
            node.status.message = node.status.engine_error
            node.status.addr = addr
            stamp_now(node.status.timestamp)
            return node

        # Nodes are created when they join (the CA issues their certificate); a node that
        # is gone was removed, and its old certificate no longer lets it in.
        if node_id not in self.cache.nodes:
            raise PermissionDeniedError(
                f"node {node_id} was removed from the cluster: remove the agent's state dir "
                "and join again with a join token"
            )
        try:
            # Batched: when thousands of agents open sessions at once (a manager
            # restart, a failover) they cost a few transactions, not one each.
            updated = await self.registrations.submit(Update(Kind.NODE, node_id, refresh))
        except NotFoundError:
            raise PermissionDeniedError(f"node {node_id} was removed from the cluster") from None
        assert updated is not None  # refresh never declines
        return updated  # type: ignore[no-any-return]

    async def _adopt(self, node_id: str, running_ids: Iterable[str]) -> None:
        """Bring back the node's running tasks that were shut down because it went down,
        where their replacements do not run yet (see adoption.py)."""
        cache = self.cache
        plan = adoption.plan_adoption(
            node_id,
            running_ids,
            cache.tasks.get,
            lambda service_id: cache.tasks_by_service.get(service_id, {}).values(),
            cache.services.get,
        )
        if not plan:
            return
        try:
            result = await self.store.commit(adoption.operations(plan, node_id))
            await cache.wait_for(result.revision)
        except StoreError as exc:
            _log.warning("could not adopt the node's running tasks", node_id=node_id,
                         error=str(exc))  # fmt: skip
            return
        revived = [t.id for t in result.written if t.id in plan.revive]
        retired = [t.id for t in result.written if t.id not in plan.revive]
        if revived:
            _log.info(
                "node came back running tasks replaced while it was down: kept them",
                node_id=node_id,
                tasks=revived,
                retired=retired,
            )

    def _close(self, session: AgentSession, *, expired: bool = False) -> None:
        session.closed = True
        session.wake.set()
        if expired and self.session_keys is not None:
            self.session_keys.closed(session.node_id, session.id)
        if self.sessions.get(session.node_id) is session:
            del self.sessions[session.node_id]
            SESSIONS.set(len(self.sessions))
        self._by_session_id.pop(session.id, None)

    async def _session(self, session_id: str, context: Context) -> AgentSession:
        session = self._by_session_id.get(session_id)
        if session is not None:
            try:
                caller = self._caller(context)
            except (PermissionDeniedError, UnauthenticatedError) as exc:
                await abort_with(context, exc)
            if caller != session.node_id:
                session = None  # another node's session id: as good as unknown
        if session is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"unknown or expired session {session_id!r}: open a new session",
            )
        assert session is not None
        return session

    # ---- heartbeats -------------------------------------------------------------------

    async def Heartbeat(
        self, request: dispatcher_pb2.HeartbeatRequest, context: Context
    ) -> dispatcher_pb2.HeartbeatResponse:
        session = await self._session(request.session_id, context)
        return self._beat(session, request)

    async def Heartbeats(
        self, request_iterator: AsyncIterator[dispatcher_pb2.HeartbeatRequest], context: Context
    ) -> AsyncIterator[dispatcher_pb2.HeartbeatResponse]:
        # The session (and the caller's certificate) is checked on the first message;
        # the rest come on the same authenticated stream.
        session: AgentSession | None = None
        async for request in request_iterator:
            if session is None:
                session = await self._session(request.session_id, context)
            elif request.session_id != session.id:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"heartbeat for session {request.session_id!r} on the stream of "
                    f"session {session.id!r}: open a Heartbeats stream per session",
                )
            if session.closed:
                await context.abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"session {session.id!r} has ended: open a new session",
                )
            yield self._beat(session, request)

    def _beat(
        self, session: AgentSession, request: dispatcher_pb2.HeartbeatRequest
    ) -> dispatcher_pb2.HeartbeatResponse:
        session.last_heartbeat = self.clock()
        self.heartbeats += 1
        HEARTBEATS.inc()
        engine_error = request.engine_error
        if engine_error != session.engine_error:
            self._engine_changed(session, engine_error)
        node = self.cache.nodes.get(session.node_id)
        down = node is not None and node.status.state == types_pb2.NODE_STATE_DOWN
        if down and not session.reviving:
            # Declared down although it heartbeats here (a declaration that raced with
            # its new session): say it is ready again rather than leave it down for good.
            session.reviving = True
            task = asyncio.create_task(self._revive(session))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        # The agent waits out the period it was told last before it learns a new one:
        # until its next heartbeat the session is judged by the longer of the two.
        period = self.period()
        session.period = max(period, session.told)
        session.told = period
        return _answer(period)

    async def expire_sessions(self) -> None:
        """Declare down the nodes whose agents stopped heartbeating."""
        tick = self.period() / 4
        expected = self.clock() + tick
        while True:
            await asyncio.sleep(tick)
            now = self.clock()
            stall = now - expected
            # A quarter of the period the cluster's size gives: thousands of sessions
            # are not looked over four times a second when they heartbeat every 10 s.
            tick = self.period() / 4
            expected = now + tick
            if stall > tick:
                # Heartbeats may be waiting behind the stall: do not count it against nodes.
                for s in self.sessions.values():
                    s.last_heartbeat += stall
                    if s.leaving_until is not None:
                        s.leaving_until += stall
                _log.warning("event loop stalled; extending heartbeat grace", stall=round(stall, 2))
                continue
            expired = [s for s in self.sessions.values() if _expired(s, now)]
            for s in expired:
                self._close(s, expired=True)
            lost = [s for s in expired if s.leaving_until is None]
            if lost:
                await self._mark_down(lost, "heartbeat failure")
            gone = [s for s in expired if s.leaving_until is not None]
            if gone:
                await self._mark_down(
                    gone, "agent stopped and did not come back within the restart grace"
                )

    # ---- goodbye ----------------------------------------------------------------------

    async def Goodbye(
        self, request: dispatcher_pb2.GoodbyeRequest, context: Context
    ) -> dispatcher_pb2.GoodbyeResponse:
        """The agent stops cleanly: keep its session (and session key) for the restart
        grace, so that its node stays ready and its tasks stay where they are while it
        restarts. Its new session replaces this one; if none comes, the node is
        declared down when the grace ends."""
        session = await self._session(request.session_id, context)
        grace = self.restart_grace
        session.leaving_until = self.clock() + grace
        reason = " ".join(request.reason.split())[:200] or "agent stopping"
        _log.info(
            "agent said goodbye; keeping its node ready for the restart grace",
            node_id=session.node_id,
            session_id=session.id,
            reason=reason,
            grace=grace,
        )
        # Say so on the node (no new timestamp: that is the registration's, which
        # `_mark_down` compares).
        registered = session.registered

        def leaving(node: objects_pb2.Node) -> objects_pb2.Node | None:
            if (
                node.status.state != types_pb2.NODE_STATE_READY
                or timestamp_seconds(node.status.timestamp) > registered
            ):
                return None  # down already, or registered again since
            node.status.message = f"agent restarting ({reason}): down if not back within {grace:g}s"
            return node

        try:
            # Not batched with registrations: the agent's next registration of the node
            # may come soon after, and must not share a transaction with this.
            await self.store.commit([Update(Kind.NODE, session.node_id, leaving)])
        except StoreError as exc:
            _log.warning("could not note the goodbye on the node", node_id=session.node_id,
                         error=str(exc))  # fmt: skip
        return dispatcher_pb2.GoodbyeResponse(grace=duration(grace))

    async def _mark_down(self, expired: list[AgentSession], message: str) -> None:
        registered = {s.node_id: s.registered for s in expired}

        def down(node: objects_pb2.Node) -> objects_pb2.Node | None:
            if node.id in self.sessions or node.status.state == types_pb2.NODE_STATE_DOWN:
                return None  # it came back in the meantime
            if (
                node.status.state == types_pb2.NODE_STATE_READY
                and timestamp_seconds(node.status.timestamp) > registered[node.id]
            ):
                # Registered again since its session here went quiet: its agent opened a
                # session with another manager (a new agent after a restart, or a move
                # to another manager). Declaring it down would undo that.
                return None
            node.status.state = types_pb2.NODE_STATE_DOWN
            node.status.message = message
            stamp_now(node.status.timestamp)
            return node

        try:
            result = await self.store.commit([Update(Kind.NODE, s.node_id, down) for s in expired])
        except StoreError as exc:
            _log.warning("could not mark nodes down", nodes=list(registered), error=str(exc))
            return
        for node in result.written:
            NODES_DOWN.inc()
            _log.warning("node down", node_id=node.id, reason=message)

    # ---- engine health ----------------------------------------------------------------

    def _engine_changed(self, session: AgentSession, engine_error: str) -> None:
        """The agent says its engine stopped (or started again) answering: record it on
        the node (one write per change), where the scheduler's engine filter reads it."""
        error = " ".join(engine_error.split())[:MAX_ENGINE_ERROR]
        if error == session.engine_error:
            return
        session.engine_error = error
        _log.warning(
            "node's engine does not answer" if error else "node's engine answers again",
            node_id=session.node_id,
            error=error or None,
        )
        if not session.engine_writing:
            session.engine_writing = True
            task = asyncio.create_task(self._record_engine(session))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _record_engine(self, session: AgentSession) -> None:
        try:
            while not session.closed:
                error = session.engine_error

                def record(node: objects_pb2.Node, error: str = error) -> objects_pb2.Node | None:
                    if node.status.engine_error == error:
                        return None
                    previous = node.status.engine_error
                    node.status.engine_error = error
                    if error:
                        node.status.message = error
                    elif previous and node.status.message == previous:
                        node.status.message = ""
                    return node

                try:
                    await self.store.commit([Update(Kind.NODE, session.node_id, record)])
                except StoreError as exc:
                    _log.warning(
                        "could not record the node's engine health; retrying",
                        node_id=session.node_id,
                        error=str(exc),
                    )
                    await asyncio.sleep(1.0)
                    continue
                if session.engine_error == error:
                    return
        finally:
            session.engine_writing = False

    async def _revive(self, session: AgentSession) -> None:
        def ready(node: objects_pb2.Node) -> objects_pb2.Node | None:
            if session.closed or node.status.state != types_pb2.NODE_STATE_DOWN:
                return None
            node.status.state = types_pb2.NODE_STATE_READY
            node.status.message = ""
            stamp_now(node.status.timestamp)
            return node

        try:
            result = await self.store.commit([Update(Kind.NODE, session.node_id, ready)])
        except StoreError as exc:
            _log.warning("could not mark a node ready", node_id=session.node_id, error=str(exc))
        else:
            for node in result.written:
                session.registered = timestamp_seconds(node.status.timestamp)
                _log.warning("node ready again: it heartbeats here", node_id=node.id)
        finally:
            session.reviving = False

    # ---- assignments and log subscriptions -------------------------------------------
    # Both go to the agent on its session stream (see Session).

    def _views_changed(self) -> None:
        for session in self.sessions.values():
            if session.streaming:
                session.wake.set()

    def _on_event(self, ev: Event) -> None:
        self.network_views.note(ev)
        if ev.kind is Kind.LOGSUB:
            # Every agent hears of every subscription; each picks its own tasks.
            for session in self.sessions.values():
                session.subscriptions.append((ev.obj, ev.new is None))
                session.wake.set()
            return
        if ev.kind is Kind.MANAGER:
            for session in self.sessions.values():
                session.peers_changed = True
                session.wake.set()
            return
        if ev.kind is not Kind.TASK:
            return
        old: objects_pb2.Task | None = ev.old
        new: objects_pb2.Task | None = ev.new
        if (
            old is not None
            and old.node_id
            and old.status.state >= states.ASSIGNED
            and (new is None or new.node_id != old.node_id)
        ):
            self._push(old.node_id, Change.ACTION_REMOVE, ev.id)
        if (
            new is not None
            and new.node_id
            and new.status.state >= states.ASSIGNED
            and (
                old is None
                or old.node_id != new.node_id
                or old.status.state < states.ASSIGNED
                or old.desired_state != new.desired_state
                or old.spec_version != new.spec_version
            )
        ):
            self._push(new.node_id, Change.ACTION_UPDATE, ev.id)

    def _push(self, node_id: str, action: Change.Action.ValueType, task_id: str) -> None:
        session = self.sessions.get(node_id)
        if session is None or not session.streaming:
            return
        session.pending[task_id] = action
        session.wake.set()

    # ---- task status ------------------------------------------------------------------

    async def UpdateTaskStatus(
        self, request: dispatcher_pb2.UpdateTaskStatusRequest, context: Context
    ) -> dispatcher_pb2.UpdateTaskStatusResponse:
        session = await self._session(request.session_id, context)
        for update in request.updates:
            problem = status_problem(update.status)
            if problem:
                # Nothing of the request is taken: an agent never sends such a report.
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"status report for task {update.task_id!r}: {problem}",
                )
        # A node may only report on its own tasks (the index says which, with no task
        # decoded).
        own: Mapping[str, object] = self.cache.tasks_by_node.get(session.node_id, {})
        for update in request.updates:
            if update.task_id in own:
                self.status_writer.add(update.task_id, trimmed(update.status))
        return dispatcher_pb2.UpdateTaskStatusResponse()

    # ---- shutdown ---------------------------------------------------------------------

    def close_node(self, node_id: str) -> None:
        """End the session of `node_id` (a removed node)."""
        session = self.sessions.get(node_id)
        if session is not None:
            self._close(session, expired=True)

    def close_all(self) -> None:
        for s in list(self.sessions.values()):
            self._close(s)


def _expired(session: AgentSession, now: float) -> bool:
    """The session missed MISSED_HEARTBEATS periods, and its agent did not say goodbye
    or its restart grace is over."""
    if now - session.last_heartbeat <= MISSED_HEARTBEATS * session.period:
        return False
    return session.leaving_until is None or now > session.leaving_until


def _peer_host(peer: str) -> str:
    """The host part of a gRPC peer string ("ipv4:10.0.0.2:51234", "ipv6:[::1]:5", "unix:")."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]")
    return rest or kind
