//! Delivery guarantees as a client relies on them: resume after a cut with
//! every offset exactly once and in order, an honest "not recovered" when
//! that is impossible, acknowledged and idempotent publishes, and history
//! pages. Every test runs in both codecs over real sockets.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::broker::{config, rooms_on_both_cores, Broker};
use common::peer::{room, Peer};
use roomcast::config::RoomRules;
use roomcast::protocol::{
    Ack, ClientOp, Codec, ErrorCode, HistoryQuery, IdempotencyKey, Offset, Outcome, ServerEvent,
    StreamPosition,
};
use roomcast::Config;

/// A broker where `ticks.*` rooms keep `size` publications for `ttl`.
fn with_history(size: usize, ttl: &str) -> Config {
    let rules =
        format!(r#"[{{ match = "ticks.*", history_size = {size}, history_ttl = "{ttl}" }}]"#);
    Config {
        rooms: RoomRules::parse(&rules).unwrap(),
        ..config()
    }
}

fn ack(outcome: Outcome) -> Ack {
    match outcome {
        Outcome::Ack(ack) => ack,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn subscribe_from(name: &str, from: Option<StreamPosition>) -> ClientOp {
    ClientOp::Subscribe {
        room: room(name),
        recover: from,
        join_leave: false,
    }
}

fn publish(name: &str, data: &[u8]) -> ClientOp {
    ClientOp::publish(room(name), Bytes::copy_from_slice(data))
}

fn publish_keyed(name: &str, data: &[u8], key: &str) -> ClientOp {
    ClientOp::Publish {
        room: room(name),
        data: Bytes::copy_from_slice(data),
        idempotency_key: Some(IdempotencyKey::new(key)),
    }
}

/// The next delivered message: (offset, data).
async fn message(peer: &mut Peer) -> (u64, Bytes) {
    match peer.event().await {
        Some(ServerEvent::Message { offset, data, .. }) => (offset.0, data),
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A small seeded generator (xorshift64*): the same seed cuts at the same
/// moments, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// A publisher sends `total` publications (their index as 8 bytes) in
/// bursts, while a subscriber is cut at random moments and resumes each time
/// from the last offset it saw. It must end with offsets 1..=total exactly
/// once, in order, each with its own data.
async fn resume_under_fire(broker: Broker, codec: Codec, name: &str, seed: u64, total: u64) {
    let mut subscriber = Peer::connect(broker.addr, codec).await;
    let start = ack(subscriber.request(subscribe_from(name, None)).await);
    assert_eq!(start.offset, Offset(0));
    assert!(
        !start.epoch.0.is_empty(),
        "a subscribe ack carries the epoch"
    );
    // A subscriber that is never cut: when it shares a core with the
    // resuming one, resumes join an active room rather than a new one.
    let mut steady = Peer::connect(broker.addr, codec).await;
    ack(steady.request(subscribe_from(name, None)).await);

    let (addr, room_name) = (broker.addr, name.to_owned());
    let publisher = tokio::spawn(async move {
        let mut peer = Peer::connect(addr, Codec::MsgPack).await;
        for index in 0..total {
            peer.send_with_id(0, publish(&room_name, &index.to_be_bytes()))
                .await;
            // Paced (about 8 per millisecond), so the cuts and resumes
            // happen while publications keep coming.
            if index % 8 == 7 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        peer
    });

    let mut rng = Rng(seed | 1);
    let mut seen = Vec::with_capacity(total as usize);
    let mut until_cut = 1 + rng.below(total / 4);
    let mut cuts = 0;
    while seen.len() < total as usize {
        let (offset, data) = message(&mut subscriber).await;
        assert_eq!(
            &data[..],
            &(offset - 1).to_be_bytes(),
            "offset {offset} carries its own data"
        );
        seen.push(offset);
        until_cut -= 1;
        if until_cut > 0 || seen.len() == total as usize {
            continue;
        }
        // Cut, then resume from the last offset seen. Sometimes the resumed
        // connection is cut again before its acknowledgement is read.
        cuts += 1;
        until_cut = 1 + rng.below(total / 4);
        let from = StreamPosition {
            epoch: start.epoch.clone(),
            offset: Offset(offset),
        };
        subscriber.cut();
        if rng.below(3) == 0 {
            let mut lost = Peer::connect(broker.addr, codec).await;
            lost.send(subscribe_from(name, Some(from.clone()))).await;
            lost.cut();
        }
        subscriber = Peer::connect(broker.addr, codec).await;
        let resumed = ack(subscriber.request(subscribe_from(name, Some(from))).await);
        assert!(
            resumed.recovered,
            "seed {seed}: resume #{cuts} after offset {offset} was not recovered"
        );
        assert_eq!(resumed.epoch, start.epoch);
        assert!(resumed.offset.0 >= offset);
    }
    let expected: Vec<u64> = (1..=total).collect();
    assert!(
        seen == expected,
        "seed {seed}: offsets out of order, missing or repeated after {cuts} cuts"
    );
    assert!(cuts >= 3, "seed {seed}: only {cuts} cuts happened");
    drop(publisher.await.unwrap());
    for expected in 1..=total {
        assert_eq!(message(&mut steady).await.0, expected);
    }
    assert!(broker.server().stats().recoveries >= cuts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_cut_at_random_moments_resumes_with_every_offset_exactly_once() {
    let (home_a, home_b) = rooms_on_both_cores("ticks.fire-");
    for codec in Codec::ALL {
        for seed in 1..=8u64 {
            let name = if seed % 2 == 0 { &home_a } else { &home_b };
            let broker = Broker::start_with(with_history(10_000, "5m"));
            resume_under_fire(broker, codec, name, seed * 7919, 3_000).await;
        }
    }
}

/// The engine that answers late (up to 3 ms) and out of order, within a
/// room and across rooms: the home must still act on each room's answers in
/// the order it asked, so "missed, then live" holds exactly as with an
/// engine that answers at once.
fn slow_engine(seed: u64) -> roomcast::hooks::SlowEngine {
    roomcast::hooks::SlowEngine {
        max_delay: Duration::from_millis(3),
        seed,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_under_fire_holds_when_the_engine_answers_late_and_out_of_order() {
    let (home_a, home_b) = rooms_on_both_cores("ticks.slow-");
    for codec in Codec::ALL {
        for seed in 1..=4u64 {
            let name = if seed % 2 == 0 { &home_a } else { &home_b };
            let broker = Broker::start_slow(with_history(10_000, "5m"), slow_engine(seed));
            resume_under_fire(broker, codec, name, seed * 7919, 2_000).await;
        }
    }
}

fn error_code(outcome: &Outcome) -> Option<u32> {
    match outcome {
        Outcome::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// While the room store cannot be reached, every operation that needs it is
/// refused with error 110 and takes no effect: a publish is not acked and
/// not delivered, and takes no offset; a subscribe does not subscribe. Once
/// the store is back, everything works, and the connections never closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_engine_refuses_with_110_and_nothing_is_half_done() {
    use std::sync::atomic::Ordering;
    let slow = slow_engine(5);
    let unavailable = slow.unavailable.clone();
    let broker = Broker::start_slow(with_history(100, "5m"), slow);
    let (home_a, home_b) = rooms_on_both_cores("ticks.down-");
    for codec in Codec::ALL {
        for name in [&home_a, &home_b] {
            let name = &format!("{name}-{codec:?}");
            let mut subscriber = Peer::connect(broker.addr, codec).await;
            let mut publisher = Peer::connect(broker.addr, codec).await;
            ack(subscriber.request(subscribe_from(name, None)).await);

            unavailable.store(true, Ordering::Release);
            let refused = publisher.request(publish(name, b"lost")).await;
            assert_eq!(error_code(&refused), Some(110), "{refused:?}");
            // A room nobody subscribes to yet, so its home must be asked.
            let fresh = &format!("{name}-fresh");
            let mut newcomer = Peer::connect(broker.addr, codec).await;
            let not_subscribed = newcomer.request(subscribe_from(fresh, None)).await;
            assert_eq!(error_code(&not_subscribed), Some(110), "{not_subscribed:?}");
            let history = ClientOp::History {
                room: room(name),
                query: HistoryQuery::default(),
            };
            let no_history = publisher.request(history.clone()).await;
            assert_eq!(error_code(&no_history), Some(110), "{no_history:?}");

            unavailable.store(false, Ordering::Release);
            assert!(
                broker.server().stats().engine_failures >= 3,
                "every failed engine operation is counted"
            );
            let stored = ack(publisher.request(publish(name, b"kept")).await);
            assert_eq!(
                stored.offset,
                Offset(1),
                "the refused publish took no offset"
            );
            let (offset, data) = message(&mut subscriber).await;
            assert_eq!((offset, &data[..]), (1, &b"kept"[..]));
            // The refused subscribe left nothing behind: subscribing again works.
            ack(newcomer.request(subscribe_from(fresh, None)).await);
            let Outcome::History(page) = publisher.request(history).await else {
                panic!("history answers again")
            };
            assert_eq!(page.publications.len(), 1);
        }
    }
}

/// A store that goes quiet after doing the work: the publisher hears 110
/// (not an ack), retries under the same idempotency key, and is told the
/// publication was stored after all (`duplicate`, the original offset):
/// it is in history once, and the next publication follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_timed_out_is_safe_to_retry_under_its_key() {
    use std::sync::atomic::Ordering;
    let slow = slow_engine(6);
    let timing_out = slow.timing_out.clone();
    let broker = Broker::start_slow(with_history(100, "5m"), slow);
    for codec in Codec::ALL {
        let name = &format!("ticks.quiet-{codec:?}");
        let mut publisher = Peer::connect(broker.addr, codec).await;
        timing_out.store(true, Ordering::Release);
        let timed_out = publisher
            .request(publish_keyed(name, b"order", "k-1"))
            .await;
        assert_eq!(error_code(&timed_out), Some(110), "{timed_out:?}");
        timing_out.store(false, Ordering::Release);
        let retried = ack(publisher
            .request(publish_keyed(name, b"order", "k-1"))
            .await);
        assert_eq!((retried.offset, retried.duplicate), (Offset(1), true));
        let next = ack(publisher.request(publish(name, b"next")).await);
        assert_eq!(next.offset, Offset(2));
        let history = ClientOp::History {
            room: room(name),
            query: HistoryQuery::default(),
        };
        let Outcome::History(page) = publisher.request(history).await else {
            panic!("history answers")
        };
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset.0).collect();
        assert_eq!(offsets, vec![1, 2]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_refused_once_history_no_longer_holds_the_missed_offsets() {
    let broker = Broker::start_with(with_history(10, "5m"));
    for codec in Codec::ALL {
        let name = &format!("ticks.trim-{codec:?}");
        let mut subscriber = Peer::connect(broker.addr, codec).await;
        let start = ack(subscriber.request(subscribe_from(name, None)).await);
        // A room that keeps something keeps its epoch (an unused one that
        // keeps nothing may be forgotten, and come back with a new one).
        let mut publisher = Peer::connect(broker.addr, codec).await;
        ack(publisher.request(publish(name, b"seen")).await);
        assert_eq!(message(&mut subscriber).await.0, 1);
        subscriber.cut();
        for n in 0..15u8 {
            ack(publisher.request(publish(name, &[n])).await);
        }
        // Offsets 7..=16 are kept: a client at 6 is made whole ...
        let mut near = Peer::connect(broker.addr, codec).await;
        let from = |offset| StreamPosition {
            epoch: start.epoch.clone(),
            offset: Offset(offset),
        };
        let resumed = ack(near.request(subscribe_from(name, Some(from(6)))).await);
        assert!(resumed.recovered);
        for expected in 7..=16 {
            assert_eq!(message(&mut near).await.0, expected);
        }
        // ... a client at 5 missed offset 6, which is gone.
        let mut far = Peer::connect(broker.addr, codec).await;
        let refused = ack(far.request(subscribe_from(name, Some(from(5)))).await);
        assert!(
            !refused.recovered,
            "offset 6 was trimmed: recovery must be refused"
        );
        assert_eq!(refused.epoch, start.epoch);
        assert_eq!(
            refused.offset,
            Offset(16),
            "the reply tells where the room is now"
        );
        // A refused client is subscribed from now on, live.
        ack(publisher.request(publish(name, b"live")).await);
        assert_eq!(message(&mut far).await.0, 17);
        assert_eq!(message(&mut near).await.0, 17);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_refused_when_history_expired() {
    let broker = Broker::start_with(with_history(100, "300ms"));
    for codec in Codec::ALL {
        let name = &format!("ticks.ttl-{codec:?}");
        let mut publisher = Peer::connect(broker.addr, codec).await;
        let mut subscriber = Peer::connect(broker.addr, codec).await;
        let start = ack(subscriber.request(subscribe_from(name, None)).await);
        ack(publisher.request(publish(name, b"x")).await);
        subscriber.cut();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let mut late = Peer::connect(broker.addr, codec).await;
        let from = StreamPosition {
            epoch: start.epoch.clone(),
            offset: Offset(0),
        };
        let refused = ack(late.request(subscribe_from(name, Some(from))).await);
        assert!(!refused.recovered, "the only publication expired");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_refused_with_the_new_epoch_after_a_restart_lost_the_history() {
    let first = Broker::start_with(with_history(100, "5m"));
    let addr = first.addr;
    let mut before = Vec::new();
    for codec in Codec::ALL {
        let name = format!("ticks.restart-{codec:?}");
        let mut peer = Peer::connect(addr, codec).await;
        let start = ack(peer.request(subscribe_from(&name, None)).await);
        ack(peer.request(publish(&name, b"before")).await);
        before.push((codec, name, start.epoch));
    }
    first.shutdown().await;
    let second = Broker::start_with(Config {
        listen: addr,
        ..with_history(100, "5m")
    });
    for (codec, name, epoch) in before {
        let mut peer = Peer::connect(second.addr, codec).await;
        let from = StreamPosition {
            epoch: epoch.clone(),
            offset: Offset(1),
        };
        let refused = ack(peer.request(subscribe_from(&name, Some(from))).await);
        assert!(
            !refused.recovered,
            "{codec:?}: a new node has no history to recover from"
        );
        assert_ne!(
            refused.epoch, epoch,
            "the room's epoch changed with the restart"
        );
        assert_eq!(refused.offset, Offset(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publish_with_the_same_idempotency_key_is_delivered_once() {
    let broker = Broker::start_with(with_history(100, "5m"));
    for codec in Codec::ALL {
        let name = &format!("ticks.orders-{codec:?}");
        let mut subscriber = Peer::connect(broker.addr, codec).await;
        ack(subscriber.request(subscribe_from(name, None)).await);
        let mut publisher = Peer::connect(broker.addr, codec).await;
        let first = ack(publisher
            .request(publish_keyed(name, b"buy 1", "order-17"))
            .await);
        assert_eq!((first.offset, first.duplicate), (Offset(1), false));
        // The ack was "lost": the client retries, with the same key.
        let retry = ack(publisher
            .request(publish_keyed(name, b"buy 1", "order-17"))
            .await);
        assert_eq!((retry.offset, retry.duplicate), (Offset(1), true));
        // Another key is another publication; the same key in another room too.
        let other = ack(publisher
            .request(publish_keyed(name, b"buy 2", "order-18"))
            .await);
        assert_eq!((other.offset, other.duplicate), (Offset(2), false));
        let elsewhere = format!("{name}.b");
        let there = ack(publisher
            .request(publish_keyed(&elsewhere, b"x", "order-17"))
            .await);
        assert!(!there.duplicate);
        assert_eq!(
            message(&mut subscriber).await,
            (1, Bytes::from_static(b"buy 1"))
        );
        assert_eq!(
            message(&mut subscriber).await,
            (2, Bytes::from_static(b"buy 2"))
        );
    }
    assert_eq!(broker.server().stats().duplicate_publishes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_publish_is_already_in_history() {
    let broker = Broker::start_with(with_history(100, "5m"));
    for codec in Codec::ALL {
        let name = &format!("ticks.ack-{codec:?}");
        let mut publisher = Peer::connect(broker.addr, codec).await;
        let mut reader = Peer::connect(broker.addr, codec).await;
        for n in 1..=20u64 {
            let acked = ack(publisher.request(publish(name, &n.to_be_bytes())).await);
            assert_eq!(acked.offset, Offset(n));
            let query = HistoryQuery {
                since: Offset(0),
                limit: 1,
                reverse: true,
            };
            let Outcome::History(page) = reader
                .request(ClientOp::History {
                    room: room(name),
                    query,
                })
                .await
            else {
                panic!("expected a history page")
            };
            assert_eq!(
                page.publications[0].offset,
                Offset(n),
                "acked offset {n} is stored"
            );
            assert_eq!(page.position.offset, Offset(n));
        }
    }
}

/// The offsets of one history page (checking each carries its own data).
async fn page(peer: &mut Peer, name: &str, since: u64, limit: u32, reverse: bool) -> Vec<u64> {
    let op = ClientOp::History {
        room: room(name),
        query: HistoryQuery {
            since: Offset(since),
            limit,
            reverse,
        },
    };
    match peer.request(op).await {
        Outcome::History(page) => page
            .publications
            .iter()
            .map(|p| {
                assert_eq!(p.data[..], [p.offset.0 as u8]);
                p.offset.0
            })
            .collect(),
        other => panic!("expected a history page, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_oldest_first_and_newest_first() {
    let broker = Broker::start_with(with_history(100, "5m"));
    for codec in Codec::ALL {
        let name = &format!("ticks.pages-{codec:?}");
        let mut peer = Peer::connect(broker.addr, codec).await;
        for n in 1..=25u8 {
            ack(peer.request(publish(name, &[n])).await);
        }
        assert_eq!(
            page(&mut peer, name, 0, 10, false).await,
            (1..=10).collect::<Vec<_>>()
        );
        assert_eq!(
            page(&mut peer, name, 10, 10, false).await,
            (11..=20).collect::<Vec<_>>()
        );
        assert_eq!(
            page(&mut peer, name, 20, 10, false).await,
            (21..=25).collect::<Vec<_>>()
        );
        assert_eq!(
            page(&mut peer, name, 25, 10, false).await,
            Vec::<u64>::new()
        );
        assert_eq!(
            page(&mut peer, name, 0, 10, true).await,
            (16..=25).rev().collect::<Vec<_>>()
        );
        assert_eq!(
            page(&mut peer, name, 16, 10, true).await,
            (6..=15).rev().collect::<Vec<_>>()
        );
        assert_eq!(
            page(&mut peer, name, 6, 10, true).await,
            (1..=5).rev().collect::<Vec<_>>()
        );
        // A room without history says so.
        let off = ClientOp::History {
            room: room("chat.no-history"),
            query: HistoryQuery::default(),
        };
        match peer.request(off).await {
            Outcome::Error { code, .. } => assert_eq!(code, ErrorCode::NotEnabled.code()),
            other => panic!("expected error 106, got {other:?}"),
        }
    }
}
