//! The Rust client across dropped connections, as an application sees it:
//! it reconnects by itself with backoff, resumes every room where it left
//! off (or says it cannot), queues what is published meanwhile, and never
//! publishes a retried message twice. Every story runs in both codecs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::broker::{config, Broker};
use roomcast::client::{
    Client, ClientError, ClientOptions, DisconnectCause, Event, Message, PublishAck,
};
use roomcast::config::RoomRules;
use roomcast::protocol::{Codec, HistoryQuery, Offset};
use roomcast::Config;

/// The codec `codec` is not: a room's publisher and subscriber speak
/// different ones, so the frame built for each is tested.
fn other(codec: Codec) -> Codec {
    match codec {
        Codec::MsgPack => Codec::Proto,
        Codec::Proto => Codec::MsgPack,
    }
}

/// A broker where `ticks.*` rooms keep their last 1000 publications.
fn with_history() -> Config {
    Config {
        rooms: RoomRules::parse(
            r#"[{ match = "ticks.*", history_size = 1000, history_ttl = "5m" }]"#,
        )
        .unwrap(),
        ..config()
    }
}

/// The same broker again, on the address of one that was shut down: a
/// restart, with a new epoch and empty history.
fn restart_on(addr: SocketAddr) -> Broker {
    Broker::start_with(Config {
        listen: addr,
        ..with_history()
    })
}

/// Short waits between reconnect attempts, so the tests run quickly.
fn impatient() -> ClientOptions {
    ClientOptions {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        ..ClientOptions::default()
    }
}

async fn client(addr: SocketAddr, codec: Codec, options: ClientOptions) -> Client {
    Client::connect_with(addr, codec, options)
        .await
        .expect("client connects")
}

/// The next event, failing the test after 10 s or if the client closed.
async fn event(client: &mut Client) -> Event {
    tokio::time::timeout(Duration::from_secs(10), client.next_event())
        .await
        .expect("an event within 10 s")
        .expect("the client is still open")
}

/// The next message, failing the test on any other event.
async fn message(client: &mut Client) -> Message {
    match event(client).await {
        Event::Message(message) => message,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Waits for the drop the server's restart causes.
async fn disconnected_by_restart(client: &mut Client) {
    match event(client).await {
        Event::Disconnected {
            cause: DisconnectCause::Closed { code: 1012, .. },
            reconnecting: true,
        } => {}
        other => panic!("expected a 1012 close and a reconnect, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_cut_off_by_a_restart_reconnects_by_itself_with_backoff() {
    let first = Broker::start_with(with_history());
    let addr = first.addr;
    let mut subscribers = Vec::new();
    for codec in Codec::ALL {
        let room = format!("ticks.backoff-{codec:?}");
        let subscriber = client(addr, codec, impatient()).await;
        subscriber.subscribe(&room).await.unwrap();
        subscribers.push((codec, room, subscriber));
    }

    first.shutdown().await;
    for (_, room, subscriber) in &mut subscribers {
        disconnected_by_restart(subscriber).await;
        assert_eq!(
            subscriber.history(room, HistoryQuery::default()).await,
            Err(ClientError::Disconnected),
            "reads are not queued: they need a connection"
        );
    }
    // Down long enough for a few attempts to fail.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = restart_on(addr);

    let publisher = second.client(Codec::MsgPack).await;
    for (codec, room, subscriber) in &mut subscribers {
        match event(subscriber).await {
            Event::Reconnected { attempts } => assert!(
                attempts >= 2,
                "{codec:?}: the first attempts found no broker, got {attempts}"
            ),
            other => panic!("{codec:?}: expected a reconnect, got {other:?}"),
        }
        match event(subscriber).await {
            Event::Resubscribed { room: again, .. } => assert_eq!(&again, room),
            other => panic!("{codec:?}: expected the room back, got {other:?}"),
        }
        let sent = publisher
            .publish(room, b"welcome back".to_vec())
            .await
            .unwrap();
        let received = message(subscriber).await;
        assert_eq!(
            (received.offset, &received.data[..]),
            (sent.offset, &b"welcome back"[..])
        );
    }
}

/// One subscriber, three cuts while a publisher keeps going: every offset
/// arrives once, in order, and each resubscribe says nothing was missed.
async fn reconnect_while_publishing(broker: &Broker, codec: Codec) {
    const TOTAL: u32 = 600;
    let room = format!("ticks.steady-{codec:?}");
    let options = ClientOptions {
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        ..ClientOptions::default()
    };
    let mut subscriber = client(broker.addr, codec, options).await;
    let start = subscriber.subscribe(&room).await.unwrap();
    let publisher = client(broker.addr, other(codec), impatient()).await;
    let publishing = tokio::spawn({
        let room = room.clone();
        async move {
            for i in 0..TOTAL {
                publisher
                    .publish_nowait(&room, i.to_be_bytes().to_vec())
                    .await
                    .unwrap();
                if i % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            publisher
        }
    });

    let mut expected = start.offset.next();
    let mut received = 0u32;
    let mut resubscribed = 0;
    while received < TOTAL {
        match event(&mut subscriber).await {
            Event::Message(message) => {
                assert_eq!(message.offset, expected, "{codec:?}: once each, in order");
                assert_eq!(&message.data[..], &received.to_be_bytes()[..]);
                expected = expected.next();
                received += 1;
                if [100, 250, 400].contains(&received) {
                    subscriber.drop_connection_for_test();
                }
            }
            Event::Resubscribed { recovered, .. } => {
                assert!(
                    recovered,
                    "{codec:?}: history holds everything that was missed"
                );
                resubscribed += 1;
            }
            Event::Disconnected { reconnecting, .. } => assert!(reconnecting),
            Event::Reconnected { .. } => {}
            other => panic!("{codec:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(resubscribed, 3, "{codec:?}: one resubscribe per cut");
    publishing.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_reconnects_while_another_keeps_publishing_gets_every_offset_once_in_order(
) {
    let broker = Broker::start_with(with_history());
    for codec in Codec::ALL {
        reconnect_while_publishing(&broker, codec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_that_lost_the_history_the_application_is_told_to_reload() {
    let first = Broker::start_with(with_history());
    let addr = first.addr;
    let mut subscribers = Vec::new();
    for codec in Codec::ALL {
        let room = format!("ticks.restart-{codec:?}");
        let mut subscriber = client(addr, codec, impatient()).await;
        let joined = subscriber.subscribe(&room).await.unwrap();
        let publisher = first.client(codec).await;
        for data in [b"a", b"b", b"c"] {
            publisher.publish(&room, data.to_vec()).await.unwrap();
        }
        for _ in 0..3 {
            message(&mut subscriber).await;
        }
        subscribers.push((codec, room, joined.epoch, subscriber));
    }

    first.shutdown().await;
    let second = restart_on(addr);
    for (codec, room, old_epoch, subscriber) in &mut subscribers {
        disconnected_by_restart(subscriber).await;
        assert!(matches!(event(subscriber).await, Event::Reconnected { .. }));
        match event(subscriber).await {
            Event::Resubscribed {
                room: again,
                recovered,
                position,
            } => {
                assert_eq!(&again, room);
                assert!(
                    !recovered,
                    "{codec:?}: the new node cannot know what was missed"
                );
                assert_ne!(position.epoch, *old_epoch, "{codec:?}: a new epoch");
                assert_eq!(position.offset, Offset(0));
            }
            other => panic!("{codec:?}: expected the room back, got {other:?}"),
        }
        // The new epoch numbers from 1 again: offset 1 is news, not a replay.
        let publisher = second.client(*codec).await;
        publisher.publish(room, b"fresh".to_vec()).await.unwrap();
        let fresh = message(subscriber).await;
        assert_eq!((fresh.offset, &fresh.data[..]), (Offset(1), &b"fresh"[..]));
    }
}

/// Fails the test unless `call` is answered within 10 s.
async fn within_10s<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("answered within 10 s")
}

/// Fails the test unless `call` is answered within a second.
async fn at_once<T>(call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(1), call)
        .await
        .expect("answered at once, not blocked")
}

/// With the broker down: three fire-and-forget publishes and one
/// acknowledged one fill a queue of four; more are refused at once; after
/// the restart all four go out, in order, once the room is subscribed again.
async fn queued_while_disconnected(codec: Codec) {
    let first = Broker::start_with(with_history());
    let addr = first.addr;
    let room = format!("ticks.queued-{codec:?}");
    let options = ClientOptions {
        max_queued_publishes: 4,
        ..impatient()
    };
    let mut client = client(addr, codec, options).await;
    client.subscribe(&room).await.unwrap();

    first.shutdown().await;
    disconnected_by_restart(&mut client).await;
    for data in [b"q0", b"q1", b"q2"] {
        client.publish_nowait(&room, data.to_vec()).await.unwrap();
    }
    let (acknowledged, second) = tokio::join!(client.publish(&room, b"q3".to_vec()), async {
        // q3 took the last place in the queue.
        assert_eq!(
            at_once(client.publish_nowait(&room, b"q4".to_vec())).await,
            Err(ClientError::QueueFull)
        );
        assert_eq!(
            at_once(client.publish(&room, b"q5".to_vec())).await,
            Err(ClientError::QueueFull)
        );
        restart_on(addr)
    });
    assert_eq!(
        acknowledged,
        Ok(PublishAck {
            offset: Offset(4),
            duplicate: false
        }),
        "{codec:?}: the acknowledged publish waited for the new connection"
    );

    assert!(matches!(
        event(&mut client).await,
        Event::Reconnected { .. }
    ));
    match event(&mut client).await {
        Event::Resubscribed { room: again, .. } => assert_eq!(again, room),
        other => panic!("{codec:?}: expected the room back before the queue, got {other:?}"),
    }
    for (offset, data) in [b"q0", b"q1", b"q2", b"q3"].iter().enumerate() {
        let received = message(&mut client).await;
        assert_eq!(
            (received.offset, &received.data[..]),
            (Offset(offset as u64 + 1), &data[..]),
            "{codec:?}: in the order published"
        );
    }
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_made_while_disconnected_wait_in_a_bounded_queue_and_go_out_in_order() {
    for codec in Codec::ALL {
        queued_while_disconnected(codec).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_ack_was_lost_is_retried_under_its_key_and_delivered_once() {
    let broker = Broker::start_with(with_history());
    for codec in Codec::ALL {
        let room = format!("ticks.once-{codec:?}");
        let mut subscriber = broker.client(other(codec)).await;
        subscriber.subscribe(&room).await.unwrap();
        let publisher = client(broker.addr, codec, impatient()).await;

        publisher.lose_next_publish_ack_for_test();
        let (acknowledged, delivered) = tokio::join!(
            within_10s(publisher.publish(&room, b"once".to_vec())),
            async {
                // Published: the subscriber has it. Its ack is lost, and the
                // connection goes before anything else arrives.
                let delivered = message(&mut subscriber).await;
                publisher.drop_connection_for_test();
                delivered
            }
        );
        assert_eq!(&delivered.data[..], b"once");
        assert_eq!(
            acknowledged,
            Ok(PublishAck {
                offset: delivered.offset,
                duplicate: true
            }),
            "{codec:?}: the retry is recognised and answered with the first offset"
        );

        let next = publisher.publish(&room, b"next".to_vec()).await.unwrap();
        assert_eq!(next.offset, delivered.offset.next(), "{codec:?}");
        let received = message(&mut subscriber).await;
        assert_eq!(
            (received.offset, &received.data[..]),
            (next.offset, &b"next"[..]),
            "{codec:?}: the retry was not delivered a second time"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gives_up_after_its_reconnect_attempts_and_says_why() {
    let broker = Broker::start();
    let addr = broker.addr;
    let mut clients = Vec::new();
    for codec in Codec::ALL {
        let options = ClientOptions {
            max_reconnect_attempts: Some(3),
            ..impatient()
        };
        let client = client(addr, codec, options).await;
        client.subscribe("gone").await.unwrap();
        clients.push(client);
    }
    broker.shutdown().await;
    for mut client in clients {
        disconnected_by_restart(&mut client).await;
        let end = tokio::time::timeout(Duration::from_secs(10), client.next_event()).await;
        assert_eq!(
            end,
            Ok(None),
            "the event stream ends after three failed attempts"
        );
        let expected = Err(ClientError::Closed(Some((
            1012,
            "service restart".to_owned(),
        ))));
        assert_eq!(client.publish("gone", b"late".to_vec()).await, expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_ends_the_event_stream_without_reconnecting() {
    let broker = Broker::start();
    for codec in Codec::ALL {
        let mut client = broker.client(codec).await;
        client.subscribe("bye").await.unwrap();
        client.close().await;
        match event(&mut client).await {
            Event::Disconnected {
                cause: DisconnectCause::Closed { code: 1000, .. },
                reconnecting: false,
            } => {}
            other => panic!("{codec:?}: expected the close echo, got {other:?}"),
        }
        assert_eq!(client.next_event().await, None);
        assert!(matches!(
            client.subscribe("bye").await,
            Err(ClientError::Closed(_))
        ));
    }
}
