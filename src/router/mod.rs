//! Routing between cores: which core is a room's home, what cores say to each
//! other, and the bounded queues they say it through.
//!
//! Each core owns two inboxes, both bounded `crossbeam-channel` queues:
//! * `publishes` ([`PublishMsg`]): sessions to the room's home core. A full
//!   one makes the publishing session wait (it stops reading its socket, so
//!   TCP slows the publisher and no one else).
//! * `events` ([`CoreMsg`]): everything else: interest in a room, its
//!   acknowledgement, deliveries, publish acks. Handling an event never waits
//!   on another queue, so an events inbox always drains and no cycle of full
//!   queues can form between cores.
//!
//! A core that cannot hand a driver-made message to a full events inbox keeps
//! it in a per-destination overflow (at most one delivery per core per
//! publication) and stops taking publications until the overflow drains.

pub mod home;
pub mod postbox;
pub mod shard;

use bytes::Bytes;

use crate::engine::Recovery;
use crate::protocol::{
    ClientInfo, Codec, HistoryQuery, IdempotencyKey, Offset, PresenceChange, RequestId, RoomName,
    StreamPosition,
};

/// A worker core's index, `0..workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CoreId(pub usize);

/// A connection's id, unique within its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A set of cores, as a bit mask (at most [`crate::config::MAX_WORKERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreSet(u128);

impl CoreSet {
    pub fn insert(&mut self, core: CoreId) {
        self.0 |= 1 << core.0;
    }

    pub fn remove(&mut self, core: CoreId) {
        self.0 &= !(1 << core.0);
    }

    pub fn contains(self, core: CoreId) -> bool {
        self.0 & (1 << core.0) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn union(self, other: CoreSet) -> CoreSet {
        CoreSet(self.0 | other.0)
    }

    /// The cores in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = CoreId> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let core = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(CoreId(core))
        })
    }
}

impl FromIterator<CoreId> for CoreSet {
    fn from_iter<I: IntoIterator<Item = CoreId>>(cores: I) -> CoreSet {
        let mut set = CoreSet::default();
        for core in cores {
            set.insert(core);
        }
        set
    }
}

/// The core that sequences `room`: a fixed hash (FNV-1a) of its name, so
/// every core, in every process and run, computes the same home.
pub fn home_core(room: &RoomName, workers: usize) -> CoreId {
    let hash = room
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    CoreId((hash % workers as u64) as usize)
}

/// One publication's outgoing frames, one per codec that has subscribers
/// (`None` for a codec nobody on the receiving side uses). Each frame is the
/// complete WebSocket frame, shared by every subscriber on every core.
pub type Frames = [Option<Bytes>; 2];

/// The frame for `codec`, if it was built.
pub fn frame_for(frames: &Frames, codec: Codec) -> Option<&Bytes> {
    frames[codec.index()].as_ref()
}

/// A publication on its way from the publisher's core to the room's home.
#[derive(Debug)]
pub struct PublishMsg {
    pub room: RoomName,
    /// A slice of the publisher's received message: not copied on the way.
    pub data: Bytes,
    pub idempotency_key: Option<IdempotencyKey>,
    /// Where to send the offset, when the publisher asked for a reply.
    pub reply_to: Option<ReplyTo>,
}

/// The session waiting for an answer from another core.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTo {
    pub core: CoreId,
    pub conn: ConnId,
    pub request: RequestId,
}

/// A question only a room's home can answer; the answer goes back as a
/// ready-made reply frame in the asker's codec.
#[derive(Debug, Clone, Copy)]
pub enum Query {
    History(HistoryQuery),
    Presence,
    PresenceStats,
}

/// What cores tell each other, besides publications.
#[derive(Debug)]
pub enum CoreMsg {
    /// To a home: `core` gained its first (`on`) or lost its last (`!on`)
    /// local subscriber of `room` with `codec`.
    Interest {
        room: RoomName,
        codec: Codec,
        core: CoreId,
        on: bool,
    },
    /// From a home, answering `Interest { on: true }`: deliveries of `room`
    /// in `codec` to this core start after `position`.
    InterestAck {
        room: RoomName,
        codec: Codec,
        position: StreamPosition,
    },
    /// From a home: one sequenced publication to fan out to local subscribers.
    Deliver {
        room: RoomName,
        offset: Offset,
        frames: Frames,
    },
    /// From a home: the offset given to a publication whose publisher wants a reply.
    PublishAck {
        conn: ConnId,
        request: RequestId,
        offset: Offset,
        duplicate: bool,
    },
    /// To a home, sent after the subscriber joined this core's shard as
    /// recovering (and after `Interest`, when there was one): which
    /// publications after `from` does it still have?
    Recover {
        room: RoomName,
        codec: Codec,
        from: StreamPosition,
        core: CoreId,
        token: RecoveryToken,
    },
    /// From a home: the answer to `Recover`. Every delivery the home sent
    /// this core before it arrives first.
    Recovered {
        room: RoomName,
        codec: Codec,
        token: RecoveryToken,
        recovery: Recovery,
    },
    /// To a home: history or presence.
    Query {
        room: RoomName,
        query: Query,
        codec: Codec,
        reply_to: ReplyTo,
    },
    /// A reply frame for one of this core's sessions.
    Reply { conn: ConnId, frame: Bytes },
    /// To a home: a subscriber of a presence room joined or left.
    Presence {
        room: RoomName,
        change: PresenceChange,
        info: ClientInfo,
    },
    /// From a home: a join or leave event for subscribers that asked for them.
    PresenceEvent { room: RoomName, frames: Frames },
}

/// Names one recovering subscriber on its core, so an answer meant for an
/// earlier subscribe of the same connection is never applied to a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryToken(pub u64);
