//! The publication path after decoding, one step at a time:
//!
//! * `shard_deliver`: a core's fan-out step (`Shard::deliver`) to 1, 100
//!   and 10,000 active local subscribers of one room: one reference to the
//!   shared frame pushed into each subscriber's bounded queue. Throughput
//!   is deliveries (frames queued), so criterion prints deliveries per
//!   second; time per delivery is the iteration time divided by N.
//! * `shard_unsubscribe_all`: a mass disconnect, every subscriber of one
//!   room of 1,000 and of 100,000 leaving; flat time per subscriber shows
//!   that removal is O(1).
//! * `home_publish`: the home core's publish step (begin, the memory
//!   engine's answer, finish): sequence the publication and encode its
//!   frame once per codec in use, with interest from 2 cores, in one codec
//!   and in both.
//! * `write_all`: the session writer's batched, vectored write
//!   (`write_all`) of 64 and 512 queued frames of 128 B into a real
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
use roomcast::hooks::{write_all, HomeBench, ShardBench};

/// The allocator the `roomcast` binary uses, so allocation costs match it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A room name of typical length.
const ROOM: &str = "market.ticks.btc-usd";

/// The payload of the delivered publication.
const PAYLOAD_LEN: usize = 128;

fn shard_deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard_deliver");
    for n in [1, 100, 10_000] {
        let mut shard = ShardBench::new(ROOM, n, PAYLOAD_LEN);
        // The queues are drained outside the measured time, after every
        // `depth` deliveries: each subscriber's queue holds at most `depth`
        // frames, and the time excludes the writers' `take` and the drop of
        // the frame references (one atomic decrement each, on the writer's side).
        let depth = (4_096 / n).clamp(16, 1_024) as u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_custom(|iters| {
                let mut measured = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let chunk = depth.min(iters - done);
                    let start = Instant::now();
                    for i in 0..chunk {
                        black_box(shard.deliver(done + i + 1));
                    }
                    measured += start.elapsed();
                    shard.drain();
                    done += chunk;
                }
                measured
            })
        });
    }
    group.finish();
}

/// A mass disconnect: every one of 100,000 subscribers of one room leaves.
/// Throughput is subscribers removed; removal is O(1) each, so the time per
/// subscriber stays flat as the room grows (it was O(n), so O(n^2) in all).
fn shard_unsubscribe(c: &mut Criterion) {
    let mut group = c.benchmark_group("shard_unsubscribe_all");
    group.sample_size(10);
    for n in [1_000, 100_000] {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || ShardBench::new(ROOM, n, PAYLOAD_LEN),
                |mut shard| {
                    assert_eq!(shard.unsubscribe_all(), n);
                    assert_eq!(shard.subscribers(), 0);
                    shard
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Sequencing and encoding one publication at its home, without and with
/// history (which copies the payload once more, into the room's history).
fn home_publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("home_publish");
    for history_size in [0, 1_000] {
        for (name, both_codecs) in [("one_codec", false), ("both_codecs", true)] {
            for len in [16, PAYLOAD_LEN, 1_024, 16 * 1_024] {
                // Core 0 subscribes with the first codec, core 1 with the second.
                let mut home = HomeBench::new(ROOM, history_size, both_codecs, len);
                group.throughput(Throughput::Elements(1));
                let id = BenchmarkId::new(format!("{name}/history_{history_size}"), len);
                group.bench_function(id, |b| b.iter(|| home.publish()));
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

criterion_group!(
    benches,
    shard_deliver,
    shard_unsubscribe,
    home_publish,
    batched_write
);
criterion_main!(benches);
