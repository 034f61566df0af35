"""What the stories need around the client: a real roomcast broker in a
subprocess, a TCP hop between client and broker that a test can break on
cue (the network failing, not a mock of the broker), tokens, and waits
that fail instead of hanging."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import roomcast

REPO = Path(__file__).resolve().parents[3]
BINARY = Path(os.environ.get("ROOMCAST_BIN", REPO / "target" / "debug" / "roomcast"))
LISTENING = re.compile(r"roomcast listening on (ws://(\S+?):(\d+)/ws)")

#: Seconds any single wait in a story may take before the test fails.
PATIENCE = 10.0

T = TypeVar("T")


class Broker:
    """A roomcast process on a free port (or on `port`, to restart one
    in the same place), with `settings` as command-line flags."""

    def __init__(self, *settings: str, port: int = 0) -> None:
        self.settings = settings
        self._log = tempfile.TemporaryFile()
        self._stdout = tempfile.NamedTemporaryFile(delete=False)
        command = [
            str(BINARY),
            "--listen", f"127.0.0.1:{port}",
            "--workers", "2",
            "--pin-cores", "false",
            "--admin-listen", "127.0.0.1:0",
            *settings,
        ]  # fmt: skip
        if not BINARY.exists():
            raise RuntimeError(f"no roomcast binary at {BINARY}: build it or set ROOMCAST_BIN")
        self.process = subprocess.Popen(command, stdout=self._stdout, stderr=self._log)
        deadline = time.monotonic() + PATIENCE
        while True:
            first = Path(self._stdout.name).read_text().split("\n", 1)
            if len(first) == 2 and (found := LISTENING.search(first[0])):
                self.url = found.group(1)
                self.port = int(found.group(3))
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                self._log.seek(0)
                raise RuntimeError(f"roomcast did not start: {self._log.read().decode(errors='replace')[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: a graceful shutdown (connections get 1012)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(PATIENCE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        os.unlink(self._stdout.name)


class Proxy:
    """A TCP hop in front of the broker that the test can break: `reset()`
    cuts every connection through it with a TCP reset, `refuse()` resets
    new connections until `admit()`, and `hold_replies()` stops what the
    broker sends from reaching the client (a lost ack) until the next reset."""

    def __init__(self, broker_port: int) -> None:
        self._broker_port = broker_port
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._refusing = False
        self._holding = False
        self._server: asyncio.Server | None = None
        self.connections = 0

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.reset()
        if self._server is not None:
            self._server.close()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            _reset(client_writer)
            return
        broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self._broker_port)
        self.connections += 1
        self._pairs.append((client_writer, broker_writer))
        await asyncio.gather(
            self._pump(client_reader, broker_writer, upstream=True),
            self._pump(broker_reader, client_writer, upstream=False),
            return_exceptions=True,
        )

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool) -> None:
        while chunk := await reader.read(65536):
            if upstream or not self._holding:
                writer.write(chunk)
                await writer.drain()
        writer.close()

    def reset(self) -> None:
        """Cuts every connection with a TCP reset, on both sides."""
        pairs, self._pairs = self._pairs, []
        for client_writer, broker_writer in pairs:
            _reset(client_writer)
            _reset(broker_writer)
        self._holding = False

    def refuse(self) -> None:
        self._refusing = True

    def admit(self) -> None:
        self._refusing = False

    def hold_replies(self) -> None:
        self._holding = True


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def sign_token(secret: str, sub: str, lifetime: float, **claims: Any) -> str:
    """An HS256 JWT for `sub`, valid for `lifetime` seconds from now, with
    every room granted unless `claims` say otherwise."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    payload = {
        "sub": sub,
        "exp": int(time.time() + lifetime),
        "rooms": {"sub": ["*"], "pub": ["*"], "presence": ["*"]},
        **claims,
    }
    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + part(json.dumps(payload).encode())
    signature = hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + part(signature)


def quick(**settings: Any) -> roomcast.ClientOptions:
    """Options with short waits, so that stories about reconnects run quickly."""
    base: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.2}
    return roomcast.ClientOptions(**(base | settings))


async def within(awaitable: Awaitable[T], what: str, seconds: float = PATIENCE) -> T:
    """Awaits, failing the test (rather than hanging it) after `seconds`."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds} s waiting for {what}") from None


class Inbox:
    """Everything a client receives, gathered by a task of its own, so a
    story can wait for the event it expects and look at all that came."""

    def __init__(self, client: roomcast.Client) -> None:
        self.events: list[roomcast.Event] = []
        self._taken: dict[type, int] = {}
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._gather(client.events()))

    async def _gather(self, events: AsyncIterator[roomcast.Event]) -> None:
        async for event in events:
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def of(self, kind: type[T]) -> list[T]:
        return [event for event in self.events if isinstance(event, kind)]

    def messages(self, room: str | None = None) -> list[roomcast.Message]:
        return [m for m in self.of(roomcast.Message) if room is None or m.room == room]

    async def until(self, condition: Callable[[Inbox], bool], what: str, seconds: float = PATIENCE) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: condition(self))

        await within(wait(), what, seconds)

    async def next(self, kind: type[T], what: str, seconds: float = PATIENCE) -> T:
        """The first event of `kind` that `next` has not returned yet."""
        taken = self._taken.get(kind, 0)
        await self.until(lambda inbox: len(inbox.of(kind)) > taken, what, seconds)
        self._taken[kind] = taken + 1
        return self.of(kind)[taken]

    async def resubscribed(self, what: str, seconds: float = PATIENCE) -> roomcast.Subscribed:
        """The first `Subscribed` event of a resume after a reconnect."""

        def resumes(inbox: Inbox) -> list[roomcast.Subscribed]:
            return [s for s in inbox.of(roomcast.Subscribed) if s.resubscribed]

        await self.until(lambda inbox: bool(resumes(inbox)), what, seconds)
        return resumes(self)[0]
