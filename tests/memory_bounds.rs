//! What a connection's subscriptions may keep alive. A subscription is worth
//! a room name and a few table entries, never the message that asked for it:
//! a client that pads each subscribe with ignored keys must not be able to
//! pin `max_rooms_per_connection` x `max_message_size` of the broker's heap.
//!
//! The heap is measured with `stats_alloc`'s counting wrapper around the
//! system allocator, in this test binary only (the broker runs in-process),
//! so the figure is the bytes live in the whole process, before and after.

mod common;

use std::alloc::System;
use std::time::Duration;

use common::broker::{config, Broker};
use common::msgpack::{bin, map, text, uint};
use common::ws::RawWs;
use roomcast::protocol::{Codec, ServerEvent};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated and not yet freed, in the whole process.
fn live() -> isize {
    // A reallocation is already counted in these two, as the growth or shrink.
    let stats = ALLOCATOR.stats();
    stats.bytes_allocated as isize - stats.bytes_deallocated as isize
}

const ROOMS: usize = 64;
const PADDING: usize = 60 * 1024;

/// `{"id": id, "subscribe": {"room": room}, "padding": <PADDING bytes>}`:
/// the padding is an unknown key, which the broker ignores.
fn padded_subscribe(id: u64, room: &str) -> Vec<u8> {
    map([
        ("id", uint(id)),
        ("subscribe", map([("room", text(room))])),
        ("padding", bin(&vec![0x5a; PADDING])),
    ])
    .to_bytes()
}

async fn subscribe(ws: &mut RawWs, id: u64, room: &str) {
    ws.send_binary(&padded_subscribe(id, room)).await;
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.read_binary())
        .await
        .expect("an answer in time")
        .expect("the connection stays open");
    let event = Codec::MsgPack
        .decode_server(&bytes::Bytes::from(reply))
        .expect("a server envelope");
    assert!(
        matches!(&event, ServerEvent::Reply(reply) if reply.id.0 == id),
        "{event:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn padded_subscribes_keep_only_their_room_names_alive() {
    let broker = Broker::start_with(roomcast::Config {
        workers: 1,
        max_message_size: 64 * 1024,
        max_rooms_per_connection: ROOMS + 1,
        ..config()
    });
    let mut ws = RawWs::connect(broker.addr, "").await;
    // One subscribe first, so the tables the later ones fill already exist.
    subscribe(&mut ws, 1, "warm.up").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = live();
    for n in 0..ROOMS {
        subscribe(&mut ws, n as u64 + 2, &format!("pinned.{n}")).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let kept = live() - before;
    let per_room = kept / ROOMS as isize;
    println!("{ROOMS} padded subscribes keep {kept} bytes live: {per_room} per room");
    // A room's real cost is a name and a few table entries: well under
    // 4 KiB. Pinning the received message would cost PADDING (60 KiB) each.
    assert!(
        per_room < 4 * 1024,
        "each subscription keeps {per_room} bytes alive (padding was {PADDING})"
    );
    drop(ws);
    broker.shutdown().await;
}
