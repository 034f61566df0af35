"""How the client connects, retries and buffers: every setting with its default."""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import Codec


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Settings beyond the URL. Each field's doc ends with its default."""

    #: The envelope encoding, asked for by subprotocol. Default MessagePack.
    codec: Codec = Codec.MSGPACK
    #: The first reconnect waits a random time up to this many seconds;
    #: each failed attempt doubles the bound. Default 0.5.
    backoff_base: float = 0.5
    #: The largest bound a reconnect wait is drawn from, in seconds. Default 20.
    backoff_max: float = 20.0
    #: Failed connection attempts in a row before the client gives up;
    #: 0 never reconnects. Default None: keep trying.
    max_reconnect_attempts: int | None = None
    #: Publications kept while disconnected (and unacknowledged ones to send
    #: again); past it, publishing raises `QueueFull` at once. Default 1024.
    max_queued_publishes: int = 1024
    #: Events buffered for `events()` before the client stops reading its
    #: socket, which leaves a client that falls behind to the server's
    #: slow-consumer policy rather than to unbounded memory. Default 4096.
    event_buffer: int = 4096
    #: Whether events are buffered for `events()` and `messages()` at all.
    #: Turn it off when only `on()` callbacks consume them, or the buffer
    #: fills and the client stops reading. Default True.
    buffer_events: bool = True
    #: Seconds for TCP connect plus the WebSocket upgrade. Default 10.
    connect_timeout: float = 10.0
    #: Seconds a `publish()` waits for its ack, across reconnects, unless
    #: the call gives its own; None waits for ever. Default 10.
    publish_timeout: float | None = 10.0
    #: Seconds a subscribe, history, presence or refresh waits for its
    #: reply unless the call gives its own; None waits for ever. Default 10.
    request_timeout: float | None = 10.0
    #: Seconds between the client's own pings; with `ping_timeout`, this is
    #: how a silent server (a dead peer behind a NAT) is noticed. None sends
    #: none. Default 20.
    ping_interval: float | None = 20.0
    #: Seconds to wait for the pong before the connection is taken for
    #: lost and replaced. Default 20.
    ping_timeout: float | None = 20.0
    #: Largest server message accepted, in bytes; a history page can hold
    #: many publications. Default 64 MiB.
    max_message_size: int = 64 << 20
    #: A token is refreshed this many seconds before its `exp`, or halfway
    #: through what is left of its life if that is later (only with
    #: `get_token`). Default 30.
    refresh_margin: float = 30.0
