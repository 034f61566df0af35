"""Fixtures: a real broker per test module setting, and clients that are
closed whatever the story's outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import roomcast
from kit import Broker

#: Rooms keep their last 100 publications and list who is in them.
STANDARD = ("--history-size", "100", "--presence", "true", "--join-leave", "true")


@pytest.fixture
def broker() -> Iterator[Broker]:
    started = Broker(*STANDARD)
    yield started
    started.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Any]:
    """`await clients(url, **kwargs)` opens a client that is closed after the test."""
    opened: list[roomcast.Client] = []

    async def open_client(url: str, **kwargs: Any) -> roomcast.Client:
        client = await roomcast.connect(url, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()
