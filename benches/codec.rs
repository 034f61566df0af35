//! Envelope and frame codec micro-benchmarks, for both codecs
//! (`roomcast.v1.msgpack` and `roomcast.v1.proto`) and payloads of 16 B,
//! 128 B, 1 KiB and 16 KiB:
//!
//! * `decode_request`: a client's publish envelope, as the session decodes
//!   it (zero-copy: room and payload stay slices of the received message);
//! * `encode_request`: the same envelope, as the Rust client encodes it;
//! * `frame_message`: the outgoing delivery frame (WebSocket header plus
//!   envelope), built once per publication and codec on the room's home
//!   core ([`roomcast::protocol::frame::message`]);
//! * `decode_server`: that delivery envelope, as the Rust client decodes it.
//!
//! Throughput is payload bytes per second; the time per iteration is the
//! time per envelope.
//!
//! Run: `cargo bench --bench codec` (on a shared machine, shorter:
//! `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use roomcast::protocol::{frame, ClientOp, ClientRequest, Codec, Offset, RequestId, RoomName};

/// The allocator the `roomcast` binary uses, so allocation costs match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Payload sizes: a tick, a chat line, a small document, a large one.
const PAYLOAD_SIZES: [usize; 4] = [16, 128, 1024, 16 * 1024];

/// A room name of typical length.
const ROOM: &str = "market.ticks.btc-usd";

fn room() -> RoomName {
    RoomName::new(ROOM).expect("a valid room name")
}

fn payload(len: usize) -> Bytes {
    Bytes::from((0..len).map(|i| i as u8).collect::<Vec<u8>>())
}

fn publish(len: usize) -> ClientRequest {
    ClientRequest {
        id: RequestId(42),
        op: ClientOp::publish(room(), payload(len)),
    }
}

/// A benchmark id such as `msgpack/128`.
fn id(codec: Codec, len: usize) -> BenchmarkId {
    let name = match codec {
        Codec::MsgPack => "msgpack",
        Codec::Proto => "proto",
    };
    BenchmarkId::new(name, len)
}

fn decode_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_request");
    for codec in Codec::ALL {
        for len in PAYLOAD_SIZES {
            let envelope = Bytes::from(codec.encode_request(&publish(len)));
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(id(codec, len), &envelope, |b, envelope| {
                b.iter(|| codec.decode_request(black_box(envelope)))
            });
        }
    }
    group.finish();
}

fn encode_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_request");
    for codec in Codec::ALL {
        for len in PAYLOAD_SIZES {
            let request = publish(len);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(id(codec, len), &request, |b, request| {
                b.iter(|| codec.encode_request(black_box(request)))
            });
        }
    }
    group.finish();
}

fn frame_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_message");
    let room = room();
    for codec in Codec::ALL {
        for len in PAYLOAD_SIZES {
            let data = payload(len);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(id(codec, len), &data, |b, data| {
                b.iter(|| frame::message(codec, black_box(&room), Offset(1_234_567), data))
            });
        }
    }
    group.finish();
}

fn decode_server(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_server");
    let room = room();
    for codec in Codec::ALL {
        for len in PAYLOAD_SIZES {
            let mut envelope = Vec::new();
            codec.encode_message(&room, Offset(1_234_567), &payload(len), &mut envelope);
            let envelope = Bytes::from(envelope);
            group.throughput(Throughput::Bytes(len as u64));
            group.bench_with_input(id(codec, len), &envelope, |b, envelope| {
                b.iter(|| codec.decode_server(black_box(envelope)))
            });
        }
    }
    group.finish();
}

criterion_group!(
    benches,
    decode_request,
    encode_request,
    frame_message,
    decode_server
);
criterion_main!(benches);
