"""The bounded buffer between the connection's reader and the application.

Putting never waits (the client's own events, such as a disconnect, must
not wait on the application); instead the reader asks `wait_for_room`
after each envelope, so an application that stops taking events stops the
socket being read, and the server's slow-consumer policy takes over rather
than this process's memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class EventStream(Generic[T]):
    """A FIFO of at most about `limit` items, with an end."""

    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit = max(1, limit)
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended = False

    def put(self, item: T) -> None:
        if self._ended:
            return
        self._items.append(item)
        self._readable.set()
        if len(self._items) >= self._limit:
            self._room.clear()

    def end(self) -> None:
        """No more items: readers get what is buffered, then the end."""
        self._ended = True
        self._readable.set()
        self._room.set()

    async def wait_for_room(self) -> None:
        await self._room.wait()

    async def get(self) -> T | None:
        """The next item, or None once ended and drained."""
        while not self._items:
            if self._ended:
                return None
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        if len(self._items) < self._limit:
            self._room.set()
        return item
