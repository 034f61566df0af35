"""examples/chat, run as a user runs it: two people chat in a room, a
third arrives to the last lines and sees who is here, and a departure is
announced."""

from __future__ import annotations

import asyncio
import sys

import pytest

from kit import REPO, Broker, within

SECRET = "chat-example-secret-not-for-production"


class Person:
    """One chat.py process, typed into through its stdin."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def join(cls, broker: Broker, name: str) -> Person:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "examples" / "chat" / "chat.py"),
            "--url", broker.url, "--name", name, "--secret", SECRET,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        person = cls(process)
        await person.sees("-- here:")
        return person

    def types(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    async def sees(self, text: str) -> str:
        async def read() -> str:
            assert self.process.stdout is not None
            for line in self.lines:
                if text in line:
                    return line
            while raw := await self.process.stdout.readline():
                self.lines.append(raw.decode().rstrip("\n"))
                if text in self.lines[-1]:
                    return self.lines[-1]
            raise AssertionError(f"output ended without {text!r}: {self.lines}")

        return await within(read(), f"{text!r} in the chat's output")

    async def quits(self) -> None:
        self.types("/quit")
        await self.sees("-- bye")
        assert await within(self.process.wait(), "the chat to exit") == 0


@pytest.fixture
def chat_broker():
    started = Broker("--history-size", "100", "--presence", "true", "--join-leave", "true", "--jwt-secret", SECRET)
    yield started
    started.stop()


async def test_people_chat_see_who_is_here_and_read_the_backlog(chat_broker):
    bob = await Person.join(chat_broker, "bob")
    alice = await Person.join(chat_broker, "alice")
    assert "bob" in await alice.sees("-- here:")
    await bob.sees("* alice joined")

    alice.types("hello bob")
    await bob.sees("alice: hello bob")
    bob.types("hi alice")
    await alice.sees("bob: hi alice")

    carol = await Person.join(chat_broker, "carol")
    await carol.sees("-- chat.lobby: 2 lines so far")
    await carol.sees("   alice: hello bob")
    await carol.sees("   bob: hi alice")
    here = await carol.sees("-- here:")
    assert all(name in here for name in ("alice", "bob", "carol"))

    await alice.quits()
    await bob.sees("* alice left")
    await carol.sees("* alice left")
    await bob.quits()
    await carol.quits()
