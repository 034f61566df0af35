//! Faults of a cluster, each against real processes: Redis restarted with
//! and without persistence, a roomcast node killed (SIGKILL) while clients
//! publish, a node stalled (SIGSTOP) while the others go on, and a slot of
//! a Redis Cluster moved while a room's publications flow. Each test says
//! what happened to acknowledged and unacknowledged publications.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use common::broker::{self, Broker};
use common::node::NodeProcess;
use common::peer::{room, Peer};
use common::redis::{Cluster, Redis};
use roomcast::protocol::{
    Ack, ClientOp, Codec, IdempotencyKey, Offset, Outcome, ServerEvent, StreamPosition,
};
use roomcast::Config;

const ROOM_STATE_LOST: u16 = 4002;

fn node(redis_url: &str) -> Broker {
    Broker::start_with(Config {
        redis_url: redis_url.to_owned(),
        redis_command_timeout: Duration::from_millis(500),
        history_size: 10_000,
        ..broker::config()
    })
}

fn ack(outcome: Outcome) -> Ack {
    match outcome {
        Outcome::Ack(ack) => ack,
        other => panic!("expected an ack, got {other:?}"),
    }
}

fn keyed(name: &str, data: String) -> ClientOp {
    ClientOp::Publish {
        room: room(name),
        idempotency_key: Some(IdempotencyKey::new(&format!("key-{data}"))),
        data: Bytes::from(data),
    }
}

/// What a subscriber saw: publications, until the connection ended and how.
#[derive(Default)]
struct Seen {
    messages: Vec<(u64, Vec<u8>)>,
    /// The close code, when the server closed the connection.
    closed: Option<Option<u16>>,
}

/// Offsets and the close only: payloads would drown a failure's message.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let offsets: Vec<u64> = self.messages.iter().map(|m| m.0).collect();
        write!(f, "offsets {offsets:?}, closed {:?}", self.closed)
    }
}

/// Reads publications until `until` offset arrives, the connection ends,
/// or `wait` passes without a frame.
async fn watch(peer: &mut Peer, until: u64, wait: Duration, seen: &mut Seen) {
    while seen
        .messages
        .last()
        .is_none_or(|(offset, _)| *offset < until)
    {
        let frame = match peer.ws.next_frame(wait).await {
            Ok(frame) => frame,
            Err(_) => {
                seen.closed.get_or_insert(None);
                return;
            }
        };
        match frame.opcode {
            0x2 => {
                let event = peer.codec.decode_server(&Bytes::from(frame.payload));
                if let Ok(ServerEvent::Message { offset, data, .. }) = event {
                    seen.messages.push((offset.0, data.to_vec()));
                }
            }
            0x8 => {
                seen.closed = Some(frame.close_code());
                return;
            }
            0x9 => peer.ws.send_bytes(&common::ws::pong(&frame.payload)).await,
            _ => {}
        }
    }
}

async fn resume(addr: std::net::SocketAddr, name: &str, from: StreamPosition) -> (Peer, Ack) {
    let mut peer = Peer::connect(addr, Codec::MsgPack).await;
    let answer = ack(peer
        .request(ClientOp::Subscribe {
            room: room(name),
            recover: Some(from),
            join_leave: false,
        })
        .await);
    (peer, answer)
}

/// Offsets exactly once, in order, from 1.
fn assert_contiguous(messages: &[(u64, Vec<u8>)], what: &str) {
    for (n, (offset, _)) in messages.iter().enumerate() {
        assert_eq!(
            *offset,
            n as u64 + 1,
            "{what}: offsets exactly once, in order"
        );
    }
}

async fn publish_acked(peer: &mut Peer, name: &str, range: std::ops::Range<u64>) -> Vec<u64> {
    let mut offsets = Vec::new();
    for n in range {
        offsets.push(
            ack(peer.request(keyed(name, format!("m{n}"))).await)
                .offset
                .0,
        );
    }
    offsets
}

/// Redis dies and comes back: publishes meanwhile are refused with error
/// 110 (never acked), nodes reconnect on their own, and then either
/// nothing acked was lost (append-only file, fsync always) or, without
/// persistence, subscribers are told to resume and learn that they did not
/// recover.
async fn redis_restart(persistent: bool) {
    let args: &[&str] = if persistent {
        &[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]
    } else {
        &["--save", "", "--appendonly", "no"]
    };
    let mut redis = Redis::start_with(args);
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let mut subscriber = Peer::connect(b.addr, Codec::Proto).await;
    let start = ack(subscriber.request(ClientOp::subscribe(room("feed"))).await);
    let mut publisher = Peer::connect(a.addr, Codec::MsgPack).await;
    assert_eq!(
        publish_acked(&mut publisher, "feed", 1..6).await,
        vec![1, 2, 3, 4, 5]
    );
    let mut seen = Seen::default();
    watch(&mut subscriber, 5, Duration::from_secs(5), &mut seen).await;
    assert_contiguous(&seen.messages, "before the outage");

    redis.crash();
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        publisher.request(keyed("feed", "during".into())),
    )
    .await
    .expect("an answer within the command timeout, not a hang");
    assert!(
        matches!(refused, Outcome::Error { code: 110, .. }),
        "a publish Redis cannot store is refused: {refused:?}"
    );
    redis.revive();

    if persistent {
        // Nothing acked was lost: the room goes on in the same epoch.
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            retry_until_acked(&mut publisher, "feed", "after"),
        )
        .await
        .expect("publishing works again once Redis is back");
        assert_eq!(next.offset.0, 6, "the refused publish was never stored");
        watch(&mut subscriber, 6, Duration::from_secs(10), &mut seen).await;
        assert_eq!(seen.closed, None, "the subscriber stayed: nothing was lost");
        assert_contiguous(&seen.messages, "across the restart");
        assert_eq!(seen.messages[5].1, b"after");
        let from = StreamPosition {
            epoch: start.epoch.clone(),
            offset: Offset(2),
        };
        let (_, late) = resume(a.addr, "feed", from).await;
        assert!(late.recovered, "history survived the restart");
    } else {
        // The room's history died with Redis: its subscribers are closed
        // (4002) and, resuming, told they did not recover.
        let seen_up_to = StreamPosition {
            epoch: start.epoch.clone(),
            offset: Offset(5),
        };
        told_and_started_again(&mut subscriber, b.addr, &mut publisher, "feed", seen_up_to).await;
    }
}

/// The room was lost: the subscriber is closed with 4002; resuming on
/// `node` from `seen_up_to` it learns it did not recover, under a new epoch; and
/// the next publication reaches it.
async fn told_and_started_again(
    subscriber: &mut Peer,
    node: std::net::SocketAddr,
    publisher: &mut Peer,
    name: &str,
    seen_up_to: StreamPosition,
) {
    let mut seen = Seen::default();
    watch(subscriber, u64::MAX, Duration::from_secs(15), &mut seen).await;
    assert_eq!(seen.closed, Some(Some(ROOM_STATE_LOST)), "{seen:?}");
    let old_epoch = seen_up_to.epoch.clone();
    let (mut resumed, answer) = resume(node, name, seen_up_to).await;
    assert!(!answer.recovered, "what it saw is gone");
    assert_ne!(
        answer.epoch, old_epoch,
        "a new epoch, so no offset is reused"
    );
    let next = retry_until_acked(publisher, name, "after").await;
    assert_eq!(
        next.offset.0,
        answer.offset.0 + 1,
        "the new history goes on"
    );
    let mut again = Seen::default();
    watch(
        &mut resumed,
        next.offset.0,
        Duration::from_secs(10),
        &mut again,
    )
    .await;
    let last = again.messages.last().map(|m| m.1.clone());
    assert_eq!(last, Some(b"after".to_vec()));
}

/// Publishes one message under one idempotency key until it is acked
/// (nodes may still be reconnecting), for at most 20 s.
async fn retry_until_acked(peer: &mut Peer, name: &str, data: &str) -> Ack {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match peer.request(keyed(name, data.to_owned())).await {
            Outcome::Ack(ack) => return ack,
            Outcome::Error { code: 110, message } => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still refused after 20 s: {message}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_with_an_append_only_file_loses_nothing_that_was_acked() {
    redis_restart(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarting_without_persistence_tells_subscribers_they_did_not_recover() {
    redis_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_clients_resume_on_another_with_every_acked_publication_once() {
    let redis = Redis::start();
    let args = [
        "--history-size",
        "10000",
        "--redis-command-timeout",
        "500ms",
    ];
    let mut doomed = NodeProcess::start(&redis.url(), &args);
    let survivor = NodeProcess::start(&redis.url(), &args);
    let mut subscriber = Peer::connect(doomed.addr, Codec::Proto).await;
    let start = ack(subscriber
        .request(ClientOp::subscribe(room("steady")))
        .await);
    let mut on_doomed = Peer::connect(doomed.addr, Codec::MsgPack).await;
    let mut on_survivor = Peer::connect(survivor.addr, Codec::MsgPack).await;

    // Both nodes' clients publish; the doomed node dies half-way.
    let mut acked: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut doomed_alive = true;
    for n in 0..400u64 {
        let data = format!("s{n}");
        let offset = ack(on_survivor.request(keyed("steady", data.clone())).await)
            .offset
            .0;
        acked.insert(offset, data.into_bytes());
        if n == 200 {
            doomed.kill();
            doomed_alive = false;
        }
        if doomed_alive {
            let data = format!("d{n}");
            if let Outcome::Ack(a) = on_doomed.request(keyed("steady", data.clone())).await {
                acked.insert(a.offset.0, data.into_bytes());
            }
        }
    }
    let last = ack(on_survivor.request(keyed("steady", "last".into())).await)
        .offset
        .0;

    // The subscriber read what reached it before the kill, then resumes.
    let mut seen = Seen::default();
    watch(&mut subscriber, last, Duration::from_secs(2), &mut seen).await;
    assert!(seen.closed.is_some(), "its node died");
    let from = StreamPosition {
        epoch: start.epoch.clone(),
        offset: Offset(seen.messages.last().map_or(0, |m| m.0)),
    };
    let (mut resumed, answer) = resume(survivor.addr, "steady", from).await;
    assert!(answer.recovered, "history on Redis holds what it missed");
    let mut after = Seen::default();
    watch(&mut resumed, last, Duration::from_secs(10), &mut after).await;
    seen.messages.extend(after.messages);
    assert_contiguous(&seen.messages, "before the kill, then resumed");
    assert_eq!(seen.messages.len() as u64, last);
    for (offset, data) in &seen.messages {
        if let Some(expected) = acked.get(offset) {
            assert_eq!(
                data, expected,
                "offset {offset} carries what was acked for it"
            );
        }
    }
    for offset in acked.keys() {
        assert!(*offset <= last, "every acked publication was delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_does_not_slow_the_others_and_its_subscribers_catch_up_or_are_told() {
    // Redis drops a subscriber that falls 64 KB behind for a second, as it
    // would drop a stalled node in production (with larger limits).
    let redis = Redis::start_with(&[
        "--save",
        "",
        "--appendonly",
        "no",
        "--client-output-buffer-limit",
        "pubsub 256kb 64kb 1",
    ]);
    let healthy = node(&redis.url());
    // Its subscriber may take the whole backlog at once when it wakes.
    let stalled = NodeProcess::start(
        &redis.url(),
        &[
            "--history-size",
            "10000",
            "--outbound-max-bytes",
            "33554432",
            "--outbound-max-messages",
            "100000",
        ],
    );
    let mut fast = Peer::connect(healthy.addr, Codec::MsgPack).await;
    let mut slow = Peer::connect(stalled.addr, Codec::MsgPack).await;
    let start = ack(fast.request(ClientOp::subscribe(room("tele"))).await);
    ack(slow.request(ClientOp::subscribe(room("tele"))).await);
    let mut publisher = Peer::connect(healthy.addr, Codec::Proto).await;

    stalled.pause();
    // More than the kernel's socket buffers hold, so Redis sees it stall.
    let (payload, count) = ("x".repeat(2000), 4000u64);
    // The healthy node's subscriber reads all along, as a live viewer does.
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        watch(&mut fast, count, Duration::from_secs(10), &mut seen).await;
        seen
    });
    let mut last = 0;
    for n in 0..count {
        let op = ClientOp::publish(room("tele"), Bytes::from(format!("{n}:{payload}")));
        last = ack(publisher.request(op).await).offset.0;
    }
    let fast_seen = reader.await.expect("the reader");
    assert_eq!(last, count);
    assert_eq!(fast_seen.closed, None, "{fast_seen:?}");
    assert_eq!(
        fast_seen.messages.len() as u64,
        last,
        "the stall slowed no one else"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stalled.resume();

    let mut slow_seen = Seen::default();
    watch(&mut slow, last, Duration::from_secs(10), &mut slow_seen).await;
    if let Some(code) = slow_seen.closed {
        // Told: it resumes and is either recovered or told it was not.
        assert_eq!(code, Some(ROOM_STATE_LOST), "{slow_seen:?}");
        let from = StreamPosition {
            epoch: start.epoch.clone(),
            offset: Offset(slow_seen.messages.last().map_or(0, |m| m.0)),
        };
        let (mut resumed, answer) = resume(stalled.addr, "tele", from).await;
        assert!(answer.recovered, "history still holds all 4000");
        watch(&mut resumed, last, Duration::from_secs(10), &mut slow_seen).await;
    }
    assert_contiguous(&slow_seen.messages, "the stalled node's subscriber");
    assert_eq!(
        slow_seen.messages.len() as u64,
        last,
        "caught up, without a gap"
    );
    // And it did fall out of Redis: Redis dropped its subscription, and the
    // node subscribed again and filled the gap from history.
    let stats =
        common::ws::http_request(stalled.admin, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let counters: serde_json::Value =
        serde_json::from_str(stats.split("\r\n\r\n").nth(1).unwrap_or("{}")).expect("JSON stats");
    assert!(counters["redis_resyncs"].as_u64() >= Some(1), "{counters}");
    assert!(
        counters["redis_gap_fills"].as_u64() >= Some(1),
        "{counters}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_hot_room_s_slot_between_masters_loses_nothing_that_was_acked() {
    let cluster = Cluster::start();
    let (a, b) = (node(&cluster.url()), node(&cluster.url()));
    let name = "hot";
    let slot = roomcast::hooks::redis_slot(name);
    let mut subscriber = Peer::connect(b.addr, Codec::MsgPack).await;
    ack(subscriber.request(ClientOp::subscribe(room(name))).await);
    let mut publisher = Peer::connect(a.addr, Codec::Proto).await;

    let mut acked: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut migration = None;
    for n in 0..300u64 {
        if n == 100 {
            // Moved while the publications go on.
            let ports = cluster.ports();
            migration = Some(tokio::task::spawn_blocking(move || {
                common::redis::migrate_slot(&ports, slot)
            }));
        }
        let data = format!("h{n}");
        let ack = retry_until_acked(&mut publisher, name, &data).await;
        acked.insert(ack.offset.0, data.into_bytes());
    }
    migration.expect("started").await.expect("the slot moved");
    // A few after the move is surely complete.
    for n in 300..320u64 {
        let data = format!("h{n}");
        let ack = retry_until_acked(&mut publisher, name, &data).await;
        acked.insert(ack.offset.0, data.into_bytes());
    }
    let last = *acked.keys().max().expect("publications");
    let mut seen = Seen::default();
    watch(&mut subscriber, last, Duration::from_secs(15), &mut seen).await;
    assert_eq!(seen.closed, None, "{seen:?}");
    assert_contiguous(&seen.messages, "across the slot migration");
    assert_eq!(
        seen.messages.len(),
        acked.len(),
        "each publish exactly once"
    );
    for (offset, data) in &seen.messages {
        assert_eq!(Some(data), acked.get(offset));
    }
}

/// Redis comes back from an older snapshot: the room's offset went back
/// under the same epoch. Going on would hand out offsets the subscribers
/// already saw, with other data, and they would drop the new publications
/// as repeats. The node gives the room a new epoch instead, and its
/// subscribers are told (4002, then `recovered: false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_coming_back_from_an_older_snapshot_is_a_new_epoch_never_a_silent_rewind() {
    let mut redis = Redis::start_with(&["--save", "", "--appendonly", "no"]);
    let (a, b) = (node(&redis.url()), node(&redis.url()));
    let mut subscriber = Peer::connect(b.addr, Codec::MsgPack).await;
    let start = ack(subscriber.request(ClientOp::subscribe(room("snap"))).await);
    let mut publisher = Peer::connect(a.addr, Codec::Proto).await;
    publish_acked(&mut publisher, "snap", 1..6).await;
    assert_eq!(redis.cli(&["save"]), "OK", "a snapshot at offset 5");
    publish_acked(&mut publisher, "snap", 6..9).await;
    let mut seen = Seen::default();
    watch(&mut subscriber, 8, Duration::from_secs(5), &mut seen).await;
    assert_contiguous(&seen.messages, "before the restart");

    redis.crash();
    redis.revive();
    let seen_up_to = StreamPosition {
        epoch: start.epoch.clone(),
        offset: Offset(8),
    };
    told_and_started_again(&mut subscriber, b.addr, &mut publisher, "snap", seen_up_to).await;
}

/// A manual failover of the master that owns a hot room's slot, while the
/// room's publications flow. The demoted master drops its shard channel
/// subscribers without a word fred passes on; the subscriber's node
/// publishes nothing to that slot, so nothing else tells it: its position
/// check finds the room moved on, subscribes again on the new master and
/// fills the gap from the stream the replica had. A manual failover waits
/// for the replica, so nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_of_a_hot_room_s_master_loses_nothing_that_was_acked() {
    let cluster = Cluster::start_with_replicas(1);
    let (a, b) = (node(&cluster.url()), node(&cluster.url()));
    let name = "failover";
    let slot = roomcast::hooks::redis_slot(name);
    let mut subscriber = Peer::connect(b.addr, Codec::MsgPack).await;
    ack(subscriber.request(ClientOp::subscribe(room(name))).await);
    let mut publisher = Peer::connect(a.addr, Codec::Proto).await;
    // The subscriber reads all along, as a live viewer does.
    let reader = tokio::spawn(async move {
        let mut seen = Seen::default();
        watch(&mut subscriber, 260, Duration::from_secs(20), &mut seen).await;
        seen
    });

    let mut acked: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut failover = None;
    for n in 0..260u64 {
        if n == 80 {
            let ports = cluster.ports();
            failover = Some(tokio::task::spawn_blocking(move || {
                common::redis::fail_over(&ports, slot)
            }));
        }
        let data = format!("f{n}");
        let ack = retry_until_acked(&mut publisher, name, &data).await;
        acked.insert(ack.offset.0, data.into_bytes());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    failover
        .expect("started")
        .await
        .expect("the replica took over");
    let seen = reader.await.expect("the reader");
    assert_eq!(seen.closed, None, "{seen:?}");
    assert_contiguous(&seen.messages, "across the failover");
    assert_eq!(
        seen.messages.len(),
        acked.len(),
        "each publish exactly once"
    );
    for (offset, data) in &seen.messages {
        assert_eq!(Some(data), acked.get(offset));
    }
}
