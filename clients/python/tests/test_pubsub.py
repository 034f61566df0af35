"""Publish and subscribe as an application sees it: every subscriber gets
every publication once, in the order of the acks, whatever the codec."""

from __future__ import annotations

import asyncio

import pytest

import roomcast
from kit import Inbox, within


@pytest.mark.parametrize("codec", list(roomcast.Codec))
async def test_two_subscribers_get_every_publication_in_the_order_of_the_acks(broker, clients, codec):
    options = roomcast.ClientOptions(codec=codec)
    alice = await clients(broker.url, options=options)
    bob = await clients(broker.url, options=options)
    carol = await clients(broker.url, options=options)
    alice_inbox, bob_inbox = Inbox(alice), Inbox(bob)

    joined = await alice.subscribe("chat.lobby")
    await bob.subscribe("chat.lobby")
    assert joined.offset == 0 and len(joined.epoch) == 16

    acks = [await carol.publish("chat.lobby", f"hello {n}") for n in range(20)]
    carol.publish_nowait("chat.lobby", b"fire and forget")
    assert [ack.offset for ack in acks] == list(range(1, 21)), "offsets grow by one per publication"
    assert not any(ack.duplicate for ack in acks)

    for inbox in (alice_inbox, bob_inbox):
        await inbox.until(lambda i: len(i.messages()) == 21, "all 21 messages")
        assert [m.offset for m in inbox.messages()] == list(range(1, 22))
        assert [m.data for m in inbox.messages()][:2] == [b"hello 0", b"hello 1"]
        assert inbox.messages()[-1].data == b"fire and forget"
        first = inbox.events[1]  # after Connected
        assert isinstance(first, roomcast.Subscribed) and not first.resubscribed


async def test_a_room_left_sends_nothing_more_and_bad_names_fail_at_the_call(broker, clients):
    alice = await clients(broker.url)
    carol = await clients(broker.url)
    inbox = Inbox(alice)
    await alice.subscribe("news")
    await alice.subscribe("sports")
    await carol.publish("news", b"first")
    await inbox.until(lambda i: len(i.messages()) == 1, "the first message")

    await alice.unsubscribe("news")
    assert alice.subscription_state("news") is roomcast.SubscriptionState.UNSUBSCRIBED
    await carol.publish("news", b"not for alice")
    await carol.publish("sports", b"goal")
    await inbox.until(lambda i: len(i.messages()) == 2, "the sports message")
    await asyncio.sleep(0.2)
    assert [(m.room, m.data) for m in inbox.messages()] == [("news", b"first"), ("sports", b"goal")]

    with pytest.raises(roomcast.InvalidRoom):
        await alice.subscribe("has space")
    with pytest.raises(roomcast.InvalidRoom):
        await alice.publish("", b"x")
    with pytest.raises(roomcast.ServerError) as refused:
        await alice.unsubscribe("never.joined")
    assert refused.value.code == 104, "not subscribed"


async def test_callbacks_run_beside_the_read_loop_never_inside_it(broker, clients):
    alice = await clients(broker.url)
    carol = await clients(broker.url)
    seen: list[int] = []
    release = asyncio.Event()

    async def slow_handler(message: roomcast.Message) -> None:
        await release.wait()  # a callback that blocks until the test says so
        seen.append(message.offset)

    alice.on(roomcast.Message, slow_handler)
    inbox = Inbox(alice)
    await alice.subscribe("ticks")
    for n in range(5):
        await carol.publish("ticks", str(n))
    # The read loop goes on while every callback waits: the events arrive,
    # and so does the reply to a request made meanwhile.
    await inbox.until(lambda i: len(i.messages()) == 5, "five messages while callbacks wait")
    page = await within(alice.history("ticks"), "a history reply while callbacks wait")
    assert len(page.publications) == 5
    assert seen == []
    release.set()
    await within(_until(lambda: len(seen) == 5), "the callbacks to finish")
    assert sorted(seen) == [1, 2, 3, 4, 5]


async def _until(condition) -> None:
    while not condition():
        await asyncio.sleep(0.01)
