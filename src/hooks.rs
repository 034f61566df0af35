//! Seams for the project's own tests and benches, compiled only with the
//! `test-hooks` feature (which the crate's dev-dependency on itself turns
//! on for tests and benches, and nothing else does). Not part of the API:
//! each item drives one internal piece the way the benches and the fault
//! tests need, without making that piece public.

use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;

use crate::engine::{Answer, Delivery, Engine, EngineConfig, EngineKind, MemoryEngine};
use crate::limits::{OutboundLimits, SlowConsumerPolicy};
use crate::metrics::CoreStats;
use crate::protocol::{frame, Codec, Offset, RequestId, RoomName, StreamPosition};
use crate::router::home::{Begun, Home, Step};
use crate::router::outbound::Outbound;
use crate::router::shard::{Shard, Subscriber};
use crate::router::{ConnId, CoreId, Format, Frames, ReplyTo};
use crate::runtime::StartOptions;
use crate::{Config, Server, StartError};

pub use crate::engine::slow::SlowOptions as SlowEngine;

/// Starts a node whose cores run the memory engine behind [`SlowEngine`]'s
/// random delays (and its unavailability switch).
pub fn start_with_slow_engine(config: Config, slow: SlowEngine) -> Result<Server, StartError> {
    let options = StartOptions {
        engine: EngineKind::Slow(slow),
        ..StartOptions::default()
    };
    Server::start_with(config, options)
}

/// Starts a node one of whose cores fails to start.
pub fn start_failing_core(config: Config, core: usize) -> Result<Server, StartError> {
    let options = StartOptions {
        fail_core: Some(core),
        ..StartOptions::default()
    };
    Server::start_with(config, options)
}

/// The core (0-based) that is `room`'s home among `workers`.
pub fn home_core(room: &str, workers: usize) -> usize {
    let room = RoomName::new(room).unwrap_or_else(|error| panic!("{room:?}: {error}"));
    crate::router::home_core(&room, workers).0
}

/// The Redis Cluster slot of every key and the channel of `room`.
pub fn redis_slot(room: &str) -> u16 {
    let room = RoomName::new(room).unwrap_or_else(|error| panic!("{room:?}: {error}"));
    fred::util::redis_keyslot(&crate::engine::redis::keys::RoomKeys::new(&room).meta)
}

/// Every reason a refused token can be given (the 401 body, or error 108
/// after `refresh refused: `), as the broker words it.
pub fn token_refusal_reasons() -> Vec<String> {
    crate::auth::TokenError::every()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Bounds no benchmark reaches: the slow-consumer policy never fires.
fn unbounded() -> OutboundLimits {
    OutboundLimits {
        max_bytes: 1 << 40,
        max_messages: usize::MAX,
        max_age: std::time::Duration::from_secs(3_600),
        policy: SlowConsumerPolicy::Close,
    }
}

/// One core's shard with `n` active MessagePack subscribers of one room.
pub struct ShardBench {
    /// One instant for every step, as the old benches had: reading the
    /// clock is the caller's cost, not the shard's.
    now: Instant,
    shard: Shard,
    room: RoomName,
    queues: Vec<Rc<Outbound>>,
    frames: Frames,
    batch: Vec<Rc<Bytes>>,
}

impl ShardBench {
    /// `subscribers` active subscribers of `room`, and a frame of
    /// `payload_len` bytes to deliver.
    pub fn new(room: &str, subscribers: usize, payload_len: usize) -> ShardBench {
        let room = RoomName::new(room).unwrap_or_else(|error| panic!("{room:?}: {error}"));
        let now = Instant::now();
        let mut shard = Shard::default();
        let stats = CoreStats::detached();
        let mut queues = Vec::with_capacity(subscribers);
        for conn in 0..subscribers {
            let outbound = Rc::new(Outbound::new(unbounded(), stats.clone()));
            queues.push(outbound.clone());
            let subscriber = Subscriber {
                conn: ConnId(conn as u64),
                outbound,
                join_leave: false,
            };
            // Request id 0: no acknowledgement is queued; the queues start empty.
            let _ = shard.subscribe(&room, Format::MsgPack, subscriber, RequestId(0), None, now);
        }
        let _ = shard.activate(&room, Format::MsgPack, Ok(StreamPosition::default()), now);
        assert_eq!(shard.subscriber_count(&room, Format::MsgPack), subscribers);
        let mut frames = Frames::default();
        frames[Format::MsgPack] = Some(frame::message(
            Codec::MsgPack,
            &room,
            Offset(1),
            &vec![7; payload_len],
        ));
        ShardBench {
            now,
            shard,
            room,
            queues,
            frames,
            batch: Vec::new(),
        }
    }

    /// Fans one publication out; returns the frames queued.
    pub fn deliver(&mut self, offset: u64) -> u64 {
        self.shard
            .deliver(&self.room, Offset(offset), &self.frames, self.now)
            .delivered
    }

    /// Empties every queue as the session writers would (take, then written).
    pub fn drain(&mut self) {
        for queue in &self.queues {
            let taken = queue.take(&mut self.batch, usize::MAX, usize::MAX);
            queue.written(taken);
            self.batch.clear();
        }
    }

    /// Every subscriber leaves, in the order they joined, as on a mass
    /// disconnect; returns how many were still subscribed.
    pub fn unsubscribe_all(&mut self) -> usize {
        let mut left = 0;
        for conn in 0..self.queues.len() {
            let _ = self
                .shard
                .unsubscribe(&self.room, Format::MsgPack, ConnId(conn as u64));
            left += 1;
        }
        left
    }

    /// Active subscribers now.
    pub fn subscribers(&self) -> usize {
        self.shard.subscriber_count(&self.room, Format::MsgPack)
    }
}

/// A home core's publish step (sequence, then encode once per format in
/// use) for one room, with the memory engine.
pub struct HomeBench {
    now: Instant,
    home: Home,
    engine: MemoryEngine,
    room: RoomName,
    data: Bytes,
    out: Vec<(CoreId, crate::router::message::FromHome)>,
}

impl HomeBench {
    /// Rooms keeping `history_size` publications for a minute; interest
    /// from cores 0 and 1 in MessagePack, or in both codecs.
    pub fn new(
        room: &str,
        history_size: usize,
        both_codecs: bool,
        payload_len: usize,
    ) -> HomeBench {
        let config = Config {
            history_size,
            history_ttl: std::time::Duration::from_secs(60),
            ..Config::default()
        };
        let room = RoomName::new(room).unwrap_or_else(|error| panic!("{room:?}: {error}"));
        let mut engine = MemoryEngine::new(EngineConfig::new(config.room_policy(), &config));
        let stats = CoreStats::detached();
        let mut home = Home::new(config.room_policy(), 1_000, Delivery::OnAnswer, stats);
        let formats = if both_codecs {
            [Format::MsgPack, Format::Proto]
        } else {
            [Format::MsgPack, Format::MsgPack]
        };
        let mut out = Vec::new();
        let now = Instant::now();
        for (core, format) in formats.into_iter().enumerate() {
            let step = Step::Interest {
                format,
                core: CoreId(core),
            };
            run(&mut home, &mut engine, &room, step, now, &mut out);
        }
        out.clear();
        HomeBench {
            now,
            home,
            engine,
            room,
            data: Bytes::from(vec![7; payload_len]),
            out,
        }
    }

    /// One publication, from the step begun to the messages for the two
    /// interested cores (built and dropped). The old `Home::publish` bench
    /// stopped at the frames; the messages add a reference count on the
    /// room name and the frames per target.
    pub fn publish(&mut self) {
        let step = Step::Publish {
            data: self.data.clone(),
            key: None,
            reply_to: ReplyTo::Connection {
                core: CoreId(0),
                conn: ConnId(1),
                request: RequestId(0),
            },
        };
        run(
            &mut self.home,
            &mut self.engine,
            &self.room,
            step,
            self.now,
            &mut self.out,
        );
        self.out.clear();
    }
}

fn run(
    home: &mut Home,
    engine: &mut MemoryEngine,
    room: &RoomName,
    step: Step,
    now: Instant,
    out: &mut Vec<(CoreId, crate::router::message::FromHome)>,
) {
    let Begun::Idle { ticket, op, then } = home.begin(room, step) else {
        panic!("the memory engine leaves no step outstanding")
    };
    let outcome = match op {
        Some(op) => engine.start(ticket, room, op, now),
        None => Some(Ok(Answer::Nothing)),
    };
    let Some(outcome) = outcome else {
        panic!("the memory engine answers at once")
    };
    home.finish(room, then, outcome, now, out);
}

/// The session writer's batched, vectored write of `batch`.
pub async fn write_all<W: tokio::io::AsyncWrite + Unpin>(
    socket: &mut W,
    batch: &[Rc<Bytes>],
) -> std::io::Result<()> {
    crate::transport::session::write_all(socket, batch).await
}
