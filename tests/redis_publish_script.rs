//! The Redis engine's publish script (`src/engine/redis/publish.lua`),
//! against real `redis-server` processes: one atomic step that sequences a
//! publication, keeps it in the room's history, remembers its idempotency
//! key and publishes it on the room's shard channel. This is the part of the
//! cluster engine (issue 10) that every node relies on for one order per
//! room; the engine itself is not built yet.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::redis::{Cluster, Redis};

const SCRIPT: &str = include_str!("../src/engine/redis/publish.lua");

/// A room's keys and channel, all under one hash tag.
struct Room {
    meta: String,
    history: String,
    channel: String,
    tag: String,
}

fn room(tag: &str, name: &str) -> Room {
    Room {
        meta: format!("{{{tag}}}:m:{name}"),
        history: format!("{{{tag}}}:h:{name}"),
        channel: format!("{{{tag}}}:c:{name}"),
        tag: tag.to_owned(),
    }
}

/// Calls the script with `run` (a redis-cli invocation): returns (epoch,
/// offset, duplicate).
fn publish(
    run: &dyn Fn(&[&str]) -> String,
    room: &Room,
    data: &str,
    key: Option<&str>,
    history_size: usize,
) -> (String, u64, bool) {
    let idempotency = match key {
        Some(key) => format!("{{{}}}:k:{key}", room.tag),
        None => room.meta.clone(),
    };
    let size = history_size.to_string();
    let args = [
        "EVAL",
        SCRIPT,
        "3",
        &room.meta,
        &room.history,
        &idempotency,
        &room.channel,
        data,
        &size,
        "60000",
        "120000",
        "30000",
        "e1e2e3e4e5e6e7e8",
        if key.is_some() { "1" } else { "0" },
    ];
    let out = run(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "the script answers {{epoch, offset, duplicate}}: {out:?}"
    );
    let offset = lines[1].parse().expect("an offset");
    (lines[0].to_owned(), offset, lines[2] == "1")
}

/// The ids of the room's history entries, oldest first.
fn history_ids(run: &dyn Fn(&[&str]) -> String, room: &Room) -> Vec<String> {
    run(&["XRANGE", &room.history, "-", "+"])
        .lines()
        .filter(|l| l.ends_with("-0"))
        .map(str::to_owned)
        .collect()
}

/// A `redis-cli SSUBSCRIBE` process; its lines arrive on a channel.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(port: u16, channel: &str) -> Subscriber {
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "SSUBSCRIBE", channel])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli runs");
        let stdout = child.stdout.take().expect("its output");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    return;
                }
            }
        });
        let subscriber = Subscriber { child, lines };
        // "ssubscribe", the channel, the count: subscribed from here on.
        for _ in 0..3 {
            subscriber.next().expect("the subscription is confirmed");
        }
        subscriber
    }

    fn next(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// The next channel message's payload.
    fn message(&self) -> Option<String> {
        loop {
            if self.next()? == "smessage" {
                self.next()?; // the channel
                return self.next();
            }
        }
    }

    /// Whether another line arrives within `wait`.
    fn silent_for(&self, wait: Duration) -> bool {
        self.lines.recv_timeout(wait).is_err()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn offsets_grow_by_one_under_one_epoch_and_history_keeps_exactly_history_size() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let ticks = room("rc:7", "ticks");
    let mut epochs = Vec::new();
    for n in 1..=5u64 {
        let (epoch, offset, duplicate) = publish(&run, &ticks, &format!("p{n}"), None, 3);
        assert_eq!((offset, duplicate), (n, false));
        epochs.push(epoch);
    }
    epochs.dedup();
    assert_eq!(
        epochs,
        vec!["e1e2e3e4e5e6e7e8"],
        "one epoch, made by the first"
    );
    assert_eq!(history_ids(&run, &ticks), vec!["3-0", "4-0", "5-0"]);
    let kept = run(&["XRANGE", &ticks.history, "5-0", "5-0"]);
    assert!(kept.contains("p5"), "{kept}");
    // A room that keeps no history still takes offsets.
    let chat = room("rc:9", "chat");
    assert_eq!(publish(&run, &chat, "hi", None, 0).1, 1);
    assert_eq!(publish(&run, &chat, "hi", None, 0).1, 2);
    assert_eq!(run(&["EXISTS", &chat.history]), "0");
    // The epoch outlives the history: the meta key expires later.
    let meta_ttl: i64 = run(&["PTTL", &ticks.meta]).parse().expect("a ttl");
    let history_ttl: i64 = run(&["PTTL", &ticks.history]).parse().expect("a ttl");
    assert!(
        meta_ttl > history_ttl,
        "meta {meta_ttl} ms, history {history_ttl} ms"
    );
}

#[test]
fn a_retried_key_returns_the_first_offset_and_publishes_nothing() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let orders = room("rc:1", "orders");
    let subscriber = Subscriber::start(redis.port, &orders.channel);
    let first = publish(&run, &orders, "buy", Some("k-1"), 10);
    let retry = publish(&run, &orders, "buy", Some("k-1"), 10);
    assert_eq!((first.1, first.2), (1, false));
    assert_eq!(
        (retry.1, retry.2),
        (1, true),
        "the first offset, as a duplicate"
    );
    assert_eq!(history_ids(&run, &orders), vec!["1-0"], "stored once");
    assert_eq!(
        subscriber.message().as_deref(),
        Some("e1e2e3e4e5e6e7e8:1:buy")
    );
    assert!(
        subscriber.silent_for(Duration::from_millis(300)),
        "a duplicate is not published again"
    );
    let next = publish(&run, &orders, "sell", Some("k-2"), 10);
    assert_eq!(next.1, 2);
    let window: i64 = run(&["PTTL", "{rc:1}:k:k-1"]).parse().expect("a ttl");
    assert!(
        window > 0 && window <= 30_000,
        "the key lives for the window: {window}"
    );
}

#[test]
fn every_subscriber_of_the_channel_hears_each_publication_once_with_its_epoch_and_offset() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let ticks = room("rc:3", "ticks");
    let subscribers = [
        Subscriber::start(redis.port, &ticks.channel),
        Subscriber::start(redis.port, &ticks.channel),
    ];
    for n in 1..=20u64 {
        publish(&run, &ticks, &format!("tick {n}: a:b"), None, 100);
    }
    for subscriber in &subscribers {
        for n in 1..=20u64 {
            let expected = format!("e1e2e3e4e5e6e7e8:{n}:tick {n}: a:b");
            assert_eq!(subscriber.message(), Some(expected));
        }
        assert!(subscriber.silent_for(Duration::from_millis(200)));
    }
}

/// The port of the master that serves `slot`, from `CLUSTER NODES`.
fn slot_owner(seed: u16, slot: u16) -> u16 {
    let nodes = common::redis::cli(seed, &["CLUSTER", "NODES"]);
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(port) = fields
            .get(1)
            .and_then(|addr| addr.split('@').next())
            .and_then(|addr| addr.rsplit(':').next())
            .and_then(|port| port.parse().ok())
        else {
            continue;
        };
        for range in fields.iter().skip(8) {
            let (low, high) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(low), Ok(high)) = (low.parse::<u16>(), high.parse::<u16>()) {
                if (low..=high).contains(&slot) {
                    return port;
                }
            }
        }
    }
    panic!("no master serves slot {slot}: {nodes}")
}

/// In a 3-master cluster the room's keys and channel share one slot: the
/// script runs where the slot lives (redis-cli -c follows the redirect) with
/// no CROSSSLOT error, and a shard subscriber on that master hears it.
#[test]
fn in_a_three_master_cluster_a_room_lives_in_one_slot() {
    let cluster = Cluster::start();
    let seed = cluster.nodes[0].port;
    for tag in ["rc:0", "rc:42", "rc:127"] {
        let ticks = room(tag, "ticks");
        let slot = common::redis::cli(seed, &["CLUSTER", "KEYSLOT", &ticks.meta]);
        for key in [&ticks.history, &ticks.channel] {
            assert_eq!(common::redis::cli(seed, &["CLUSTER", "KEYSLOT", key]), slot);
        }
        let slot: u16 = slot.parse().expect("a slot");
        let owner = slot_owner(seed, slot);
        let subscriber = Subscriber::start(owner, &ticks.channel);
        let port = seed.to_string();
        let run = |args: &[&str]| {
            let mut all = vec!["-c", "-p", port.as_str()];
            all.extend_from_slice(args);
            let output = Command::new("redis-cli")
                .args(&all)
                .output()
                .expect("redis-cli runs");
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        };
        let (_, offset, _) = publish(&run, &ticks, "x", Some("k"), 5);
        assert_eq!(offset, 1, "{tag}");
        assert_eq!(history_ids(&run, &ticks), vec!["1-0"]);
        assert_eq!(
            subscriber.message().as_deref(),
            Some("e1e2e3e4e5e6e7e8:1:x"),
            "{tag}"
        );
    }
}
