"""What the client knows of each subscribed room. No I/O here, so the rule
that hands each offset over once and in order is tested without a server."""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass, field

from .events import SubscribeInfo
from .protocol import StreamPosition


class SubscriptionState(enum.Enum):
    """Where a room's subscription stands."""

    #: Not subscribed, nor asked to be.
    UNSUBSCRIBED = "unsubscribed"
    #: Asked for (or being resumed after a reconnect), not yet acknowledged.
    SUBSCRIBING = "subscribing"
    #: Acknowledged on the current connection: messages flow.
    SUBSCRIBED = "subscribed"


@dataclass(slots=True)
class RoomState:
    """One room the application subscribed to, across connections."""

    name: str
    #: Replies meant for an earlier subscription of the same name (left,
    #: then joined again) carry another generation and are ignored.
    generation: int
    join_leave: bool = False
    #: The epoch of the last subscribe ack and the offset of the last
    #: message handed to the application (the ack's offset before any):
    #: what a resubscribe gives as `recover`.
    position: StreamPosition | None = None
    #: Subscribed on the current connection.
    active: bool = False
    #: A subscribe for it is on its way on the current connection.
    in_flight: bool = False
    #: Some subscribe of it was acknowledged once: a later one is a resume.
    confirmed: bool = False
    #: Callers of `subscribe` waiting for the next ack.
    waiters: list[asyncio.Future[SubscribeInfo]] = field(default_factory=list)

    @property
    def state(self) -> SubscriptionState:
        return SubscriptionState.SUBSCRIBED if self.active else SubscriptionState.SUBSCRIBING

    def accept(self, offset: int) -> bool:
        """Whether a message at `offset` is new, and if so records it as the
        last one handed over. Offsets never go back within an epoch, so
        anything at or below the last one is a replay."""
        if self.position is None:
            return True
        if offset <= self.position.offset:
            return False
        self.position = StreamPosition(self.position.epoch, offset)
        return True

    def acknowledge(self, sent: StreamPosition | None, was_active: bool, epoch: str, offset: int, recovered: bool) -> None:
        """Takes in a subscribe ack. `sent` is the recover position the
        subscribe carried; `was_active`, whether the room was already
        subscribed on this connection (a repeated subscribe)."""
        current = StreamPosition(epoch, offset)
        if sent is not None:
            # Recovered: every publication after the position we gave follows.
            # Not: something was missed, and live messages follow the ack's offset.
            self.position = sent if recovered else current
        elif was_active and self.position is not None and self.position.epoch == epoch:
            # Messages up to the ack's offset may still be on their way.
            pass
        else:
            self.position = current
