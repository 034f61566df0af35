"""Tokens: fetched by a callback, refreshed before they expire, and a
client that stops for good when its token runs out or is refused."""

from __future__ import annotations

import asyncio

import pytest

import roomcast
from kit import Broker, Inbox, sign_token, within

SECRET = "test-secret-of-at-least-32-bytes!!"


@pytest.fixture
def guarded():
    started = Broker("--jwt-secret", SECRET, "--jwt-leeway", "0s", "--history-size", "10", "--drain-period", "100ms")
    yield started
    started.stop()


async def test_a_token_from_get_token_is_refreshed_before_it_expires(guarded, clients):
    issued: list[str] = []

    async def get_token() -> str:
        issued.append(sign_token(SECRET, "alice", lifetime=2))
        return issued[-1]

    alice = await clients(guarded.url, get_token=get_token, options=roomcast.ClientOptions(refresh_margin=1))
    inbox = Inbox(alice)
    await alice.subscribe("chat.lobby")
    await asyncio.sleep(4.5)  # more than two lifetimes of a token
    assert inbox.of(roomcast.Disconnected) == [], "the connection outlived its first tokens"
    assert len(issued) >= 3, "refreshed before each expiry"
    assert (await alice.publish("chat.lobby", b"still here")).offset == 1


async def test_an_expired_fixed_token_ends_the_client_with_4001(guarded, clients):
    alice = await clients(guarded.url, token=sign_token(SECRET, "alice", lifetime=1))
    inbox = Inbox(alice)
    gone = await inbox.next(roomcast.Disconnected, "the token's expiry", seconds=5)
    assert (gone.code, gone.reconnecting) == (4001, False)
    with pytest.raises(roomcast.Closed) as closed:
        await alice.publish("chat.lobby", b"too late")
    assert closed.value.close_code == 4001


async def test_after_4001_the_reconnect_asks_get_token_for_a_new_one(guarded, clients):
    service_up = True

    def get_token() -> str:  # a plain function works too
        if not service_up:
            raise ConnectionError("the auth service is down")
        return sign_token(SECRET, "alice", lifetime=2)

    alice = await clients(guarded.url, get_token=get_token, options=roomcast.ClientOptions(refresh_margin=1, backoff_base=0.05))
    inbox = Inbox(alice)
    await alice.subscribe("chat.lobby")
    # A room that keeps a publication keeps its epoch while nobody is in it.
    await alice.publish("chat.lobby", b"hello")
    service_up = False  # the refresh due in a second fails, and so the token expires
    gone = await inbox.next(roomcast.Disconnected, "the expiry", seconds=5)
    assert (gone.code, gone.reconnecting) == (4001, True)
    service_up = True
    resumed = await inbox.resubscribed("the resubscribe with a new token")
    assert resumed.recovered


async def test_a_refused_token_fails_the_connect_and_get_token_can_stop_for_good(guarded):
    with pytest.raises(roomcast.Unauthorized) as refused:
        await roomcast.connect(guarded.url, token=sign_token("another secret, not the broker's!!", "alice", 60))
    assert refused.value.status == 401

    def logged_out() -> str:
        raise roomcast.Unauthorized("the user logged out", status=None)

    with pytest.raises(roomcast.Unauthorized):
        await within(roomcast.connect(guarded.url, get_token=logged_out), "the refusal")
