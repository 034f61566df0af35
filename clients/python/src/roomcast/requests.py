"""Requests between a call and the server's answer. They outlive the
connection they were sent on, so that a publish whose ack was lost is sent
again on the next one, in its original order, under the same key."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .events import PublishAck
from .protocol import Outcome, StreamPosition


# eq=False throughout: a request is found by identity, never by value (two
# publishes of the same bytes are two publications).


@dataclass(eq=False, slots=True)
class PendingPublish:
    room: str
    data: bytes
    key: str | None
    #: None for fire-and-forget: sent with id 0, never sent again.
    future: asyncio.Future[PublishAck] | None
    #: The id of its latest sending; 0 until sent.
    id: int = 0
    #: Handed to some connection at least once: it may have been published.
    sent: bool = False


@dataclass(eq=False, slots=True)
class PendingSubscribe:
    room: str
    #: Which `RoomState` asked: a room left and joined again ignores the
    #: replies meant for the earlier one.
    generation: int
    join_leave: bool
    recover: StreamPosition | None
    #: Part of the batch sent after a reconnect, which holds back queued
    #: publishes until every room is live again.
    resubscribe: bool


@dataclass(eq=False, slots=True)
class PendingUnsubscribe:
    room: str
    future: asyncio.Future[None]


@dataclass(eq=False, slots=True)
class PendingQuery:
    """History, presence, presence_stats, refresh: answered, never retried."""

    future: asyncio.Future[Outcome]


InFlight = PendingPublish | PendingSubscribe | PendingUnsubscribe | PendingQuery
#: What waits for a connection (and for resubscribing to finish).
Waiting = PendingPublish | PendingUnsubscribe


def settle(future: asyncio.Future[Any] | None, error: BaseException) -> None:
    """Fails a caller's future unless it was answered or given up already."""
    if future is not None and not future.done():
        future.set_exception(error)
