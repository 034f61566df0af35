"""What a chat needs besides messages: history on join, who is here, and
joins and leaves as they happen."""

from __future__ import annotations

import asyncio

import pytest

import roomcast
from kit import Inbox, Proxy, quick


async def test_a_late_joiner_reads_the_history_it_missed(broker, clients):
    carol = await clients(broker.url)
    for n in range(1, 8):
        await carol.publish("chat.lobby", f"line {n}")

    bob = await clients(broker.url)
    joined = await bob.subscribe("chat.lobby")
    page = await bob.history("chat.lobby", limit=5, reverse=True)
    assert page.epoch == joined.epoch and page.offset == 7
    assert [p.data for p in page.publications] == [f"line {n}".encode() for n in (7, 6, 5, 4, 3)]
    older = await bob.history("chat.lobby", since=page.publications[-1].offset, reverse=True)
    assert [p.offset for p in older.publications] == [2, 1]
    forward = await bob.history("chat.lobby", since=5)
    assert [p.offset for p in forward.publications] == [6, 7]


async def test_room_members_see_who_is_here_and_who_comes_and_goes(broker, clients):
    async with Proxy(broker.port) as network:
        alice = await clients(broker.url)
        inbox = Inbox(alice)
        await alice.subscribe("chat.lobby", join_leave=True)
        own_join = await inbox.next(roomcast.Join, "alice's own join")

        bob = await clients(network.url, options=quick(max_reconnect_attempts=0))
        await bob.subscribe("chat.lobby")
        bob_join = await inbox.next(roomcast.Join, "bob's join")
        assert bob_join.info.client != own_join.info.client

        present = await alice.presence("chat.lobby")
        assert [c.client for c in present] == [own_join.info.client, bob_join.info.client]
        assert (await alice.presence_stats("chat.lobby")) == roomcast.PresenceCounts(clients=2, users=0)

        network.reset()  # bob's network fails
        left = await inbox.next(roomcast.Leave, "bob's leave", seconds=5)
        assert left.info == bob_join.info
        assert [c.client for c in await alice.presence("chat.lobby")] == [own_join.info.client]


async def test_features_a_room_lacks_are_refused_with_their_error_code(clients):
    from kit import Broker

    bare = Broker()  # no history, no presence
    try:
        alice = await clients(bare.url)
        with pytest.raises(roomcast.ServerError) as refused:
            await alice.history("chat.lobby")
        assert refused.value.code == 106
        with pytest.raises(roomcast.ServerError):
            await alice.subscribe("chat.lobby", join_leave=True)
        assert alice.subscription_state("chat.lobby") is roomcast.SubscriptionState.UNSUBSCRIBED
        await asyncio.sleep(0)
    finally:
        bare.stop()
