"""The client's rules that need no server: which offsets are new, how long
to wait before reconnecting, when to refresh a token."""

from __future__ import annotations

import time

from roomcast.backoff import backoff_delay
from roomcast.protocol import StreamPosition
from roomcast.rooms import RoomState
from roomcast.token import TokenKeeper, expiry
from kit import sign_token


def test_a_room_hands_over_each_offset_once_and_in_order():
    room = RoomState("ticks.btc", generation=0)
    room.acknowledge(None, False, "e1", 10, False)
    assert not room.accept(10), "the ack's offset was before the subscription"
    assert room.accept(11) and room.accept(12)
    assert not room.accept(11) and not room.accept(12), "replays are dropped"
    assert room.position == StreamPosition("e1", 12)


def test_a_resume_continues_from_the_last_message_or_from_the_ack_when_it_missed_some():
    room = RoomState("ticks.btc", generation=0, position=StreamPosition("e1", 12))
    room.acknowledge(StreamPosition("e1", 12), False, "e1", 20, True)
    assert room.accept(13), "the missed messages follow"

    room = RoomState("ticks.btc", generation=0, position=StreamPosition("e1", 12))
    room.acknowledge(StreamPosition("e1", 12), False, "e2", 0, False)
    assert room.position == StreamPosition("e2", 0) and room.accept(1), "a new epoch numbers from 1"


def test_backoff_draws_from_a_bound_that_doubles_up_to_the_max():
    assert backoff_delay(0, 0.5, 20, draw=0.999999) < 0.5
    assert backoff_delay(3, 0.5, 20, draw=0.5) == 2.0
    assert backoff_delay(10, 0.5, 20, draw=0.5) == 10.0, "capped at the max"
    assert backoff_delay(10_000, 0.5, 20, draw=0.0) == 0.0, "full jitter starts at zero; no overflow"


def test_a_token_is_refreshed_before_its_expiry_and_never_at_once():
    secret = "s"
    hour = sign_token(secret, "alice", 3600)
    assert abs(expiry(hour) - (time.time() + 3600)) < 2
    delay = TokenKeeper(hour, lambda: hour).refresh_delay(30)
    assert 3560 < delay < 3571
    short = TokenKeeper(sign_token(secret, "alice", 10), lambda: "")
    assert 4 < short.refresh_delay(30) <= 5, "halfway through a token shorter than the margin"
    assert TokenKeeper(hour, None).refresh_delay(30) is None, "nothing to refresh from"
    assert expiry("not a jwt") is None
