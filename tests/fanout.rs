//! Fan-out as users see it: many subscribers spread over the workers, many
//! rooms at once, unsubscribing, every message exactly once and in order.

mod common;

use std::collections::HashMap;

use common::broker::{next, rooms_on_both_cores, Broker};
use roomcast::client::{Client, ClientOptions};
use roomcast::protocol::{Codec, Offset};
use tokio::task::JoinSet;

/// Subscribes `count` clients to `room`, alternating codecs.
async fn subscribers(broker: &Broker, room: &str, count: usize) -> Vec<(Client, Offset)> {
    let mut joining = JoinSet::new();
    for i in 0..count {
        let addr = broker.addr;
        let room = room.to_owned();
        let codec = Codec::ALL[i % 2];
        joining.spawn(async move {
            let options = ClientOptions {
                message_buffer: 1 << 16,
                ..ClientOptions::default()
            };
            let client = Client::connect_with(addr, codec, options)
                .await
                .expect("connects");
            let start = client.subscribe(&room).await.expect("subscribes").offset;
            (client, start)
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(joined) = joining.join_next().await {
        all.push(joined.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_each_receive_every_message_once_in_order() {
    let broker = Broker::start();
    let (room, _) = rooms_on_both_cores("ticker-");
    let subscribers = subscribers(&broker, &room, 1000).await;
    let publisher = broker.client(Codec::MsgPack).await;
    const MESSAGES: u64 = 100;
    for i in 0..MESSAGES {
        publisher
            .publish_nowait(&room, i.to_be_bytes().to_vec())
            .await
            .unwrap();
    }
    let last = publisher
        .publish(&room, b"end".to_vec())
        .await
        .unwrap()
        .offset;
    let mut checking = JoinSet::new();
    for (mut client, start) in subscribers {
        checking.spawn(async move {
            let mut expected = start.next();
            loop {
                let message = next(&mut client).await;
                assert_eq!(message.offset, expected, "no gap, no duplicate, in order");
                if message.offset == last {
                    assert_eq!(&message.data[..], b"end");
                    return;
                }
                let n = u64::from_be_bytes(message.data[..].try_into().unwrap());
                assert_eq!(
                    message.offset.0 - start.0 - 1,
                    n,
                    "payload matches its offset"
                );
                expected = expected.next();
            }
        });
    }
    let mut done = 0;
    while let Some(result) = checking.join_next().await {
        result.unwrap();
        done += 1;
    }
    assert_eq!(done, 1000);
    let stats = broker.server().stats();
    assert!(stats.deliveries >= 1000 * (MESSAGES + 1), "{stats:?}");
    assert_eq!(stats.slow_consumer_closes + stats.slow_consumer_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rooms_at_once_keep_their_own_order() {
    let broker = Broker::start();
    const ROOMS: usize = 40;
    const PER_ROOM: u64 = 50;
    let mut listeners = Vec::new();
    for r in 0..ROOMS {
        let room = format!("game-{r}");
        for (client, start) in subscribers(&broker, &room, 3).await {
            listeners.push((room.clone(), client, start));
        }
    }
    // Two publishers interleave over every room.
    let alice = broker.client(Codec::MsgPack).await;
    let bob = broker.client(Codec::Proto).await;
    for i in 0..PER_ROOM {
        for r in 0..ROOMS {
            let publisher = if (i as usize + r) % 2 == 0 {
                &alice
            } else {
                &bob
            };
            publisher
                .publish_nowait(&format!("game-{r}"), format!("{r}:{i}").into_bytes())
                .await
                .unwrap();
        }
    }
    // Order holds per publisher; across publishers only what is acknowledged
    // is known to be sequenced. Bob's acknowledged "sync" follows all his
    // messages, and Alice's "end" follows that.
    let mut last = HashMap::new();
    for r in 0..ROOMS {
        let room = format!("game-{r}");
        bob.publish(&room, b"sync".to_vec()).await.unwrap();
        last.insert(
            room.clone(),
            alice.publish(&room, b"end".to_vec()).await.unwrap().offset,
        );
    }
    for (room, mut client, start) in listeners {
        let mut expected = start.next();
        let mut seen = 0;
        loop {
            let message = next(&mut client).await;
            assert_eq!(message.room, room, "only its own room");
            assert_eq!(message.offset, expected);
            expected = expected.next();
            if message.offset == last[&room] {
                break;
            }
            seen += 1;
        }
        assert_eq!(seen, PER_ROOM + 1, "every message and the sync");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_unsubscribing_nothing_arrives_and_resubscribing_resumes_at_the_current_offset() {
    let broker = Broker::start();
    let (room_a, room_b) = rooms_on_both_cores("news-");
    let publisher = broker.client(Codec::Proto).await;
    for room in [&room_a, &room_b] {
        let mut reader = broker.client(Codec::MsgPack).await;
        reader.subscribe(room).await.unwrap();
        reader.subscribe("beacon").await.unwrap();
        publisher.publish(room, b"one".to_vec()).await.unwrap();
        assert_eq!(&next(&mut reader).await.data[..], b"one");
        reader.unsubscribe(room).await.unwrap();
        let missed = publisher
            .publish(room, b"two".to_vec())
            .await
            .unwrap()
            .offset;
        // A message in another room proves nothing from the left room was queued before it.
        publisher
            .publish("beacon", b"beacon".to_vec())
            .await
            .unwrap();
        let message = next(&mut reader).await;
        assert_eq!(
            (message.room.as_str(), &message.data[..]),
            ("beacon", &b"beacon"[..])
        );
        let resumed = reader.subscribe(room).await.unwrap().offset;
        assert_eq!(
            resumed, missed,
            "the subscribe reply carries the current offset"
        );
        let three = publisher
            .publish(room, b"three".to_vec())
            .await
            .unwrap()
            .offset;
        let message = next(&mut reader).await;
        assert_eq!((message.offset, &message.data[..]), (three, &b"three"[..]));
        assert_eq!(three, missed.next());
    }
    let lonely = broker.client(Codec::MsgPack).await;
    let err = lonely.unsubscribe("never").await.unwrap_err();
    assert!(
        matches!(err, roomcast::client::ClientError::Server { code: 104, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_twice_is_harmless_and_answers_the_current_offset() {
    let broker = Broker::start();
    let mut reader = broker.client(Codec::MsgPack).await;
    let publisher = broker.client(Codec::MsgPack).await;
    reader.subscribe("twice").await.unwrap();
    let offset = publisher
        .publish("twice", b"x".to_vec())
        .await
        .unwrap()
        .offset;
    assert_eq!(next(&mut reader).await.offset, offset);
    assert_eq!(reader.subscribe("twice").await.unwrap().offset, offset);
    let again = publisher
        .publish("twice", b"y".to_vec())
        .await
        .unwrap()
        .offset;
    let message = next(&mut reader).await;
    assert_eq!(message.offset, again, "delivered once, not twice");
    publisher
        .publish("beacon-twice", b"z".to_vec())
        .await
        .unwrap();
    reader.subscribe("beacon-twice").await.unwrap();
    let after = publisher
        .publish("beacon-twice", b"w".to_vec())
        .await
        .unwrap()
        .offset;
    assert_eq!(next(&mut reader).await.offset, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_of_one_message_between_cores_slow_publishers_down_but_lose_nothing() {
    let broker = Broker::start_with(roomcast::Config {
        core_queue_capacity: 1,
        ..common::broker::config()
    });
    let (room_a, room_b) = rooms_on_both_cores("pressure-");
    let mut listeners = Vec::new();
    for room in [&room_a, &room_b] {
        for (client, start) in subscribers(&broker, room, 20).await {
            listeners.push((room.clone(), client, start));
        }
    }
    const PER_PUBLISHER: u64 = 300;
    let mut publishing = JoinSet::new();
    for p in 0..4u64 {
        let addr = broker.addr;
        let rooms = [room_a.clone(), room_b.clone()];
        publishing.spawn(async move {
            let publisher = Client::connect(addr, Codec::ALL[p as usize % 2])
                .await
                .unwrap();
            for i in 0..PER_PUBLISHER {
                for room in &rooms {
                    publisher
                        .publish_nowait(room, [p, i].map(u64::to_be_bytes).concat())
                        .await
                        .unwrap();
                }
            }
            for room in &rooms {
                publisher.publish(room, b"done".to_vec()).await.unwrap();
            }
        });
    }
    while let Some(done) = publishing.join_next().await {
        done.unwrap();
    }
    for (room, mut client, start) in listeners {
        let mut expected = start.next();
        let mut next_from = [0u64; 4];
        let mut done = 0;
        while done < 4 {
            let message = next(&mut client).await;
            assert_eq!(
                (message.room.as_str(), message.offset),
                (room.as_str(), expected)
            );
            expected = expected.next();
            if &message.data[..] == b"done" {
                done += 1;
                continue;
            }
            let p = u64::from_be_bytes(message.data[..8].try_into().unwrap()) as usize;
            let i = u64::from_be_bytes(message.data[8..].try_into().unwrap());
            assert_eq!(
                i, next_from[p],
                "each publisher's messages arrive in its order"
            );
            next_from[p] += 1;
        }
        assert_eq!(next_from, [PER_PUBLISHER; 4], "nothing lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_of_a_shared_room_can_leave_it() {
    let broker = Broker::start();
    let (room_a, room_b) = rooms_on_both_cores("shared-");
    for room in [&room_a, &room_b] {
        let first = broker.client(Codec::MsgPack).await;
        let second = broker.client(Codec::MsgPack).await;
        first.subscribe(room).await.unwrap();
        second.subscribe(room).await.unwrap();
        first.unsubscribe(room).await.unwrap();
        second.unsubscribe(room).await.unwrap();
        assert!(matches!(
            second.unsubscribe(room).await,
            Err(roomcast::client::ClientError::Server { code: 104, .. })
        ));
    }
}
