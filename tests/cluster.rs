//! Several roomcast nodes on one real Redis behave as one broker: a
//! publication to a room reaches its subscribers on every node, in the one
//! order Redis gave it, with history, recovery, idempotency and presence
//! shared across nodes. Redis is a real `redis-server` (standalone, and a
//! 3-master Redis Cluster); the nodes are real brokers on real sockets.
//! The faults (Redis restarts, a node killed or stalled) are in
//! tests/cluster_faults.rs.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::broker::{self, Broker};
use common::peer::{room, Peer};
use common::redis::{Cluster, Redis};
use roomcast::protocol::{
    Ack, ClientOp, Codec, HistoryQuery, IdempotencyKey, Outcome, ServerEvent, StreamPosition,
};
use roomcast::Config;

/// A node of the cluster on `redis_url`.
fn node(redis_url: &str) -> Broker {
    Broker::start_with(Config {
        redis_url: redis_url.to_owned(),
        history_size: 1000,
        presence: true,
        join_leave: true,
        ..broker::config()
    })
}

fn ack(outcome: Outcome) -> Ack {
    match outcome {
        Outcome::Ack(ack) => ack,
        other => panic!("expected an ack, got {other:?}"),
    }
}

async fn subscribe(peer: &mut Peer, name: &str) -> Ack {
    ack(peer.request(ClientOp::subscribe(room(name))).await)
}

/// The next publication a peer receives: (offset, data).
async fn message(peer: &mut Peer) -> (u64, Vec<u8>) {
    loop {
        match peer.event().await {
            Some(ServerEvent::Message { offset, data, .. }) => return (offset.0, data.to_vec()),
            Some(ServerEvent::Presence { .. }) => continue,
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// Sends `count` publishes back to back without waiting, then reads their
/// acks: the offsets each was given, in the order they were sent.
async fn publish_pipelined(peer: &mut Peer, name: &str, count: usize, tag: &str) -> Vec<u64> {
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let data = Bytes::from(format!("{tag}-{n}"));
        ids.push(peer.send(ClientOp::publish(room(name), data)).await);
    }
    let mut offsets = vec![0; count];
    let mut acked = 0;
    while acked < count {
        match peer.event().await {
            Some(ServerEvent::Reply(reply)) => {
                let at = ids
                    .iter()
                    .position(|&id| id == reply.id.0)
                    .expect("a reply to a publish we sent");
                offsets[at] = ack(reply.outcome).offset.0;
                acked += 1;
            }
            Some(_) => {}
            None => panic!("connection ended after {acked} acks"),
        }
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_on_one_node_reaches_subscribers_on_every_node_in_one_order() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    for codec in [Codec::MsgPack, Codec::Proto] {
        let name = format!("ticks-{codec:?}");
        let mut on_a = Peer::connect(a.addr, codec).await;
        let mut on_b = Peer::connect(b.addr, codec).await;
        let start_a = subscribe(&mut on_a, &name).await;
        let start_b = subscribe(&mut on_b, &name).await;
        assert_eq!(
            start_a.epoch, start_b.epoch,
            "one room, one epoch, on both nodes"
        );
        assert_eq!(start_a.offset, start_b.offset);

        let mut publisher = Peer::connect(a.addr, codec).await;
        let offsets = publish_pipelined(&mut publisher, &name, 300, "a").await;
        let expected: Vec<u64> = (1..=300).collect();
        assert_eq!(
            offsets, expected,
            "acks come in send order, offsets in send order"
        );
        for subscriber in [&mut on_a, &mut on_b] {
            for n in 0..300 {
                let (offset, data) = message(subscriber).await;
                assert_eq!(offset, n + 1);
                assert_eq!(data, format!("a-{n}").into_bytes());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_publishing_to_one_room_at_once_are_seen_in_the_same_order_everywhere() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let mut watchers = Vec::new();
    for addr in [a.addr, a.addr, b.addr, b.addr] {
        let mut peer = Peer::connect(addr, Codec::MsgPack).await;
        subscribe(&mut peer, "race").await;
        watchers.push(peer);
    }
    let (mut from_a, mut from_b) = (
        Peer::connect(a.addr, Codec::MsgPack).await,
        Peer::connect(b.addr, Codec::Proto).await,
    );
    let (acks_a, acks_b) = tokio::join!(
        publish_pipelined(&mut from_a, "race", 500, "a"),
        publish_pipelined(&mut from_b, "race", 500, "b"),
    );
    let mut all: Vec<u64> = acks_a.iter().chain(&acks_b).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=1000).collect::<Vec<u64>>(),
        "every publish got its own offset"
    );
    assert!(
        acks_a.windows(2).all(|w| w[0] < w[1]),
        "one node's publishes keep their order"
    );
    assert!(acks_b.windows(2).all(|w| w[0] < w[1]));

    let mut sequences = Vec::new();
    for watcher in &mut watchers {
        let mut seen = Vec::with_capacity(1000);
        for _ in 0..1000 {
            seen.push(message(watcher).await);
        }
        sequences.push(seen);
    }
    let offsets: Vec<u64> = sequences[0].iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (1..=1000).collect::<Vec<u64>>());
    for other in &sequences[1..] {
        assert_eq!(
            other, &sequences[0],
            "every subscriber on every node saw one sequence"
        );
    }
    // And each offset carries what its publisher was acked for.
    for (n, offset) in acks_a.iter().enumerate() {
        assert_eq!(
            sequences[0][*offset as usize - 1].1,
            format!("a-{n}").into_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_with_every_missed_publication_exactly_once() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let mut subscriber = Peer::connect(a.addr, Codec::Proto).await;
    let start = subscribe(&mut subscriber, "orders").await;
    let mut publisher = Peer::connect(b.addr, Codec::MsgPack).await;
    publish_pipelined(&mut publisher, "orders", 10, "o").await;
    for n in 1..=10 {
        assert_eq!(message(&mut subscriber).await.0, n);
    }
    let seen = StreamPosition {
        epoch: start.epoch.clone(),
        offset: roomcast::protocol::Offset(10),
    };
    subscriber.cut();
    // Missed while away.
    publish_pipelined(&mut publisher, "orders", 15, "p").await;

    let mut resumed = Peer::connect(b.addr, Codec::Proto).await;
    let answer = ack(resumed
        .request(ClientOp::Subscribe {
            room: room("orders"),
            recover: Some(seen),
            join_leave: false,
        })
        .await);
    assert!(
        answer.recovered,
        "history on Redis holds every missed publication"
    );
    assert_eq!(answer.epoch, start.epoch);
    publish_pipelined(&mut publisher, "orders", 5, "q").await;
    for n in 11..=30 {
        let (offset, data) = message(&mut resumed).await;
        assert_eq!(offset, n, "missed, then live: exactly once, in order");
        let expected = if n <= 25 {
            format!("p-{}", n - 11)
        } else {
            format!("q-{}", n - 26)
        };
        assert_eq!(data, expected.into_bytes());
    }

    let stale = StreamPosition {
        epoch: roomcast::protocol::Epoch("0000000000000000".into()),
        offset: roomcast::protocol::Offset(3),
    };
    let mut lost = Peer::connect(a.addr, Codec::MsgPack).await;
    let refused = ack(lost
        .request(ClientOp::Subscribe {
            room: room("orders"),
            recover: Some(stale),
            join_leave: false,
        })
        .await);
    assert!(!refused.recovered, "another epoch cannot be recovered");
    assert_eq!(refused.offset.0, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_idempotency_and_presence_are_shared_by_every_node() {
    let redis = Redis::start();
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let mut on_a = Peer::connect(a.addr, Codec::MsgPack).await;
    let mut on_b = Peer::connect(b.addr, Codec::Proto).await;
    let keyed = |data: &'static str| ClientOp::Publish {
        room: room("pay"),
        data: Bytes::from_static(data.as_bytes()),
        idempotency_key: Some(IdempotencyKey::new("order-17")),
    };
    let first = ack(on_a.request(keyed("first")).await);
    let retry = ack(on_b.request(keyed("retry")).await);
    assert!(!first.duplicate);
    assert!(retry.duplicate, "a retry on another node is recognised");
    assert_eq!(retry.offset, first.offset);
    ack(on_b
        .request(ClientOp::publish(
            room("pay"),
            Bytes::from_static(b"second"),
        ))
        .await);

    let page = on_b
        .request(ClientOp::History {
            room: room("pay"),
            query: HistoryQuery::default(),
        })
        .await;
    let Outcome::History(page) = page else {
        panic!("{page:?}")
    };
    let data: Vec<&[u8]> = page.publications.iter().map(|p| &p.data[..]).collect();
    assert_eq!(data, vec![&b"first"[..], &b"second"[..]]);

    // A watcher on A hears B's subscriber join, then leave.
    let watch = ClientOp::Subscribe {
        room: room("lobby"),
        recover: None,
        join_leave: true,
    };
    ack(on_a.request(watch).await);
    subscribe(&mut on_b, "lobby").await;
    let joined = tokio::time::timeout(Duration::from_secs(5), on_a.event()).await;
    assert!(
        matches!(joined, Ok(Some(ServerEvent::Presence { .. }))),
        "{joined:?}"
    );
    let who = on_a
        .request(ClientOp::Presence {
            room: room("lobby"),
        })
        .await;
    let Outcome::Presence(clients) = who else {
        panic!("{who:?}")
    };
    assert_eq!(clients.len(), 2, "both nodes' subscribers: {clients:?}");
    on_b.cut();
    let left = tokio::time::timeout(Duration::from_secs(5), on_a.event()).await;
    assert!(
        matches!(left, Ok(Some(ServerEvent::Presence { .. }))),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_with_sharded_pub_sub_gives_the_same_guarantees() {
    let cluster = Cluster::start();
    let (a, b) = (node(&cluster.url()), node(&cluster.url()));
    // Rooms over many slots, so every master owns some.
    let names: Vec<String> = (0..12).map(|n| format!("sensor-{n}")).collect();
    let mut watchers = Vec::new();
    for name in &names {
        let mut peer = Peer::connect(b.addr, Codec::MsgPack).await;
        subscribe(&mut peer, name).await;
        watchers.push(peer);
    }
    let mut publisher = Peer::connect(a.addr, Codec::Proto).await;
    for name in &names {
        let offsets = publish_pipelined(&mut publisher, name, 20, name).await;
        assert_eq!(offsets, (1..=20).collect::<Vec<u64>>());
    }
    for (name, watcher) in names.iter().zip(&mut watchers) {
        for n in 0..20 {
            let (offset, data) = message(watcher).await;
            assert_eq!(offset, n + 1);
            assert_eq!(data, format!("{name}-{n}").into_bytes());
        }
    }
}

#[test]
fn a_node_that_cannot_reach_redis_does_not_start_and_names_the_setting() {
    let port = common::redis::free_port();
    let config = Config {
        redis_url: format!("redis://127.0.0.1:{port}"),
        redis_command_timeout: Duration::from_millis(200),
        ..broker::config()
    };
    let error = roomcast::Server::start(config)
        .err()
        .expect("no Redis, no start")
        .to_string();
    assert!(error.contains("redis_url=redis://127.0.0.1:"), "{error}");
}

/// A server that speaks just enough RESP to say it is Redis 6.2.
fn old_redis() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut line = String::new();
                // Each command: `*N`, then N pairs of `$len` and the argument.
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let count: usize = line.trim_start_matches('*').trim().parse().unwrap_or(0);
                    let mut words = Vec::new();
                    for _ in 0..count * 2 {
                        line.clear();
                        let _ = reader.read_line(&mut line);
                        words.push(line.trim().to_owned());
                    }
                    let command = words.get(1).map(|w| w.to_ascii_uppercase());
                    let answer = if command.as_deref() == Some("INFO") {
                        let info = "# Server\r\nredis_version:6.2.0\r\n";
                        format!("${}\r\n{info}\r\n", info.len())
                    } else {
                        "+OK\r\n".to_owned()
                    };
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    port
}

#[test]
fn a_redis_older_than_7_is_refused_with_its_version() {
    let config = Config {
        redis_url: format!("redis://127.0.0.1:{}", old_redis()),
        ..broker::config()
    };
    let error = roomcast::Server::start(config)
        .err()
        .expect("Redis 6.2 has no sharded pub/sub")
        .to_string();
    assert!(
        error.contains("is Redis 6.2.0; roomcast needs 7.0 or newer"),
        "{error}"
    );
}

/// With one worker every room is homed on the core of the connection that
/// publishes, so the engine is started from the connection's task rather
/// than from the core's driver. The driver must still be woken when Redis
/// answers: before that was so, each such publish waited for an unrelated
/// wake-up (the once-a-second sweep). A liveness bound, not a benchmark:
/// 100 publishes take well under a second when nothing waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_homed_on_the_publisher_s_own_core_is_answered_without_waiting_for_a_tick() {
    let redis = Redis::start();
    let single = Broker::start_with(Config {
        redis_url: redis.url(),
        workers: 1,
        ..broker::config()
    });
    let mut publisher = Peer::connect(single.addr, Codec::MsgPack).await;
    let sequential = async {
        for n in 0..100 {
            let op = ClientOp::publish(room("solo"), Bytes::from(format!("{n}")));
            assert_eq!(ack(publisher.request(op).await).offset.0, n + 1);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), sequential)
        .await
        .expect(
            "100 sequential publishes answered within 30 s (each would wait ~1 s for the sweep)",
        );
}
