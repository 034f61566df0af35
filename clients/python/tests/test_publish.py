"""Publishing through a failing network: the offline queue, the retry of a
publish whose ack was lost (never delivered twice), and timeouts."""

from __future__ import annotations

import asyncio

import pytest

import roomcast
from kit import Inbox, Proxy, quick, within


async def test_publishes_made_offline_wait_in_a_bounded_queue_and_go_out_once(broker, clients):
    async with Proxy(broker.port) as network:
        carol = await clients(network.url, options=quick(max_queued_publishes=5))
        alice = await clients(broker.url)
        inbox = Inbox(alice)
        carol_inbox = Inbox(carol)
        await alice.subscribe("orders")

        network.refuse()
        network.reset()
        await carol_inbox.next(roomcast.Disconnected, "carol's disconnect")
        queued = [asyncio.create_task(carol.publish("orders", f"order {n}")) for n in range(5)]
        await asyncio.sleep(0.1)
        with pytest.raises(roomcast.QueueFull):
            await carol.publish("orders", b"one too many")
        with pytest.raises(roomcast.NotConnected):
            await carol.history("orders")
        assert not any(task.done() for task in queued), "they wait for the connection"

        network.admit()
        acks = await within(asyncio.gather(*queued), "the acks of the queued publishes")
        assert [ack.offset for ack in acks] == [1, 2, 3, 4, 5], "sent in the order they were made"
        await inbox.until(lambda i: len(i.messages()) == 5, "the five orders")
        await asyncio.sleep(0.2)
        assert [m.data for m in inbox.messages()] == [f"order {n}".encode() for n in range(5)]


@pytest.mark.parametrize("codec", list(roomcast.Codec))
async def test_a_publish_whose_ack_was_lost_is_sent_again_and_not_delivered_twice(broker, clients, codec):
    async with Proxy(broker.port) as network:
        carol = await clients(network.url, options=quick(codec=codec))
        alice = await clients(broker.url)
        inbox = Inbox(alice)
        await alice.subscribe("orders")

        network.hold_replies()  # the broker's answers stop reaching carol
        publishing = asyncio.create_task(carol.publish("orders", b"buy 1 BTC"))
        await inbox.until(lambda i: len(i.messages()) == 1, "the order, stored and delivered")
        assert not publishing.done(), "carol never saw the ack"
        network.reset()  # the connection dies with the ack

        ack = await within(publishing, "the ack of the retry")
        assert ack == roomcast.PublishAck(offset=1, duplicate=True), "the retry was recognised"
        await carol.publish("orders", b"next")
        await inbox.until(lambda i: len(i.messages()) == 2, "the next order")
        assert [(m.offset, m.data) for m in inbox.messages()] == [(1, b"buy 1 BTC"), (2, b"next")]


async def test_a_publish_without_an_ack_times_out_and_can_be_retried_safely(broker, clients):
    async with Proxy(broker.port) as network:
        carol = await clients(network.url, options=quick())
        carol_inbox = Inbox(carol)
        alice = await clients(broker.url)
        inbox = Inbox(alice)
        await alice.subscribe("orders")

        network.hold_replies()
        with pytest.raises(roomcast.PublishTimeout) as timed_out:
            await carol.publish("orders", b"buy", timeout=0.5)
        assert timed_out.value.sent, "it reached the connection: it may have been published"
        network.reset()
        await inbox.until(lambda i: len(i.messages()) == 1, "the publication that was made")

        # Carol does not know; retrying under the same key is safe.
        ack = await within(
            carol.publish("orders", b"buy", idempotency_key=timed_out.value.idempotency_key),
            "the retry",
        )
        assert ack.duplicate and ack.offset == 1
        await asyncio.sleep(0.2)
        assert len(inbox.messages()) == 1, "delivered once"

        # Offline, a timed-out publish was never sent, and is not sent later.
        network.refuse()
        network.reset()
        await carol_inbox.until(lambda i: len(i.of(roomcast.Disconnected)) == 2, "the second disconnect")
        with pytest.raises(roomcast.PublishTimeout) as never_sent:
            await carol.publish("orders", b"sell", timeout=0.3)
        assert not never_sent.value.sent
        network.admit()
        assert (await within(carol.publish("orders", b"after"), "a later publish")).offset == 2
        await inbox.until(lambda i: len(i.messages()) == 2, "the later publish")
        assert [m.data for m in inbox.messages()] == [b"buy", b"after"]
