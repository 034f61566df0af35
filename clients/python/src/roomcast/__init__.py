"""roomcast: an asyncio client for the roomcast WebSocket broker.

    import roomcast

    async with await roomcast.connect("ws://127.0.0.1:8080/ws") as client:
        await client.subscribe("chat.lobby", join_leave=True)
        ack = await client.publish("chat.lobby", b"hello")
        async for event in client.events():
            match event:
                case roomcast.Message(room, offset, data): ...
                case roomcast.Subscribed(recovered=False, resubscribed=True): ...  # reload

# Layout

One module per concern, in the order a call travels:

- `client.py`: the `Client` and its runner task: rooms, requests, reconnects;
- `rooms.py`: what the client knows of a room (which offsets are new);
- `requests.py`: requests between a call and their reply;
- `events.py`, `stream.py`: what the application receives, and the bounded
  buffer it comes through;
- `token.py`: where tokens come from and when to refresh them;
- `backoff.py`: the wait between reconnect attempts;
- `connection.py`: one WebSocket (handshake, writer task, reads);
- `codec.py`, `protocol.py`: the envelopes of docs/PROTOCOL.md, in
  MessagePack and Protocol Buffers;
- `options.py`, `errors.py`: settings with their defaults, and every error.

# Life of a publish

`publish()` checks the room, gives the publication an idempotency key and
queues its frame on the connection (or, while disconnected, in the offline
queue) → the writer task sends it → the server's ack comes back through
`Connection.receive` → the runner matches it by id and resolves the
caller's future with the offset. If the connection drops first, the
publication goes back to the front of the queue and is sent again, under
the same key, once every room is subscribed again.
"""

from .client import Client, ClientState, connect
from .errors import (
    Closed,
    ConnectError,
    HandshakeError,
    InvalidRoom,
    KeyTooLong,
    MalformedEnvelope,
    NotConnected,
    PublishTimeout,
    QueueFull,
    RequestTimeout,
    RoomcastError,
    ServerError,
    TokenUnavailable,
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
from .protocol import ClientInfo, Codec, HistoryPage, PresenceCounts, Publication, StreamPosition
from .rooms import SubscriptionState
from .token import TokenSource

__all__ = [
    "Client",
    "ClientInfo",
    "ClientOptions",
    "ClientState",
    "Closed",
    "Codec",
    "ConnectError",
    "Connected",
    "Disconnected",
    "Event",
    "HandshakeError",
    "HistoryPage",
    "InvalidRoom",
    "Join",
    "KeyTooLong",
    "Leave",
    "MalformedEnvelope",
    "NotConnected",
    "Message",
    "PresenceCounts",
    "Publication",
    "PublishAck",
    "PublishTimeout",
    "QueueFull",
    "RequestTimeout",
    "RoomcastError",
    "ServerError",
    "StreamPosition",
    "SubscribeInfo",
    "Subscribed",
    "SubscriptionLost",
    "SubscriptionState",
    "TokenSource",
    "TokenUnavailable",
    "Unauthorized",
    "UnexpectedReply",
    "Unsubscribed",
    "connect",
]
