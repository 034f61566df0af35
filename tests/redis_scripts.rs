//! The Redis engine's scripts (`src/engine/redis/*.lua`), against real
//! `redis-server` processes. `publish.lua` is one atomic step that
//! sequences a publication under the room's epoch, keeps it in the room's
//! history, remembers its idempotency key and publishes it on the room's
//! shard channel: every node of a cluster will rely on it for one order per
//! room. `follow.lua` gives the positions a node starts following rooms
//! from, `range.lua` the publications that recovery and gap filling need,
//! and `history.lua` a page of history as the memory engine pages it. The engine around them is not built yet (docs/design/cluster.md).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::redis::{cli, Cluster, Redis};

const SCRIPT: &str = include_str!("../src/engine/redis/publish.lua");
const FOLLOW: &str = include_str!("../src/engine/redis/follow.lua");
const RANGE: &str = include_str!("../src/engine/redis/range.lua");
const HISTORY: &str = include_str!("../src/engine/redis/history.lua");
const EPOCH: &str = "e1e2e3e4e5e6e7e8";

/// A room's keys and channel, all under one hash tag.
struct Room {
    meta: String,
    history: String,
    channel: String,
    tag: String,
    name: String,
}

fn room(tag: &str, name: &str) -> Room {
    Room {
        meta: format!("rc:{{{tag}}}:m:{name}"),
        history: format!("rc:{{{tag}}}:s:{name}"),
        channel: format!("rc:{{{tag}}}:c:{name}"),
        tag: tag.to_owned(),
        name: name.to_owned(),
    }
}

/// What the script answered.
#[derive(Debug, PartialEq, Eq)]
struct Published {
    epoch: String,
    offset: u64,
    duplicate: bool,
}

/// Calls the script through `run` (a redis-cli invocation), with the
/// idempotency key `key` and the attempt's `nonce`.
fn publish(
    run: &dyn Fn(&[&str]) -> String,
    room: &Room,
    data: &str,
    key: &str,
    nonce: &str,
    history_size: usize,
) -> Published {
    let args = publish_args(room, data, key, nonce, history_size, EPOCH, &room.channel);
    let out = run(&strs(&args));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{{epoch, offset, duplicate}}: {out:?}");
    Published {
        epoch: lines[0].to_owned(),
        offset: lines[1].parse().expect("an offset"),
        duplicate: lines[2] == "1",
    }
}

/// `EVAL publish.lua` with every argument spelt out: a fresh `epoch` for a
/// room without one, and the `channel` (normally the room's own).
fn publish_args(
    room: &Room,
    data: &str,
    key: &str,
    nonce: &str,
    history_size: usize,
    epoch: &str,
    channel: &str,
) -> Vec<String> {
    let idempotency = format!("rc:{{{}}}:k:{}:{key}", room.tag, room.name);
    let size = history_size.to_string();
    [
        "EVAL",
        SCRIPT,
        "4",
        &room.meta,
        &room.history,
        &idempotency,
        channel,
        data,
        epoch,
        &size,
        "60000",
        "120000",
        "30000",
        nonce,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The ids of the room's history entries, oldest first.
fn history_ids(run: &dyn Fn(&[&str]) -> String, room: &Room) -> Vec<String> {
    run(&["XRANGE", &room.history, "-", "+"])
        .lines()
        .filter(|l| l.ends_with("-0"))
        .map(str::to_owned)
        .collect()
}

/// The channel message the script publishes: the 26-byte header, then the data.
fn message(epoch: &str, offset: u64, data: &str) -> Vec<u8> {
    let mut bytes = vec![0xB1, 1];
    bytes.extend_from_slice(epoch.as_bytes());
    bytes.extend_from_slice(&offset.to_be_bytes());
    bytes.extend_from_slice(data.as_bytes());
    bytes
}

/// A shard subscriber over its own connection, reading RESP by hand: the
/// messages are binary, so no line-based tool would do.
struct Subscriber {
    reader: BufReader<TcpStream>,
}

impl Subscriber {
    fn start(port: u16, channel: &str) -> Subscriber {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        let command = format!(
            "*2\r\n$10\r\nSSUBSCRIBE\r\n${}\r\n{channel}\r\n",
            channel.len()
        );
        stream
            .write_all(command.as_bytes())
            .expect("send SSUBSCRIBE");
        let mut subscriber = Subscriber {
            reader: BufReader::new(stream),
        };
        let confirmation = subscriber.frame().expect("SSUBSCRIBE is confirmed");
        assert_eq!(confirmation[0], b"ssubscribe");
        subscriber
    }

    /// One RESP array of bulk strings and integers (as bytes).
    fn frame(&mut self) -> Option<Vec<Vec<u8>>> {
        let header = self.line()?;
        let count: usize = header.strip_prefix('*')?.parse().ok()?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let item = self.line()?;
            if let Some(len) = item.strip_prefix('$') {
                let len: usize = len.parse().ok()?;
                let mut bytes = vec![0; len + 2];
                self.reader.read_exact(&mut bytes).ok()?;
                bytes.truncate(len);
                items.push(bytes);
            } else {
                items.push(item.into_bytes());
            }
        }
        Some(items)
    }

    fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
            _ => None,
        }
    }

    /// The payload of the next channel message, if one comes within 5 s.
    fn message(&mut self) -> Option<Vec<u8>> {
        let mut frame = self.frame()?;
        assert_eq!(frame[0], b"smessage");
        frame.pop()
    }

    /// Whether nothing arrives for `wait`.
    fn silent_for(&mut self, wait: Duration) -> bool {
        let stream = self.reader.get_ref();
        stream.set_read_timeout(Some(wait)).expect("a read timeout");
        let silent = self.line().is_none();
        let stream = self.reader.get_ref();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("a read timeout");
        silent
    }
}

#[test]
fn offsets_grow_by_one_under_one_epoch_and_history_keeps_exactly_history_size() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let ticks = room("p0", "ticks");
    for n in 1..=5u64 {
        let published = publish(&run, &ticks, &format!("p{n}"), &format!("k{n}"), "a", 3);
        let expected = Published {
            epoch: EPOCH.into(),
            offset: n,
            duplicate: false,
        };
        assert_eq!(published, expected);
    }
    assert_eq!(history_ids(&run, &ticks), vec!["3-0", "4-0", "5-0"]);
    let kept = run(&["XRANGE", &ticks.history, "5-0", "5-0"]);
    assert!(kept.contains("p5"), "{kept}");
    // A room that keeps no history still takes offsets.
    let chat = room("p1", "chat");
    assert_eq!(publish(&run, &chat, "hi", "a", "a", 0).offset, 1);
    assert_eq!(publish(&run, &chat, "hi", "b", "a", 0).offset, 2);
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
fn a_retried_key_is_a_duplicate_but_a_resent_attempt_is_itself() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let orders = room("p2", "orders");
    let mut subscriber = Subscriber::start(redis.port, &orders.channel);
    let first = publish(&run, &orders, "buy", "order-1", "attempt-1", 10);
    assert_eq!((first.offset, first.duplicate), (1, false));
    // The client retries under its key: the first offset, as a duplicate.
    let retry = publish(&run, &orders, "buy", "order-1", "attempt-2", 10);
    assert_eq!((retry.offset, retry.duplicate), (1, true));
    // The client library re-sends the very same attempt after a reconnect:
    // the first offset, and not a duplicate (it is the same publication).
    let resent = publish(&run, &orders, "buy", "order-1", "attempt-1", 10);
    assert_eq!((resent.offset, resent.duplicate), (1, false));
    assert_eq!(history_ids(&run, &orders), vec!["1-0"], "stored once");
    assert_eq!(subscriber.message(), Some(message(EPOCH, 1, "buy")));
    assert!(
        subscriber.silent_for(Duration::from_millis(300)),
        "neither the retry nor the re-send is published again"
    );
    assert_eq!(publish(&run, &orders, "sell", "order-2", "a", 10).offset, 2);
    let key = "rc:{p2}:k:orders:order-1";
    let life: i64 = run(&["PTTL", key]).parse().expect("a ttl");
    assert!(
        life > 0 && life <= 30_000,
        "the key lives for the window: {life}"
    );
}

/// A room whose meta hash was lost (a Redis restart without persistence)
/// starts a new epoch: offsets start again at 1, a stream left over is
/// dropped, and a key seen under the old epoch counts as unseen.
#[test]
fn a_room_that_lost_its_epoch_starts_a_new_one_from_offset_one() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let ticks = room("p3", "ticks");
    publish(&run, &ticks, "old", "k", "a", 10);
    publish(&run, &ticks, "old", "k2", "a", 10);
    run(&["DEL", &ticks.meta]);
    let new_epoch = "f0f1f2f3f4f5f6f7";
    let args = publish_args(&ticks, "new", "k", "b", 10, new_epoch, &ticks.channel);
    let out = run(&strs(&args));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        vec!["f0f1f2f3f4f5f6f7", "1", "0"]
    );
    assert_eq!(
        history_ids(&run, &ticks),
        vec!["1-0"],
        "the old stream is gone"
    );
}

#[test]
fn every_subscriber_of_the_channel_hears_each_publication_once_in_order() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let ticks = room("p4", "ticks");
    let mut subscribers = [
        Subscriber::start(redis.port, &ticks.channel),
        Subscriber::start(redis.port, &ticks.channel),
    ];
    // Offsets up to 12 cover one whose last byte is a newline (10).
    for n in 1..=12u64 {
        publish(
            &run,
            &ticks,
            &format!("tick {n}"),
            &format!("k{n}"),
            "a",
            100,
        );
    }
    for subscriber in &mut subscribers {
        for n in 1..=12u64 {
            let expected = message(EPOCH, n, &format!("tick {n}"));
            assert_eq!(subscriber.message(), Some(expected), "offset {n}");
        }
        assert!(subscriber.silent_for(Duration::from_millis(200)));
    }
}

/// `follow.lua` for `rooms`, each with its fresh epoch: (epoch, offset) each.
fn follow(run: &dyn Fn(&[&str]) -> String, rooms: &[(&Room, &str)]) -> Vec<(String, u64)> {
    let count = (rooms.len() * 2).to_string();
    let mut args = vec!["EVAL", FOLLOW, count.as_str()];
    for (room, _) in rooms {
        args.push(&room.meta);
        args.push(&room.history);
    }
    args.push("120000");
    args.extend(rooms.iter().map(|(_, epoch)| *epoch));
    let out = run(&args);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .map(|pair| (pair[0].to_owned(), pair[1].parse().expect("an offset")))
        .collect()
}

/// `range.lua`: (epoch, last offset, the publications if complete).
fn range(
    run: &dyn Fn(&[&str]) -> String,
    room: &Room,
    from: u64,
    to: u64,
    ttl_ms: u64,
) -> (String, u64, Option<Vec<(u64, String)>>) {
    let (from, to, ttl) = (from.to_string(), to.to_string(), ttl_ms.to_string());
    let args = [
        "EVAL",
        RANGE,
        "2",
        &room.meta,
        &room.history,
        &from,
        &to,
        &ttl,
    ];
    let out = run(&args);
    let mut lines: Vec<&str> = out.lines().collect();
    if lines.len() == 2 {
        // An unknown room's empty epoch: an empty first line, trimmed away.
        lines.insert(0, "");
    }
    assert!(lines.len() >= 3, "{out:?}");
    let last = lines[1].parse().expect("an offset");
    let entries = (lines[2] == "1").then(|| {
        lines[3..]
            .chunks(2)
            .map(|pair| (pair[0].parse().expect("an offset"), pair[1].to_owned()))
            .collect()
    });
    (lines[0].to_owned(), last, entries)
}

#[test]
fn following_a_room_gives_its_position_and_an_epoch_it_keeps() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let (ticks, chat) = (room("p5", "ticks"), room("p5", "chat"));
    let fresh = follow(&run, &[(&ticks, EPOCH), (&chat, "c0c1c2c3c4c5c6c7")]);
    assert_eq!(
        fresh,
        vec![(EPOCH.to_owned(), 0), ("c0c1c2c3c4c5c6c7".to_owned(), 0)]
    );
    for n in 1..=3 {
        publish(&run, &ticks, "x", &format!("k{n}"), "a", 10);
    }
    // Followed again, with other fresh epochs offered: the rooms keep theirs.
    let again = follow(
        &run,
        &[(&ticks, "ffffffffffffffff"), (&chat, "ffffffffffffffff")],
    );
    assert_eq!(
        again,
        vec![(EPOCH.to_owned(), 3), ("c0c1c2c3c4c5c6c7".to_owned(), 0)]
    );
    let ttl: i64 = run(&["PTTL", &chat.meta]).parse().expect("a ttl");
    assert!(ttl > 60_000, "following touches the epoch's expiry: {ttl}");
    // A room whose epoch was lost while its stream stayed: a new epoch,
    // and the stream (of no epoch now) is dropped.
    run(&["DEL", &ticks.meta]);
    let lost = follow(&run, &[(&ticks, "0123456789abcdef")]);
    assert_eq!(lost, vec![("0123456789abcdef".to_owned(), 0)]);
    assert_eq!(run(&["EXISTS", &ticks.history]), "0");
}

#[test]
fn a_range_is_complete_only_while_every_offset_in_it_is_kept_and_fresh() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let ticks = room("p6", "ticks");
    assert_eq!(range(&run, &ticks, 1, 1, 60_000), (String::new(), 0, None));
    for n in 1..=5u64 {
        publish(&run, &ticks, &format!("p{n}"), &format!("k{n}"), "a", 3);
    }
    let kept = vec![
        (3, "p3".to_owned()),
        (4, "p4".to_owned()),
        (5, "p5".to_owned()),
    ];
    assert_eq!(
        range(&run, &ticks, 3, 5, 60_000),
        (EPOCH.to_owned(), 5, Some(kept))
    );
    assert_eq!(
        range(&run, &ticks, 4, 4, 60_000).2,
        Some(vec![(4, "p4".to_owned())])
    );
    assert_eq!(
        range(&run, &ticks, 2, 5, 60_000).2,
        None,
        "offset 2 was trimmed"
    );
    assert_eq!(
        range(&run, &ticks, 6, 5, 60_000).2,
        Some(Vec::new()),
        "nothing missed"
    );
    assert_eq!(
        range(&run, &ticks, 5, 6, 60_000).2,
        None,
        "offset 6 does not exist"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(range(&run, &ticks, 3, 5, 20).2, None, "older than the ttl");
}

/// `history.lua`: the offsets of one page.
fn page(
    run: &dyn Fn(&[&str]) -> String,
    room: &Room,
    since: u64,
    limit: u32,
    reverse: bool,
    ttl_ms: u64,
) -> Vec<u64> {
    let (since, limit, ttl) = (since.to_string(), limit.to_string(), ttl_ms.to_string());
    let reverse = if reverse { "1" } else { "0" };
    let args = [
        "EVAL",
        HISTORY,
        "2",
        &room.meta,
        &room.history,
        &since,
        &limit,
        reverse,
        &ttl,
    ];
    let out = run(&args);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2 && lines.len() % 2 == 0, "{out:?}");
    lines[2..]
        .chunks(2)
        .map(|pair| {
            let offset: u64 = pair[0].parse().expect("an offset");
            assert_eq!(
                pair[1],
                format!("p{offset}"),
                "each offset with its own data"
            );
            offset
        })
        .collect()
}

/// The same pages as the memory engine's own test
/// (`history_pages_oldest_first_after_since_and_newest_first_before_it`),
/// with the page size capped at 4 by the caller as the engine will.
#[test]
fn history_pages_oldest_first_after_since_and_newest_first_before_it() {
    let redis = Redis::start();
    let run = |args: &[&str]| redis.cli(args);
    let log = room("p7", "log");
    for n in 1..=10u64 {
        publish(&run, &log, &format!("p{n}"), &format!("k{n}"), "a", 100);
    }
    let minute = 60_000;
    assert_eq!(page(&run, &log, 0, 3, false, minute), vec![1, 2, 3]);
    assert_eq!(page(&run, &log, 3, 3, false, minute), vec![4, 5, 6]);
    assert_eq!(page(&run, &log, 8, 4, false, minute), vec![9, 10]);
    assert_eq!(page(&run, &log, 0, 4, false, minute), vec![1, 2, 3, 4]);
    assert_eq!(page(&run, &log, 0, 3, true, minute), vec![10, 9, 8]);
    assert_eq!(page(&run, &log, 8, 3, true, minute), vec![7, 6, 5]);
    assert_eq!(page(&run, &log, 2, 3, true, minute), vec![1]);
    assert_eq!(page(&run, &log, 10, 3, false, minute), Vec::<u64>::new());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        page(&run, &log, 0, 4, false, 20),
        Vec::<u64>::new(),
        "all expired"
    );
    assert_eq!(
        page(&run, &log, 0, 4, true, 20),
        Vec::<u64>::new(),
        "all expired"
    );
    // Fresh entries after expired ones: the expired prefix is skipped.
    publish(&run, &log, "p11", "k11", "a", 100);
    assert_eq!(page(&run, &log, 0, 4, false, 20), vec![11]);
    assert_eq!(page(&run, &log, 0, 4, true, 20), vec![11]);
}

/// The port of the master that serves `slot`, from `CLUSTER NODES`.
fn slot_owner(seed: u16, slot: u16) -> u16 {
    let nodes = cli(seed, &["CLUSTER", "NODES"]);
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
/// script runs where the slot lives (redis-cli -c follows the redirect),
/// and a shard subscriber on that master hears it. A key of another slot
/// is refused before anything runs.
#[test]
fn in_a_three_master_cluster_a_room_lives_in_one_slot() {
    let cluster = Cluster::start();
    let seed = cluster.nodes[0].port;
    let port = seed.to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["-c", "-p", port.as_str()];
        all.extend_from_slice(args);
        // A master that has just learnt of the others may still answer
        // CLUSTERDOWN for a moment: ask again, for up to 5 s.
        for _ in 0..50 {
            let output = Command::new("redis-cli")
                .args(&all)
                .output()
                .expect("redis-cli runs");
            let out = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            if !out.starts_with("CLUSTERDOWN") {
                return out;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the cluster stayed down")
    };
    for tag in ["p0", "p42", "p127"] {
        let ticks = room(tag, "ticks");
        let slot = cli(seed, &["CLUSTER", "KEYSLOT", &ticks.meta]);
        for key in [&ticks.history, &ticks.channel] {
            assert_eq!(cli(seed, &["CLUSTER", "KEYSLOT", key]), slot);
        }
        let owner = slot_owner(seed, slot.parse().expect("a slot"));
        let mut subscriber = Subscriber::start(owner, &ticks.channel);
        let published = publish(&run, &ticks, "x", "k", "a", 5);
        assert_eq!(published.offset, 1, "{tag}");
        assert_eq!(history_ids(&run, &ticks), vec!["1-0"]);
        assert_eq!(subscriber.message(), Some(message(EPOCH, 1, "x")), "{tag}");
    }
    // A channel of another slot is refused: nothing half done.
    let ticks = room("p0", "ticks");
    let stray = publish_args(&ticks, "y", "k2", "a", 5, EPOCH, "rc:{p42}:c:ticks");
    let refused = run(&strs(&stray));
    assert!(refused.contains("slot"), "{refused}");
    assert_eq!(history_ids(&run, &ticks), vec!["1-0"]);
}
