"""A terminal chat on roomcast: rooms, who is here, joins and leaves, and
the last lines of a room when you enter it.

    python3 examples/chat/chat.py --name alice [--room chat.lobby] [--url ws://127.0.0.1:8080/ws]

Type a line to say it; `/join ROOM` moves to another room, `/who` lists who
is here, `/quit` (or end of input) leaves. With `--secret` (the broker's
`jwt_secret`) the chat signs its own token, so the broker knows you by
name in presence; a real application gets its tokens from its backend.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import sys
import time

import roomcast

#: Lines of history shown when entering a room.
BACKLOG = 10


def say(line: str) -> None:
    print(line, flush=True)


def demo_token(secret: str, name: str) -> str:
    """An HS256 token for `name`, valid ten minutes. For the demo only: a
    real application asks its backend, which holds the secret."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    claims = {"sub": name, "exp": int(time.time()) + 600, "rooms": {"sub": ["*"], "pub": ["*"], "presence": ["*"]}}
    head = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(json.dumps(claims).encode())
    return head + "." + part(hmac.new(secret.encode(), head.encode(), hashlib.sha256).digest())


def line_of(data: bytes) -> str:
    try:
        said = json.loads(data)
        return f"{said['name']}: {said['text']}"
    except (ValueError, KeyError, TypeError):
        return f"?: {data!r}"


def who(info: roomcast.ClientInfo) -> str:
    return info.user or f"guest {info.client}"


class Chat:
    def __init__(self, client: roomcast.Client, name: str) -> None:
        self.client = client
        self.name = name
        self.room = ""

    async def enter(self, room: str) -> None:
        """Joins `room`, then shows its last lines and who is here."""
        if self.room:
            await self.client.unsubscribe(self.room)
        self.room = room
        joined = await self.client.subscribe(room, join_leave=True)
        page = await self.client.history(room, limit=BACKLOG, reverse=True)
        say(f"-- {room}: {joined.offset} lines so far, the last {len(page.publications)}:")
        # Live messages after the ack's offset follow on their own; the page
        # may hold a line or two past it, which the client also delivers.
        for publication in reversed(page.publications):
            if publication.offset <= joined.offset:
                say(f"   {line_of(publication.data)}")
        await self.show_who()

    async def show_who(self) -> None:
        present = await self.client.presence(self.room)
        say(f"-- here: {', '.join(who(info) for info in present)}")

    async def show(self) -> None:
        """Prints what happens, as it happens."""
        async for event in self.client.events():
            match event:
                case roomcast.Message(room=room, data=data) if room == self.room:
                    say(line_of(data))
                case roomcast.Join(room=room, info=info) if room == self.room and info.user != self.name:
                    say(f"* {who(info)} joined")
                case roomcast.Leave(room=room, info=info) if room == self.room:
                    say(f"* {who(info)} left")
                case roomcast.Disconnected(reconnecting=True):
                    say("-- connection lost, reconnecting...")
                case roomcast.Subscribed(resubscribed=True, recovered=recovered):
                    say("-- back, nothing missed" if recovered else "-- back; some lines were missed, see the history")

    async def type(self) -> None:
        """Reads lines from the terminal until /quit or end of input."""
        loop = asyncio.get_running_loop()
        while line := (await loop.run_in_executor(None, sys.stdin.readline)):
            text = line.strip()
            if not text:
                continue
            if text == "/quit":
                return
            if text == "/who":
                await self.show_who()
            elif text.startswith("/join "):
                await self.enter(text.removeprefix("/join ").strip())
            else:
                payload = json.dumps({"name": self.name, "text": text}).encode()
                try:
                    await self.client.publish(self.room, payload)
                except roomcast.RoomcastError as error:
                    say(f"-- not sent: {error}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--room", default="chat.lobby")
    parser.add_argument("--url", default="ws://127.0.0.1:8080/ws")
    parser.add_argument("--secret", help="the broker's jwt_secret, to sign a demo token")
    args = parser.parse_args()

    get_token = (lambda: demo_token(args.secret, args.name)) if args.secret else None
    async with roomcast.Client(args.url, get_token=get_token) as client:
        chat = Chat(client, args.name)
        shown = asyncio.create_task(chat.show())
        await chat.enter(args.room)
        await chat.type()
        shown.cancel()
    say("-- bye")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except roomcast.RoomcastError as error:
        sys.exit(f"chat: {error}")
