"""The network fails under a client: it reconnects by itself, resumes
every room where it left off (every missed offset exactly once), and says
when it could not."""

from __future__ import annotations

import asyncio

import pytest

import roomcast
from kit import Broker, Inbox, Proxy, quick, within


@pytest.mark.parametrize("codec", list(roomcast.Codec))
async def test_a_subscriber_cut_off_gets_every_missed_offset_exactly_once(broker, clients, codec):
    async with Proxy(broker.port) as network:
        alice = await clients(network.url, options=quick(codec=codec))
        carol = await clients(broker.url)
        inbox = Inbox(alice)
        await alice.subscribe("ticks.btc")
        await alice.subscribe("ticks.eth")
        for n in range(10):
            await carol.publish("ticks.btc", f"btc {n}")
        await inbox.until(lambda i: len(i.messages()) == 10, "the first ten")

        network.refuse()
        network.reset()  # alice's connection dies with a TCP reset
        await inbox.next(roomcast.Disconnected, "the disconnect")
        for n in range(10, 40):
            await carol.publish("ticks.btc", f"btc {n}")
        await carol.publish("ticks.eth", b"eth 0")
        network.admit()

        await inbox.next(roomcast.Connected, "the first connection")
        reconnected = await inbox.next(roomcast.Connected, "the reconnect")
        assert reconnected.reconnected
        await inbox.until(lambda i: len(i.messages()) == 41, "every missed message")
        resumed = {s.room: s for s in inbox.of(roomcast.Subscribed) if s.resubscribed}
        assert resumed.keys() == {"ticks.btc", "ticks.eth"}
        assert all(s.recovered for s in resumed.values()), resumed

        await carol.publish("ticks.btc", b"live again")
        await inbox.until(lambda i: len(i.messages()) == 42, "the live message")
        btc = inbox.messages("ticks.btc")
        assert [m.offset for m in btc] == list(range(1, 42)), "every offset once, in order"
        assert [m.data for m in btc][-2:] == [b"btc 39", b"live again"]
        assert [m.offset for m in inbox.messages("ticks.eth")] == [1]
        assert alice.position("ticks.btc").offset == 41


async def test_a_subscriber_away_too_long_is_told_it_missed_messages(clients):
    broker = Broker("--history-size", "5")
    try:
        async with Proxy(broker.port) as network:
            alice = await clients(network.url, options=quick())
            carol = await clients(broker.url)
            inbox = Inbox(alice)
            await alice.subscribe("ticks.btc")
            network.refuse()
            network.reset()
            await inbox.next(roomcast.Disconnected, "the disconnect")
            for n in range(20):
                await carol.publish("ticks.btc", f"{n}")
            network.admit()

            resumed = await inbox.resubscribed("the resubscribe")
            assert resumed.resubscribed and not resumed.recovered, "5 kept, 20 missed: must reload"
            assert resumed.position.offset == 20
            await carol.publish("ticks.btc", b"next")
            await inbox.until(lambda i: len(i.messages()) == 1, "the next live message")
            assert inbox.messages()[0].offset == 21
    finally:
        broker.stop()


async def test_a_broker_restart_closes_with_1012_and_the_client_comes_back(clients):
    broker = Broker("--history-size", "100", "--drain-period", "100ms")
    port = broker.port
    alice = await clients(broker.url, options=quick())
    inbox = Inbox(alice)
    first = await alice.subscribe("ticks.btc")
    broker.stop()  # graceful: every connection gets 1012 service restart
    gone = await inbox.next(roomcast.Disconnected, "the 1012 close")
    assert (gone.code, gone.reconnecting) == (1012, True)
    assert alice.state is roomcast.ClientState.CONNECTING

    broker = Broker("--history-size", "100", port=port)
    try:
        resumed = await inbox.resubscribed("the resubscribe after the restart")
        assert resumed.resubscribed and not resumed.recovered, "a restart loses the room's order"
        assert resumed.position.epoch != first.epoch
        ack = await within(alice.publish("ticks.btc", b"after"), "a publish after the restart")
        assert ack.offset == 1
    finally:
        broker.stop()


async def test_a_client_that_cannot_reconnect_gives_up_after_its_attempts(clients):
    broker = Broker("--drain-period", "100ms")
    try:
        alice = await clients(broker.url, options=quick(max_reconnect_attempts=3))
        inbox = Inbox(alice)
        pending = asyncio.create_task(alice.publish("ticks.btc", b"never"))
        await asyncio.sleep(0)
    finally:
        broker.stop()
    with pytest.raises(roomcast.Closed) as closed:
        await within(pending, "the publish to fail")
    assert closed.value.close_code == 1012, "the error says what the server said last"
    assert alice.state is roomcast.ClientState.CLOSED
    gone = inbox.of(roomcast.Disconnected)
    assert [(d.code, d.reconnecting) for d in gone] == [(1012, True)]
    with pytest.raises(roomcast.Closed):
        await alice.subscribe("ticks.btc")
