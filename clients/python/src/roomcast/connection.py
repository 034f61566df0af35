"""One WebSocket connection: the handshake, a writer task, and reading
envelopes until the connection ends, with why it ended.

Sending is synchronous (a frame joins the connection's queue and a writer
task sends it), so the client changes its state and sends in one step, with
no await between them where another task could slip in and reorder
requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from . import codec
from .errors import ConnectError, HandshakeError, MalformedEnvelope, Unauthorized
from .options import ClientOptions
from .protocol import Request, ServerEnvelope

log = logging.getLogger("roomcast")

#: Close code the client sends when the server's bytes do not decode.
CLOSE_INVALID_PAYLOAD = 1007


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a connection ended: the server's close frame, or none (`code` None)."""

    code: int | None
    reason: str


async def open_connection(url: str, options: ClientOptions, token: str | None) -> Connection:
    """Opens a connection that speaks `options.codec`, or raises
    `ConnectError`, `Unauthorized` (HTTP 401) or `HandshakeError`."""
    subprotocol = options.codec.subprotocol
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        ws = await connect(
            url,
            subprotocols=[Subprotocol(subprotocol)],
            additional_headers=headers,
            # The server never negotiates an extension; offering none keeps
            # the handshake as small as the protocol is.
            compression=None,
            open_timeout=options.connect_timeout,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            max_size=options.max_message_size,
        )
    except InvalidStatus as refused:
        status = refused.response.status_code
        body = refused.response.body.decode("utf-8", "replace").strip() if refused.response.body else ""
        message = f"HTTP {status}: {body}" if body else f"HTTP {status}"
        if status == 401:
            raise Unauthorized(message, status) from refused
        raise HandshakeError(message, status) from refused
    except InvalidHandshake as refused:
        raise HandshakeError(f"handshake refused: {refused}") from refused
    except (OSError, TimeoutError) as failed:
        raise ConnectError(f"cannot connect to {url}: {failed or type(failed).__name__}") from failed
    if ws.subprotocol != subprotocol:
        await ws.close()
        raise HandshakeError(f"asked for {subprotocol}, the server answered {ws.subprotocol!r}")
    return Connection(ws, options)


class Connection:
    """An open connection. `receive()` until it returns None, then `ending`
    says why."""

    def __init__(self, ws: ClientConnection, options: ClientOptions) -> None:
        self._ws = ws
        self._codec = options.codec
        self._outgoing: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._ending: Ending | None = None
        self._writer = asyncio.create_task(self._write(), name="roomcast-writer")

    @property
    def backlog(self) -> int:
        """Frames queued and not yet handed to the socket."""
        return len(self._outgoing)

    def send(self, request: Request) -> None:
        """Queues one request; a connection that has ended drops it (the
        client settles what was in flight when it learns of the end)."""
        self._outgoing.append(codec.encode(self._codec, request))
        self._drained.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Waits until every queued frame is handed to the socket (or the connection ended)."""
        await self._drained.wait()

    async def _write(self) -> None:
        try:
            while True:
                while self._outgoing:
                    await self._ws.send(self._outgoing.popleft())
                self._drained.set()
                self._wake.clear()
                await self._wake.wait()
        except ConnectionClosed:
            pass
        finally:
            self._outgoing.clear()
            self._drained.set()

    async def receive(self) -> ServerEnvelope | None:
        """The next envelope, or None once the connection has ended."""
        while self._ending is None:
            try:
                payload = await self._ws.recv()
            except ConnectionClosed as closed:
                self._ending = self._why(closed)
                break
            if isinstance(payload, str):
                continue  # the server never sends text; nothing to act on
            try:
                return codec.decode(self._codec, payload)
            except MalformedEnvelope as error:
                # The server broke the protocol: say so, and start over.
                log.warning("roomcast: %s; reconnecting", error)
                self._ending = Ending(None, str(error))
                await self._ws.close(CLOSE_INVALID_PAYLOAD, "malformed envelope")
        self._writer.cancel()
        return None

    @property
    def ending(self) -> Ending | None:
        return self._ending

    @staticmethod
    def _why(closed: ConnectionClosed) -> Ending:
        if closed.rcvd is not None:
            return Ending(closed.rcvd.code, closed.rcvd.reason)
        return Ending(None, str(closed.__cause__ or closed))

    def abort(self) -> None:
        """Drops the TCP connection at once, without a close frame."""
        self._writer.cancel()
        self._ws.transport.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Sends a close frame and waits for the server's (bounded by the library's close timeout)."""
        await self._ws.close(code, reason)
