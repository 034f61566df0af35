"""Every error the client raises, under one base class, so a caller can
catch `RoomcastError` or the one fault it can act on. Each class names the
fault, and its message says what to do about it."""

from __future__ import annotations


class RoomcastError(Exception):
    """Base class of every error this package raises."""


class InvalidRoom(RoomcastError, ValueError):
    """A room name the server would refuse (error 102), caught before sending."""

    def __init__(self, room: str, why: str) -> None:
        super().__init__(f"invalid room {room!r}: {why}")
        self.room = room


class KeyTooLong(RoomcastError, ValueError):
    """An idempotency key over the protocol's 128 bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"idempotency key is {size} bytes, the limit is 128")
        self.size = size


class ConnectError(RoomcastError):
    """The first connection could not be opened: TCP, TLS, or a timeout."""


class HandshakeError(RoomcastError):
    """The server refused the WebSocket upgrade, or did not echo the
    subprotocol asked for (it speaks another encoding)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status of the refusal, when there was one.
        self.status = status


class Unauthorized(HandshakeError):
    """The server refused the token (HTTP 401), or the token source gave up.

    Raise it from a `get_token` callback to make the client stop for good
    (for example when the user has logged out)."""

    def __init__(self, message: str = "unauthorized", status: int | None = 401) -> None:
        super().__init__(message, status)


class TokenUnavailable(RoomcastError):
    """`get_token` raised something other than `Unauthorized` (its service
    is down, say): the client tries again, on the next reconnect attempt or
    a second later for a refresh."""


class ServerError(RoomcastError):
    """The server answered the request with an error reply; `code` is one
    of PROTOCOL.md's error codes (e.g. 106 not enabled, 107 permission denied)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"server error {code}: {message}")
        self.code = code
        self.message = message


class UnexpectedReply(RoomcastError):
    """The server answered with a reply of the wrong kind for the request."""


class MalformedEnvelope(RoomcastError):
    """The server sent bytes that are not an envelope of the encoding in use."""


class QueueFull(RoomcastError):
    """The publish could not be queued: `max_queued_publishes` publications
    already wait for the next connection (or for the socket to drain)."""

    def __init__(self) -> None:
        super().__init__("the publish queue is full: wait for the connection, or raise max_queued_publishes")


class NotConnected(RoomcastError):
    """The request needs a live connection (history, presence, refresh)
    and there was none, or it dropped before the reply. Ask again once
    reconnected: the answer would describe a moment you did not ask about."""

    def __init__(self) -> None:
        super().__init__("not connected")


class PublishTimeout(RoomcastError, TimeoutError):
    """No ack came within the publish's timeout. The client forgets the
    publication (it is not retried any more).

    `sent` says whether it reached a connection: if not, it was never
    published; if so, it may have been. Publishing again with the same
    `idempotency_key` is safe either way: a publication the room already
    has is acknowledged with `duplicate=True` and not delivered twice."""

    def __init__(self, room: str, timeout: float, sent: bool, idempotency_key: str | None) -> None:
        maybe = "it may have been published" if sent else "it was never sent"
        super().__init__(f"publish to {room!r}: no ack within {timeout} s; {maybe}")
        self.room = room
        self.sent = sent
        self.idempotency_key = idempotency_key


class RequestTimeout(RoomcastError, TimeoutError):
    """No reply to a read (history, presence) or a subscribe within its timeout."""


class Unsubscribed(RoomcastError):
    """The room was unsubscribed before its subscription was confirmed."""

    def __init__(self, room: str) -> None:
        super().__init__(f"unsubscribed from {room!r} before the subscription was confirmed")
        self.room = room


class Closed(RoomcastError):
    """The client is closed for good: `close()` was called, the server
    closed with a code that allows no reconnect, the token was refused, or
    every reconnect attempt failed. Carries the server's last close code
    and reason, when it sent one."""

    def __init__(self, close_code: int | None = None, close_reason: str = "") -> None:
        by = f" by the server with {close_code} {close_reason!r}" if close_code is not None else ""
        super().__init__(f"client closed{by}")
        self.close_code = close_code
        self.close_reason = close_reason
