//! Routing: which core is a room's home, what cores say to each other, the
//! bounded queues they say it through, and the per-core pieces that act on
//! it. Touches no socket: a connection is an outbound queue here.
//!
//! In the order a publication meets them:
//! * [`member`]: one client's membership (rooms, format, outbound queue) and
//!   its requests. Every front door (the WebSocket session today) calls it;
//!   [`backend`] is the handle of a request with no connection (the HTTP
//!   API), whose answers come back to waiters.
//! * [`postbox`]: each core's two bounded inboxes (publications, and events
//!   both to and from homes) and the sending side.
//!   Publications wait for room (the publisher stops reading its socket);
//!   events never wait, so inboxes always drain and no cycle of full queues
//!   can form between cores. What does not fit is kept in a per-destination
//!   overflow, and the core takes no new publication until it drains.
//! * [`driver`]: the per-core task that drains the inboxes into the home
//!   and the shard, starts engine operations and applies their answers.
//! * [`home`]: the rooms homed on this core, as a state machine without
//!   I/O: each room's operations complete in the room's order, whenever the
//!   engine answers.
//! * [`shard`]: this core's local subscribers, and the fan-out into their
//!   [`outbound`] queues.
//! * [`waiters`]: one-shot completions for requests that are not a
//!   connection's (an HTTP request, later), and for a connection's queries.
//! * [`message`]: what travels to a home and back.

pub(crate) mod backend;
pub(crate) mod driver;
pub(crate) mod home;
pub(crate) mod member;
pub(crate) mod message;
pub(crate) mod outbound;
pub(crate) mod postbox;
pub(crate) mod shard;
pub(crate) mod top_rooms;
pub(crate) mod waiters;

use std::ops::{Index, IndexMut};

use bytes::Bytes;

use crate::protocol::{Codec, HistoryQuery, RequestId, RoomName};

/// A worker core's index, `0..workers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CoreId(pub(crate) usize);

/// A connection's id, unique within its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(pub(crate) u64);

/// A set of cores, as a bit mask (at most [`crate::config::MAX_WORKERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CoreSet(u128);

impl CoreSet {
    pub(crate) fn insert(&mut self, core: CoreId) {
        self.0 |= 1 << core.0;
    }

    pub(crate) fn remove(&mut self, core: CoreId) {
        self.0 &= !(1 << core.0);
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub(crate) fn union(self, other: CoreSet) -> CoreSet {
        CoreSet(self.0 | other.0)
    }

    /// The cores in the set, lowest first.
    pub(crate) fn iter(self) -> impl Iterator<Item = CoreId> {
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

/// The core that sequences `room`: a fixed hash (FNV-1a) of its name, so
/// every core, in every process and run, computes the same home.
pub(crate) fn home_core(room: &RoomName, workers: usize) -> CoreId {
    let hash = room
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    CoreId((hash % workers as u64) as usize)
}

/// How a member wants its frames. A publication's frame is built once per
/// format somebody uses, and shared by all who use it. Today a format is a
/// codec; a text form (for Server-Sent Events) would be one more variant,
/// and every per-format table grows with [`Format::COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Format {
    MsgPack,
    Proto,
}

impl Format {
    /// How many formats there are: the size of every per-format table.
    pub(crate) const COUNT: usize = 2;
    pub(crate) const ALL: [Format; Format::COUNT] = [Format::MsgPack, Format::Proto];

    /// The envelope codec this format's frames are written in.
    pub(crate) fn codec(self) -> Codec {
        match self {
            Format::MsgPack => Codec::MsgPack,
            Format::Proto => Codec::Proto,
        }
    }
}

impl From<Codec> for Format {
    fn from(codec: Codec) -> Format {
        match codec {
            Codec::MsgPack => Format::MsgPack,
            Codec::Proto => Format::Proto,
        }
    }
}

/// One value per [`Format`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PerFormat<T>([T; Format::COUNT]);

impl<T> PerFormat<T> {
    /// Each format with its value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Format, &T)> {
        Format::ALL.into_iter().zip(self.0.iter())
    }

    /// Each format with its value, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Format, &mut T)> {
        Format::ALL.into_iter().zip(self.0.iter_mut())
    }

    /// The values, format by format.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }
}

impl<T> Index<Format> for PerFormat<T> {
    type Output = T;

    fn index(&self, format: Format) -> &T {
        &self.0[format as usize]
    }
}

impl<T> IndexMut<Format> for PerFormat<T> {
    fn index_mut(&mut self, format: Format) -> &mut T {
        &mut self.0[format as usize]
    }
}

/// One publication's (or event's) outgoing frames, one per format that has
/// subscribers (`None` for a format nobody on the receiving side uses).
/// Each frame is the complete WebSocket frame, shared by every subscriber
/// on every core.
pub(crate) type Frames = PerFormat<Option<Bytes>>;

/// A waiter in a core's table ([`waiters::Waiters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct WaiterId(pub(crate) u64);

/// Where the reply to a request goes. The reply travels as a
/// [`crate::protocol::Outcome`] to the asker's core, which delivers it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReplyTo {
    /// A request of one of `core`'s connections: encoded in the
    /// connection's format and queued to it. A successful reply to request
    /// id 0 is not sent (fire-and-forget); an error always is.
    Connection {
        core: CoreId,
        conn: ConnId,
        request: RequestId,
    },
    /// A task on `core` awaiting the reply (see [`waiters`]).
    Waiter { core: CoreId, waiter: WaiterId },
}

impl ReplyTo {
    /// Whether a success is worth sending: not to a connection's request 0
    /// (fire-and-forget), whose only replies are errors.
    pub(crate) fn wants_success(self) -> bool {
        match self {
            ReplyTo::Connection { request, .. } => request.wants_reply(),
            ReplyTo::Waiter { .. } => true,
        }
    }

    /// The core the reply must reach.
    pub(crate) fn core(self) -> CoreId {
        match self {
            ReplyTo::Connection { core, .. } | ReplyTo::Waiter { core, .. } => core,
        }
    }
}

/// A question only a room's home can answer.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Query {
    History(HistoryQuery),
    Presence,
    PresenceStats,
}

/// Names one recovering subscriber on its core, so an answer meant for an
/// earlier subscribe of the same connection is never applied to a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecoveryToken(pub(crate) u64);
