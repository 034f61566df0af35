"""The `Client`: one connection at a time, and everything that must survive
the connection dropping.

One background task (the runner) reads the current connection and, when it
ends, reconnects with backoff. Every other change of state happens in
synchronous methods, between awaits, so there is nothing to lock: a call
changes the rooms and requests and queues its frame in one step, and the
runner only ever sees a consistent whole.

What survives a reconnect:

- **Subscriptions.** Every room is subscribed again with `recover` set to
  the epoch of its subscribe ack and the offset of the last message handed
  to the application; `Subscribed(resubscribed=True)` says whether every
  missed publication follows (`recovered`) or the application must reload.
  A message whose offset is not above the last one handed over for its
  room is dropped, so a replay never shows up twice.
- **Acknowledged publishes.** `publish()` attaches an idempotency key
  (`{random prefix}-{counter}`); a publish whose ack was lost with the
  connection is sent again, first, under the same key, and the server
  acknowledges a publication it already has with `duplicate=True` instead of
  delivering it twice.
- **Publishes made while disconnected** wait in a queue of at most
  `max_queued_publishes`, sent in order once every room is live again.
- **Not retried:** fire-and-forget publishes already handed to a connection
  that then drops (at most once, as the protocol promises), and reads
  (history, presence), which fail with `NotConnected`.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from .backoff import backoff_delay
from .connection import Connection, Ending, open_connection
from .errors import (
    Closed,
    NotConnected,
    PublishTimeout,
    QueueFull,
    RequestTimeout,
    RoomcastError,
    ServerError,
    Unauthorized,
    UnexpectedReply,
    Unsubscribed,
)
from .events import (
    Connected,
    Disconnected,
    Event,
    Join,
    Leave,
    Message,
    PublishAck,
    SubscribeInfo,
    Subscribed,
    SubscriptionLost,
)
from .options import ClientOptions
from .protocol import (
    Ack,
    Change,
    ClientInfo,
    Delivery,
    ErrorReply,
    History,
    HistoryPage,
    Operation,
    Outcome,
    Presence,
    PresenceChange,
    PresenceCounts,
    PresenceStats,
    Publish,
    Refresh,
    Reply,
    Request,
    ServerEnvelope,
    StreamPosition,
    Subscribe,
    Unsubscribe,
    check_key,
    check_room,
)
from .requests import (
    InFlight,
    PendingPublish,
    PendingQuery,
    PendingSubscribe,
    PendingUnsubscribe,
    Waiting,
    settle,
)
from .rooms import RoomState, SubscriptionState
from .stream import EventStream
from .token import TokenKeeper, TokenSource

log = logging.getLogger("roomcast")

E = TypeVar("E", bound=Event)
T = TypeVar("T")

#: Frames queued on a connection before `publish()` waits for the socket to
#: take them: a publisher faster than its network slows down instead of
#: filling memory.
OUTGOING_HIGH_WATER = 256

#: Close codes after which reconnecting cannot help: a normal close (the
#: server meant it) or one that blames this client's own frames.
FINAL_CLOSE_CODES = frozenset({1000, 1002, 1003, 1007, 1008, 1009, 1010})
#: The token expired (PROTOCOL.md): reconnecting needs a new one.
CLOSE_TOKEN_EXPIRED = 4001
#: Error code of a subscribe refused while the node shuts down.
ERROR_SHUTTING_DOWN = 105


class ClientState(enum.Enum):
    """Where the client's connection stands."""

    #: Not connected yet: `connect()` has not been called (or it failed).
    DISCONNECTED = "disconnected"
    #: Waiting to reconnect, or reconnecting.
    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: Closed for good; every call raises `Closed`.
    CLOSED = "closed"


async def connect(url: str, **kwargs: Any) -> Client:
    """Opens a client on `url` (`ws://host:port/ws`); the keyword arguments
    are `Client`'s. The first connection is not retried: an address that
    does not answer raises here rather than starting a background loop."""
    client = Client(url, **kwargs)
    await client.connect()
    return client


class Client:
    """A roomcast client that reconnects and resumes by itself.

    Events (messages, joins and leaves, subscriptions, connection changes)
    come from one bounded buffer, through `events()` or `messages()`, and to
    the callbacks given to `on()`, which run as tasks of their own: nothing
    the application does inside them holds up the reading of the socket.
    """

    def __init__(
        self,
        url: str,
        *,
        options: ClientOptions | None = None,
        token: str | None = None,
        get_token: TokenSource | None = None,
    ) -> None:
        self._url = url
        self._options = options or ClientOptions()
        self._tokens = TokenKeeper(token, get_token)
        self._state = ClientState.DISCONNECTED
        self._closing = False
        self._conn: Connection | None = None
        self._runner: asyncio.Task[None] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._close_code: int | None = None
        self._close_reason = ""
        #: The last connection ended on the token (close 4001): the next
        #: attempt asks `get_token` for a new one.
        self._token_refused = False
        self._rooms: dict[str, RoomState] = {}
        self._in_flight: dict[int, InFlight] = {}
        self._waiting: deque[Waiting] = deque()
        #: Publications in `_waiting`, checked against `max_queued_publishes`.
        self._queued_publishes = 0
        #: Resubscribes sent after a reconnect and not yet answered.
        self._resubscribing = 0
        #: Request ids increase for the life of the client, so a reply is
        #: never taken for the answer to a request of another connection.
        self._next_id = 1
        self._next_generation = 0
        self._key_prefix = secrets.token_hex(8)
        self._next_key = 0
        self._events: EventStream[Event] = EventStream(self._options.event_buffer)
        self._listeners: list[tuple[type[Any], Callable[[Any], object]]] = []
        #: Callback tasks, referenced until done (asyncio keeps only weak references).
        self._callback_tasks: set[asyncio.Task[Any]] = set()

    # Connection life

    async def connect(self) -> None:
        """Opens the first connection; raises `ConnectError`,
        `Unauthorized` or `HandshakeError` if it cannot."""
        if self._state is not ClientState.DISCONNECTED:
            raise RuntimeError(f"connect() on a client that is {self._state.value}")
        self._state = ClientState.CONNECTING
        try:
            connection = await open_connection(self._url, self._options, await self._tokens.for_connect(False))
        except BaseException:
            self._state = ClientState.DISCONNECTED
            raise
        self._connected(connection, attempts=1, reconnected=False)
        self._runner = asyncio.create_task(self._run(connection), name="roomcast-runner")

    async def close(self) -> None:
        """Sends a close frame (1000) and stops for good: requests still
        waiting raise `Closed`, and the event stream ends after what it
        holds."""
        if self._state is ClientState.CLOSED:
            return
        self._closing = True
        if self._conn is not None:
            await self._conn.close(1000, "bye")
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass
        self._shut_down()

    async def __aenter__(self) -> Client:
        if self._state is ClientState.DISCONNECTED:
            await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def state(self) -> ClientState:
        return self._state

    @property
    def close_code(self) -> int | None:
        """The close code the server last sent, if it ever closed a connection of this client."""
        return self._close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    def subscription_state(self, room: str) -> SubscriptionState:
        state = self._rooms.get(room)
        return SubscriptionState.UNSUBSCRIBED if state is None else state.state

    def position(self, room: str) -> StreamPosition | None:
        """The room's epoch and the offset of the last message handed over:
        store it to resume from there in a later process (`recover=`)."""
        state = self._rooms.get(room)
        return None if state is None else state.position

    # Events

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the client is closed for good.
        Meant for one consumer: two would split the events between them."""
        while (event := await self._events.get()) is not None:
            yield event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self.events()

    async def messages(self) -> AsyncIterator[Message]:
        """Only the messages of `events()` (use `events()` to learn that
        messages were missed: `Subscribed(recovered=False)`)."""
        async for event in self.events():
            if isinstance(event, Message):
                yield event

    def on(self, kind: type[E], callback: Callable[[E], object]) -> Callable[[], None]:
        """Calls `callback(event)` for every event of type `kind` (e.g.
        `Message`, `Join`, `Subscribed`). Plain functions are called soon
        after the event, from the event loop; coroutine functions run as
        tasks. Neither holds up the socket; an exception is logged. Returns
        a function that removes the callback."""
        entry: tuple[type[Any], Callable[[Any], object]] = (kind, callback)
        self._listeners.append(entry)

        def remove() -> None:
            if entry in self._listeners:
                self._listeners.remove(entry)

        return remove

    def _emit(self, event: Event) -> None:
        if self._options.buffer_events:
            self._events.put(event)
        loop = asyncio.get_running_loop()
        for kind, callback in self._listeners:
            if isinstance(event, kind):
                loop.call_soon(self._call_listener, callback, event)

    def _call_listener(self, callback: Callable[[Any], object], event: Event) -> None:
        try:
            result = callback(event)
        except Exception:
            log.exception("roomcast: %s callback failed", type(event).__name__)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._callback_tasks.add(task)
            task.add_done_callback(self._callback_done)

    def _callback_done(self, task: asyncio.Task[Any]) -> None:
        self._callback_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("roomcast: callback failed", exc_info=task.exception())

    # Rooms

    async def subscribe(
        self,
        room: str,
        *,
        join_leave: bool = False,
        recover: StreamPosition | None = None,
        timeout: float | None = math.inf,
    ) -> SubscribeInfo:
        """Subscribes to `room`; returns its epoch and current offset (the
        next message has offset + 1). `join_leave` asks for `Join` and
        `Leave` events (rooms configured with them only: error 106);
        `recover` starts after a stored position if the room's history
        still holds it. Waits across reconnects until the server answers,
        unless `timeout` (seconds) runs out first: then `RequestTimeout`,
        and the room stays requested until `unsubscribe`. Subscribing again
        to a live room answers its current position and changes nothing."""
        check_room(room)
        self._check_open()
        state = self._rooms.get(room)
        if state is None:
            state = RoomState(room, self._next_generation)
            self._next_generation += 1
            self._rooms[room] = state
        future: asyncio.Future[SubscribeInfo] = asyncio.get_running_loop().create_future()
        state.waiters.append(future)
        if not state.active:
            # What the next subscribe of the room carries, now or after a reconnect.
            state.join_leave = join_leave
            if recover is not None:
                state.position = recover
        # A subscribe already on its way answers this caller too, unless the
        # room is live and this one changes something.
        changes = recover is not None or join_leave != state.join_leave
        if self._conn is not None and (not state.in_flight or (state.active and changes)):
            sent = recover if state.active else state.position
            state.in_flight = True
            self._request(
                PendingSubscribe(room, state.generation, join_leave, sent, resubscribe=False),
                Subscribe(room, sent, join_leave),
            )
        try:
            return await self._wait(future, timeout, f"subscribe to {room!r}")
        finally:
            if future in state.waiters:
                state.waiters.remove(future)

    async def unsubscribe(self, room: str) -> None:
        """Leaves `room`: no message of it is handed over after this call,
        and it is not subscribed again after a reconnect."""
        check_room(room)
        self._check_open()
        state = self._rooms.pop(room, None)
        if state is not None:
            for waiter in state.waiters:
                settle(waiter, Unsubscribed(room))
            if self._conn is None or not (state.active or state.in_flight):
                return  # subscribed on no connection, and never will be again
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = PendingUnsubscribe(room, future)
        if self._conn is not None:
            self._request(pending, Unsubscribe(room))
        else:
            # Only the server can say whether this room is subscribed.
            self._waiting.append(pending)
        await future

    # Publishing

    async def publish(
        self,
        room: str,
        data: bytes | bytearray | memoryview | str,
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> PublishAck:
        """Publishes and waits for the offset the room gave the publication,
        across reconnects, under an idempotency key (the client makes one
        unless given one), so a retry after a lost ack is never published
        twice. Raises `PublishTimeout` after `timeout` seconds (default
        `publish_timeout`), `QueueFull` when disconnected with a full queue,
        `ServerError` when the server refuses it (e.g. 107, 109)."""
        check_room(room)
        key = check_key(idempotency_key) if idempotency_key else self._new_key()
        self._check_open()
        connection = self._conn
        if connection is not None and connection.backlog >= OUTGOING_HIGH_WATER:
            await connection.drained()
            self._check_open()
        future: asyncio.Future[PublishAck] = asyncio.get_running_loop().create_future()
        pending = PendingPublish(room, _as_bytes(data), key, future)
        self._publish(pending)
        limit = self._options.publish_timeout if timeout is None else timeout
        try:
            return await self._wait(future, limit, None)
        except RequestTimeout:
            self._forget(pending)
            raise PublishTimeout(room, limit or 0.0, pending.sent, key) from None
        finally:
            if not future.done():  # cancelled by the caller
                self._forget(pending)

    def publish_nowait(
        self,
        room: str,
        data: bytes | bytearray | memoryview | str,
        *,
        idempotency_key: str | None = None,
    ) -> None:
        """Publishes without asking for a reply (fire-and-forget): handed to
        the connection, or queued while disconnected. It is not sent again if
        the connection drops under it; errors are only logged. Raises
        `QueueFull` when the queue (or the socket) has no room."""
        check_room(room)
        key = check_key(idempotency_key) if idempotency_key else None
        self._check_open()
        if self._conn is not None and self._conn.backlog >= self._options.max_queued_publishes:
            raise QueueFull()
        self._publish(PendingPublish(room, _as_bytes(data), key, None))

    def _new_key(self) -> str:
        self._next_key += 1
        return f"{self._key_prefix}-{self._next_key}"

    def _publish(self, pending: PendingPublish) -> None:
        """Sends now when nothing queued is ahead of it, else queues it."""
        if self._conn is not None and self._resubscribing == 0 and not self._waiting:
            self._send_publication(pending)
            return
        if self._queued_publishes >= self._options.max_queued_publishes:
            raise QueueFull()
        self._queued_publishes += 1
        self._waiting.append(pending)

    def _send_publication(self, pending: PendingPublish) -> None:
        op = Publish(pending.room, pending.data, pending.key)
        pending.sent = True
        if pending.future is None:
            self._send(0, op)
        else:
            pending.id = self._request(pending, op)

    def _forget(self, pending: PendingPublish) -> None:
        """Stops trying a publish its caller gave up on."""
        if pending in self._waiting:
            self._waiting.remove(pending)
            self._queued_publishes -= 1
        elif self._in_flight.get(pending.id) is pending:
            del self._in_flight[pending.id]

    # Reads and the token

    async def history(
        self, room: str, *, since: int = 0, limit: int = 0, reverse: bool = False, timeout: float | None = None
    ) -> HistoryPage:
        """A page of `room`'s history: oldest first after `since`, or newest
        first before it with `reverse`; `limit` 0 is the server's page size.
        Raises `NotConnected` while disconnected, `ServerError` 106 in a room
        that keeps no history."""
        outcome = await self._query(History(check_room(room), since, limit, reverse), timeout)
        if not isinstance(outcome, HistoryPage):
            raise UnexpectedReply(f"history answered with {outcome!r}")
        return outcome

    async def presence(self, room: str, *, timeout: float | None = None) -> list[ClientInfo]:
        """Who is in `room`, earliest joined first."""
        outcome = await self._query(Presence(check_room(room)), timeout)
        if not isinstance(outcome, tuple):
            raise UnexpectedReply(f"presence answered with {outcome!r}")
        return list(outcome)

    async def presence_stats(self, room: str, *, timeout: float | None = None) -> PresenceCounts:
        """How many connections and distinct users are in `room`."""
        outcome = await self._query(PresenceStats(check_room(room)), timeout)
        if not isinstance(outcome, PresenceCounts):
            raise UnexpectedReply(f"presence_stats answered with {outcome!r}")
        return outcome

    async def refresh(self, token: str | None = None, *, timeout: float | None = None) -> None:
        """Hands the connection a new token (from `get_token` when none is
        given) before its token expires; reconnects use it too. With
        `get_token`, the client does this by itself before each `exp`."""
        if token is None:
            token = await self._tokens.fresh()
        outcome = await self._query(Refresh(token), timeout)
        if not isinstance(outcome, Ack):
            raise UnexpectedReply(f"refresh answered with {outcome!r}")
        self._tokens.replace(token)
        self._schedule_refresh()

    async def _query(self, op: Operation, timeout: float | None) -> Outcome:
        self._check_open()
        if self._conn is None:
            raise NotConnected()
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        request_id = self._request(PendingQuery(future), op)
        limit = self._options.request_timeout if timeout is None else timeout
        try:
            outcome = await self._wait(future, limit, type(op).__name__.lower())
        finally:
            self._in_flight.pop(request_id, None)
        if isinstance(outcome, ErrorReply):
            raise ServerError(outcome.code, outcome.message)
        return outcome

    def _schedule_refresh(self) -> None:
        if self._refresher is not None and self._refresher is not asyncio.current_task():
            self._refresher.cancel()
        self._refresher = None
        delay = self._tokens.refresh_delay(self._options.refresh_margin)
        if delay is not None and self._conn is not None:
            self._refresher = asyncio.create_task(self._refresh_later(delay), name="roomcast-refresh")

    async def _refresh_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.refresh()
        except Unauthorized as refused:
            log.warning("roomcast: get_token gave up (%s); closing", refused)
            self._close_reason = str(refused)
            asyncio.create_task(self.close())
        except (NotConnected, Closed):
            pass  # the next connection plans its own refresh
        except (RoomcastError, OSError) as error:
            log.warning("roomcast: token refresh failed (%s); trying again in 1 s", error)
            self._refresher = asyncio.create_task(self._refresh_later(1.0), name="roomcast-refresh")

    # Plumbing shared by the calls

    def _check_open(self) -> None:
        if self._state is ClientState.CLOSED or self._closing:
            raise Closed(self._close_code, self._close_reason)
        if self._state is ClientState.DISCONNECTED:
            raise RuntimeError("call connect() first")

    def _send(self, request_id: int, op: Operation) -> None:
        if self._conn is not None:
            self._conn.send(Request(request_id, op))

    def _request(self, pending: InFlight, op: Operation) -> int:
        """Sends a request that wants its reply; returns its id."""
        request_id = self._next_id
        self._next_id += 1
        self._in_flight[request_id] = pending
        self._send(request_id, op)
        return request_id

    async def _wait(self, future: asyncio.Future[T], timeout: float | None, what: str | None) -> T:
        if timeout is None or math.isinf(timeout):
            return await future
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            raise RequestTimeout(f"{what or 'request'}: no reply within {timeout} s") from None

    # The runner: reading, losing and regaining the connection

    async def _run(self, connection: Connection) -> None:
        current: Connection | None = connection
        while current is not None:
            ending = await self._serve(current)
            current = await self._reconnect() if self._lost(ending) else None

    async def _serve(self, connection: Connection) -> Ending:
        while (envelope := await connection.receive()) is not None:
            self._handle(envelope)
            # An application that stops taking events stops the reading here.
            await self._events.wait_for_room()
        return connection.ending or Ending(None, "connection ended")

    async def _reconnect(self) -> Connection | None:
        failed = 0
        while True:
            await asyncio.sleep(backoff_delay(failed, self._options.backoff_base, self._options.backoff_max))
            try:
                token = await self._tokens.for_connect(self._token_refused)
                connection = await open_connection(self._url, self._options, token)
            except Unauthorized as refused:
                if refused.status is None or not self._tokens.refreshable:
                    # get_token gave up, or a fixed token was refused: it would be again.
                    self._close_reason = str(refused)
                    self._shut_down()
                    return None
                self._token_refused = True
                failed += 1
                log.debug("roomcast: reconnect refused the token (%s)", refused)
            except RoomcastError as error:
                failed += 1
                log.debug("roomcast: reconnect attempt %d failed: %s", failed, error)
            else:
                self._token_refused = False
                self._connected(connection, attempts=failed + 1, reconnected=True)
                return connection
            limit = self._options.max_reconnect_attempts
            if limit is not None and failed >= limit:
                self._shut_down()
                return None

    def _connected(self, connection: Connection, attempts: int, reconnected: bool) -> None:
        self._conn = connection
        self._state = ClientState.CONNECTED
        self._emit(Connected(attempts, reconnected))
        self._schedule_refresh()
        self._resubscribe_all()

    def _allows_reconnect(self, code: int | None) -> bool:
        if code is None:
            return True
        if code == CLOSE_TOKEN_EXPIRED:
            return self._tokens.refreshable
        return code not in FINAL_CLOSE_CODES

    def _lost(self, ending: Ending) -> bool:
        """The connection is gone: settles what was in flight on it; returns
        whether to reconnect (else the client is shut down)."""
        self._conn = None
        if ending.code is not None and not self._closing:
            self._close_code, self._close_reason = ending.code, ending.reason
        self._token_refused = ending.code == CLOSE_TOKEN_EXPIRED
        self._resubscribing = 0
        for state in self._rooms.values():
            state.active = False
            state.in_flight = False
        unacknowledged: list[PendingPublish] = []
        for pending in self._in_flight.values():
            if isinstance(pending, PendingPublish):
                unacknowledged.append(pending)
            elif isinstance(pending, PendingUnsubscribe):
                # The next connection is not subscribed to it either.
                if not pending.future.done():
                    pending.future.set_result(None)
            elif isinstance(pending, PendingQuery):
                settle(pending.future, NotConnected())
            # A subscribe: the room stays, with its waiters, for the next connection.
        self._in_flight.clear()
        # Sent again before anything still waiting, in their original order.
        for pending in sorted(unacknowledged, key=lambda p: p.id, reverse=True):
            self._queued_publishes += 1
            self._waiting.appendleft(pending)
        reconnecting = (
            not self._closing and self._allows_reconnect(ending.code) and self._options.max_reconnect_attempts != 0
        )
        log.debug("roomcast: disconnected (%s %s), reconnecting: %s", ending.code, ending.reason, reconnecting)
        self._emit(Disconnected(ending.code, ending.reason, reconnecting))
        if reconnecting:
            self._state = ClientState.CONNECTING
        else:
            self._shut_down()
        return reconnecting

    def _shut_down(self) -> None:
        """Closed for good: every caller still waiting gets `Closed`."""
        if self._state is ClientState.CLOSED:
            return
        self._state = ClientState.CLOSED
        self._conn = None
        if self._refresher is not None and self._refresher is not asyncio.current_task():
            self._refresher.cancel()
        error = Closed(self._close_code, self._close_reason)
        for state in self._rooms.values():
            for waiter in state.waiters:
                settle(waiter, error)
        self._rooms.clear()
        for pending in list(self._in_flight.values()) + list(self._waiting):
            if not isinstance(pending, PendingSubscribe):
                settle(pending.future, error)
        self._in_flight.clear()
        self._waiting.clear()
        self._queued_publishes = 0
        self._events.end()

    def _resubscribe_all(self) -> None:
        """Subscribes every known room on the new connection, each from its
        position; what waited follows once all are answered."""
        for state in self._rooms.values():
            state.in_flight = True
            self._resubscribing += 1
            self._request(
                PendingSubscribe(state.name, state.generation, state.join_leave, state.position, resubscribe=True),
                Subscribe(state.name, state.position, state.join_leave),
            )
        if self._resubscribing == 0:
            self._flush_waiting()

    def _flush_waiting(self) -> None:
        """Sends what waited for the connection, in order."""
        while self._conn is not None and self._waiting:
            pending = self._waiting.popleft()
            if isinstance(pending, PendingPublish):
                self._queued_publishes -= 1
                self._send_publication(pending)
            else:
                self._request(pending, Unsubscribe(pending.room))

    # What the server sends

    def _handle(self, envelope: ServerEnvelope) -> None:
        if isinstance(envelope, Reply):
            self._reply(envelope)
        elif isinstance(envelope, Delivery):
            state = self._rooms.get(envelope.room)
            if state is not None and state.accept(envelope.offset):
                self._emit(Message(envelope.room, envelope.offset, envelope.data))
        elif isinstance(envelope, PresenceChange):
            if envelope.room in self._rooms:
                event_type = Join if envelope.change is Change.JOIN else Leave
                self._emit(event_type(envelope.room, envelope.info))

    def _reply(self, reply: Reply) -> None:
        pending = self._in_flight.pop(reply.id, None)
        outcome = reply.outcome
        if pending is None:
            if isinstance(outcome, ErrorReply):
                log.warning("roomcast: error %d to a fire-and-forget request: %s", outcome.code, outcome.message)
            return
        if isinstance(pending, PendingSubscribe):
            self._subscribe_reply(pending, outcome)
            if pending.resubscribe:
                self._resubscribing = max(0, self._resubscribing - 1)
                if self._resubscribing == 0:
                    self._flush_waiting()  # held back until every room is live again
        elif isinstance(pending, PendingUnsubscribe):
            if pending.future.done():
                return
            if isinstance(outcome, Ack):
                pending.future.set_result(None)
            else:
                pending.future.set_exception(_refusal("unsubscribe", outcome))
        elif isinstance(pending, PendingPublish):
            if pending.future is None or pending.future.done():
                return
            if isinstance(outcome, Ack):
                pending.future.set_result(PublishAck(outcome.offset, outcome.duplicate))
            else:
                pending.future.set_exception(_refusal("publish", outcome))
        elif not pending.future.done():
            pending.future.set_result(outcome)

    def _subscribe_reply(self, pending: PendingSubscribe, outcome: Outcome) -> None:
        state = self._rooms.get(pending.room)
        if state is None or state.generation != pending.generation:
            return
        state.in_flight = False
        if isinstance(outcome, Ack):
            was_active, was_confirmed = state.active, state.confirmed
            state.acknowledge(pending.recover, was_active, outcome.epoch, outcome.offset, outcome.recovered)
            state.active = state.confirmed = True
            state.join_leave = pending.join_leave
            info = SubscribeInfo(outcome.epoch, outcome.offset, outcome.recovered)
            for waiter in state.waiters:
                if not waiter.done():
                    waiter.set_result(info)
            state.waiters.clear()
            if not was_active:
                position = StreamPosition(outcome.epoch, outcome.offset)
                self._emit(Subscribed(pending.room, position, outcome.recovered, resubscribed=was_confirmed))
            return
        error = _refusal("subscribe", outcome)
        for waiter in state.waiters:
            settle(waiter, error)
        state.waiters.clear()
        # A live subscription stays as it was; a node shutting down (105)
        # closes us soon, and the next connection tries again.
        shutting_down = isinstance(error, ServerError) and error.code == ERROR_SHUTTING_DOWN
        if not (state.active or (state.confirmed and shutting_down)):
            del self._rooms[pending.room]
            if state.confirmed:
                self._emit(SubscriptionLost(pending.room, error))


def _refusal(request: str, outcome: Outcome) -> RoomcastError:
    if isinstance(outcome, ErrorReply):
        return ServerError(outcome.code, outcome.message)
    return UnexpectedReply(f"{request} answered with {outcome!r}")


def _as_bytes(data: bytes | bytearray | memoryview | str) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else bytes(data)
