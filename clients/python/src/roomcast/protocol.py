"""The protocol's vocabulary, as docs/PROTOCOL.md defines it: what a client
sends (one operation per request), what the server sends back (replies,
messages, join and leave events), and the values both carry.

No I/O and no encoding here: `codec.py` turns these into bytes and back, so
the same types serve both encodings and the client's logic never sees a
wire format.
"""

from __future__ import annotations

import enum
import unicodedata
from dataclasses import dataclass, field

from .errors import InvalidRoom, KeyTooLong

#: Longest room name the server accepts, in UTF-8 bytes.
MAX_ROOM_BYTES = 255
#: Longest idempotency key the server accepts, in UTF-8 bytes (error 101 past it).
MAX_IDEMPOTENCY_KEY_BYTES = 128

# Characters the server keeps free for subscription patterns.
_PATTERN_CHARACTERS = frozenset("*?>")


class Codec(enum.Enum):
    """The envelope encoding, chosen per connection by the subprotocol."""

    MSGPACK = "roomcast.v1.msgpack"
    PROTO = "roomcast.v1.proto"

    @property
    def subprotocol(self) -> str:
        """The `Sec-WebSocket-Protocol` entry that asks for this encoding."""
        return self.value


def check_room(room: str) -> str:
    """Returns `room` if the server would accept it, else raises
    `InvalidRoom`: the same rules as the server's (error 102), checked here
    so that a typo fails at the call, not as a reply after a round trip."""
    size = len(room.encode("utf-8"))
    if size == 0:
        raise InvalidRoom(room, "room name is empty")
    if size > MAX_ROOM_BYTES:
        raise InvalidRoom(room, f"room name is {size} bytes, the limit is {MAX_ROOM_BYTES}")
    for character in room:
        if character.isspace() or unicodedata.category(character) == "Cc":
            raise InvalidRoom(room, f"room name contains whitespace or a control character ({character!r})")
        if character in _PATTERN_CHARACTERS:
            raise InvalidRoom(room, f"room name contains {character!r}, kept for patterns")
    return room


def check_key(key: str) -> str:
    """Returns `key` if the server would accept it as an idempotency key."""
    size = len(key.encode("utf-8"))
    if size > MAX_IDEMPOTENCY_KEY_BYTES:
        raise KeyTooLong(size)
    return key


# Values carried by both directions.


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """A place in a room's order: keep the epoch of the last subscribe ack
    with the offset of the last message processed, to resume from there."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """One connection in a room's presence."""

    #: Unique to the connection across nodes and restarts; opaque.
    client: str
    #: The `sub` of the connection's token; empty for anonymous connections
    #: and on a node that checks no tokens.
    user: str
    #: When it subscribed, in milliseconds since the Unix epoch (server clock).
    joined_at_ms: int


@dataclass(frozen=True, slots=True)
class Publication:
    """One publication kept in a room's history."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of a room's history, with the room's position when it was read."""

    epoch: str
    offset: int
    publications: tuple[Publication, ...] = ()


@dataclass(frozen=True, slots=True)
class PresenceCounts:
    """How many connections are in a room, and how many distinct non-empty users."""

    clients: int
    users: int


# Client to server: one operation per request.


@dataclass(frozen=True, slots=True)
class Subscribe:
    room: str
    recover: StreamPosition | None = None
    join_leave: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    room: str


@dataclass(frozen=True, slots=True)
class Publish:
    room: str
    data: bytes
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class History:
    room: str
    since: int = 0
    limit: int = 0
    reverse: bool = False


@dataclass(frozen=True, slots=True)
class Presence:
    room: str


@dataclass(frozen=True, slots=True)
class PresenceStats:
    room: str


@dataclass(frozen=True, slots=True)
class Refresh:
    token: str = field(repr=False)


Operation = Subscribe | Unsubscribe | Publish | History | Presence | PresenceStats | Refresh


@dataclass(frozen=True, slots=True)
class Request:
    """One client envelope. Id 0 asks for no success reply."""

    id: int
    op: Operation


# Server to client.


@dataclass(frozen=True, slots=True)
class Ack:
    """Success: a subscribe's position, a publish's offset, or offset 0."""

    offset: int = 0
    epoch: str = ""
    recovered: bool = False
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error reply: the request failed, the connection stays open."""

    code: int
    message: str


Outcome = Ack | ErrorReply | HistoryPage | tuple[ClientInfo, ...] | PresenceCounts


@dataclass(frozen=True, slots=True)
class Reply:
    id: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Delivery:
    """A publication delivered live (or replayed by a resume)."""

    room: str
    offset: int
    data: bytes


class Change(enum.Enum):
    JOIN = "join"
    LEAVE = "leave"


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """A join or leave event, for subscribers that asked for them."""

    change: Change
    room: str
    info: ClientInfo


ServerEnvelope = Reply | Delivery | PresenceChange
