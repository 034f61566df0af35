//! The publication path after decoding, one step at a time:
//!
//! * `shard_deliver`: a core's fan-out step ([`Shard::deliver`]) to 1, 100
//!   and 10,000 active local subscribers of one room: one reference to the
//!   shared frame pushed into each subscriber's bounded queue. Throughput
//!   is deliveries (frames queued), so criterion prints deliveries per
//!   second; time per delivery is the iteration time divided by N.
//! * `home_publish`: the home core's step ([`Home::publish`]): sequence the
//!   publication and encode its frame once per codec in use, with interest
//!   from 2 cores, in one codec and in both.
//! * `write_all`: the session writer's batched, vectored write
//!   ([`write_all`]) of 64 and 512 queued frames of 128 B into a real
//!   loopback TCP socket (`TCP_NODELAY`, as the server sets it), whose other
//!   end a thread drains. Throughput is bytes written.
//!
//! Run: `cargo bench --bench fanout` (on a shared machine, shorter:
//! `cargo bench --bench fanout -- --warm-up-time 1 --measurement-time 3`).

use std::hint::black_box;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use roomcast::engine::{EngineConfig, MemoryEngine};
use roomcast::limits::{OutboundLimits, SlowConsumerPolicy};
use roomcast::metrics::CoreStats;
use roomcast::protocol::{frame, Codec, Offset, RequestId, RoomName, StreamPosition};
use roomcast::router::home::Home;
use roomcast::router::shard::{Shard, SubscribeStep, Subscriber};
use roomcast::router::{ConnId, CoreId, Frames};
use roomcast::transport::outbound::Outbound;
use roomcast::transport::session::write_all;

/// The allocator the `roomcast` binary uses, so allocation costs match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A room name of typical length.
const ROOM: &str = "market.ticks.btc-usd";

/// The payload of the delivered publication.
const PAYLOAD_LEN: usize = 128;

fn room() -> RoomName {
    RoomName::new(ROOM).expect("a valid room name")
}

/// Limits no benchmark reaches: the slow-consumer policy never fires.
fn unbounded() -> OutboundLimits {
    OutboundLimits {
        max_bytes: 1 << 40,
        max_messages: usize::MAX,
        max_age: Duration::from_secs(3_600),
        policy: SlowConsumerPolicy::Close,
    }
}

/// A shard with `n` active MessagePack subscribers of `room`, and their queues.
fn shard_with(room: &RoomName, n: usize, now: Instant) -> (Shard, Vec<Rc<Outbound>>) {
    let mut shard = Shard::default();
    let stats = CoreStats::detached();
    let mut queues = Vec::with_capacity(n);
    for conn in 0..n {
        let outbound = Rc::new(Outbound::new(unbounded(), stats.clone()));
        queues.push(outbound.clone());
        let subscriber = Subscriber {
            conn: ConnId(conn as u64),
            outbound,
            join_leave: false,
        };
        // Request id 0: no acknowledgement is queued, the queues start empty.
        let step = shard.subscribe(room, Codec::MsgPack, subscriber, RequestId(0), None, now);
        assert!(matches!(
            step,
            SubscribeStep::AskHome(_) | SubscribeStep::Wait(_)
        ));
    }
    shard.activate(room, Codec::MsgPack, StreamPosition::default(), now);
    assert_eq!(shard.subscriber_count(room, Codec::MsgPack), n);
    (shard, queues)
}

/// Empties every queue as the session writers would (take, then written).
fn drain(queues: &[Rc<Outbound>], batch: &mut Vec<Rc<Bytes>>) {
    for queue in queues {
        let taken = queue.take(batch, usize::MAX, usize::MAX);
        queue.written(taken);
        batch.clear();
    }
}

fn shard_deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard_deliver");
    let room = room();
    let now = Instant::now();
    let frame = frame::message(Codec::MsgPack, &room, Offset(1), &[7; PAYLOAD_LEN]);
    let frames: Frames = [Some(frame), None];
    for n in [1, 100, 10_000] {
        let (mut shard, queues) = shard_with(&room, n, now);
        // The queues are drained outside the measured time, after every
        // `depth` deliveries: each subscriber's queue holds at most `depth`
        // frames, and the time excludes the writers' `take` and the drop of
        // the frame references (one atomic decrement each, on the writer's side).
        let depth = (4_096 / n).clamp(16, 1_024) as u64;
        let mut batch = Vec::new();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let chunk = depth.min(iters - done);
                    let start = Instant::now();
                    for i in 0..chunk {
                        let offset = Offset(done + i + 1);
                        black_box(shard.deliver(&room, offset, &frames, now));
                    }
                    measured += start.elapsed();
                    drain(&queues, &mut batch);
                    done += chunk;
                }
                measured
            })
        });
    }
    group.finish();
}

/// An engine whose rooms keep `history_size` publications for a minute.
fn engine(history_size: usize) -> MemoryEngine {
    let config = roomcast::Config {
        history_size,
        history_ttl: Duration::from_secs(60),
        ..roomcast::Config::default()
    };
    MemoryEngine::new(EngineConfig::from_config(&config))
}

/// Sequencing and encoding one publication at its home, without and with
/// history (which copies the payload once more, into the room's history).
fn home_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("home_publish");
    let room = room();
    let interest: [(&str, [Codec; 2]); 2] = [
        ("one_codec", [Codec::MsgPack, Codec::MsgPack]),
        ("both_codecs", [Codec::MsgPack, Codec::Proto]),
    ];
    for history_size in [0, 1_000] {
        for (name, codecs) in interest {
            for len in [16, PAYLOAD_LEN, 1_024, 16 * 1_024] {
                let now = Instant::now();
                let mut home = Home::new(engine(history_size), 1_000);
                // Core 0 subscribes with the first codec, core 1 with the second.
                for (core, codec) in codecs.into_iter().enumerate() {
                    home.interest(&room, codec, CoreId(core), true, now);
                }
                let data = vec![7; len];
                group.throughput(Throughput::Elements(1));
                let id = BenchmarkId::new(format!("{name}/history_{history_size}"), len);
                group.bench_function(id, |b| {
                    b.iter(|| home.publish(black_box(&room), black_box(&data), None, now))
                });
            }
        }
    }
    group.finish();
}

/// A connected loopback socket whose peer a thread reads and discards until
/// the socket closes.
fn drained_socket() -> (TcpStream, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local address");
    let reader = thread::spawn(move || {
        let (mut peer, _) = listener.accept().expect("accept");
        let mut sink = vec![0; 256 * 1_024];
        while matches!(peer.read(&mut sink), Ok(n) if n > 0) {}
    });
    let stream = TcpStream::connect(addr).expect("connect loopback");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_nonblocking(true).expect("nonblocking");
    (stream, reader)
}

fn batched_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("write_all");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("a tokio runtime");
    let (stream, reader) = drained_socket();
    let mut socket = {
        let _entered = runtime.enter();
        tokio::net::TcpStream::from_std(stream).expect("register the socket")
    };
    const FRAME_LEN: usize = 128;
    for frames in [64, 512] {
        // Distinct frames, each its own allocation, as a queue of
        // publications would hold.
        let queued: Vec<Rc<Bytes>> = (0..frames)
            .map(|i| Rc::new(Bytes::from(vec![i as u8; FRAME_LEN])))
            .collect();
        group.throughput(Throughput::Bytes((frames * FRAME_LEN) as u64));
        group.bench_function(BenchmarkId::from_parameter(frames), |b| {
            b.iter_batched(
                || queued.clone(),
                // The batch is returned, so dropping its frame references
                // falls outside the measured time.
                |batch| {
                    let written = runtime.block_on(write_all(&mut socket, &batch));
                    written.expect("write to the loopback socket");
                    batch
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
    drop(socket);
    reader.join().expect("the reader thread");
}

criterion_group!(benches, shard_deliver, home_publish, batched_write);
criterion_main!(benches);
