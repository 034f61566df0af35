"""What the client hands the application: the events of `events()` and
`on()`, in the order they happened, and the answers to subscribe and
publish."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RoomcastError
from .protocol import ClientInfo, StreamPosition


@dataclass(frozen=True, slots=True)
class SubscribeInfo:
    """The answer to a subscribe: the room's position."""

    #: The room's epoch: keep it with the offsets you store, to resume later.
    epoch: str
    #: The room's current offset: the next live message has offset + 1.
    offset: int
    #: With `recover`: whether every publication after that position follows.
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class PublishAck:
    """The answer to an acknowledged publish."""

    #: The offset the room gave the publication.
    offset: int
    #: The room already had this idempotency key: this was a retry, and
    #: nothing was published again.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """A publication to a subscribed room. Per room, offsets only grow:
    the client never hands over the same offset twice in an epoch."""

    room: str
    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Join:
    """Someone entered a room subscribed with `join_leave=True` (your own
    join comes too, after your subscribe ack)."""

    room: str
    info: ClientInfo


@dataclass(frozen=True, slots=True)
class Leave:
    """Someone left a room subscribed with `join_leave=True`."""

    room: str
    info: ClientInfo


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A room's subscription is live: after `subscribe()` (`resubscribed`
    false) or again after a reconnect (`resubscribed` true). Messages after
    `position.offset` follow.

    `recovered` false on a resubscribe means publications were missed (the
    room's history did not reach back to the last message delivered, or its
    epoch changed): reload what you know of the room, e.g. with `history()`."""

    room: str
    position: StreamPosition
    recovered: bool
    resubscribed: bool


@dataclass(frozen=True, slots=True)
class SubscriptionLost:
    """The server refused to subscribe a room again after a reconnect; the
    client no longer follows it."""

    room: str
    error: RoomcastError


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is open; `attempts` is how many tries it took.
    `Subscribed` follows for each room, then queued publishes go out."""

    attempts: int
    reconnected: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection ended. `code` is the server's close code (None when
    the socket failed without one). `reconnecting` false means the client
    stops here for good, and the event stream ends."""

    code: int | None
    reason: str
    reconnecting: bool


Event = Message | Join | Leave | Subscribed | SubscriptionLost | Connected | Disconnected
