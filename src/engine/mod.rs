//! The engine: the store of every room's state. It assigns offsets, keeps
//! history and idempotency keys, answers recovery and history requests, and
//! tracks presence.
//!
//! A room's home core asks it through [`Engine`], one operation at a time,
//! and nothing else ever looks at room state. The boundary is shaped for an
//! engine that answers *later* and can *fail* (Redis: a network round trip,
//! a lost connection, a timeout) as well as for one that answers at once
//! (memory):
//! * [`Engine::start`] begins an operation under a [`Ticket`] and returns
//!   the answer when it has it already, or `None`;
//! * [`Engine::poll`] hands over answers that came later, in any order,
//!   and (for an engine whose rooms span nodes) the room's *feed*;
//! * operations on one room **take effect in the order they were started**
//!   (their answers may still come back in another order). The home relies
//!   on this and on nothing else: it applies answers in each room's order
//!   itself (see `router::home`).
//!
//! Where publications are delivered from depends on the engine
//! ([`Delivery`]). The memory engine is the only writer of its rooms, so
//! the home fans a publication out when its publish is answered. The Redis
//! engine's rooms are written by every node, so every node delivers from
//! the room's channel instead, in the one order Redis gave: the engine
//! hands those publications over as [`Feed`] items, in offset order
//! without gaps, and answers a room's `Position` and `Recover` in the
//! room's start order, each with the position of the last feed item handed
//! over before it. The home applies events in the order they come, so a
//! core that hears `Interested(N)` got every delivery ≤ N before and gets
//! every one > N after.
//!
//! An engine instance belongs to one core and is only asked about rooms
//! whose home is that core, so it needs no locks.

mod memory;
pub(crate) mod redis;
#[cfg(feature = "test-hooks")]
pub(crate) mod slow;

use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::{
    ClientInfo, ErrorCode, HistoryPage, HistoryQuery, IdempotencyKey, Offset, PresenceChange,
    PresenceCounts, Publication, RoomName, StreamPosition,
};
use crate::rules::RoomPolicy;

pub(crate) use memory::MemoryEngine;

/// Names one started operation, so its answer finds its way back. Unique
/// per core for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Ticket(pub(crate) u64);

/// One operation on a room's state.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Sequence (and store, when the room keeps history) one publication,
    /// unless `key` was seen within the idempotency window.
    Publish {
        data: Bytes,
        key: Option<IdempotencyKey>,
    },
    /// The room's epoch and last offset.
    Position,
    /// Every publication after `from`, if the epoch matches and history
    /// still holds them all.
    Recover { from: StreamPosition },
    /// A page of history, at most `max_page` publications.
    History {
        query: HistoryQuery,
        max_page: usize,
    },
    /// Add a connection to the room's presence.
    Join(ClientInfo),
    /// Remove a connection from the room's presence.
    Leave { client: String },
    /// Who is in the room, earliest joined first.
    Presence,
    /// How many are in the room.
    PresenceStats,
}

/// The answer to an [`Op`], variant for variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Published(Published),
    Position(StreamPosition),
    Recovery(Recovery),
    History(HistoryPage),
    /// Whether the connection was not there before.
    Joined(bool),
    /// The entry removed, if the connection was there.
    Left(Option<ClientInfo>),
    Presence(Vec<ClientInfo>),
    PresenceStats(PresenceCounts),
    /// Not an engine's answer: the outcome of a home step that asks the
    /// engine nothing (a core's disinterest), so that it too completes in
    /// the room's order.
    Nothing,
}

/// An operation's outcome.
pub(crate) type Outcome = Result<Answer, EngineError>;

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Published {
    /// The room's epoch and the publication's offset (for a duplicate: the
    /// offset the first publication with the key was given).
    pub(crate) position: StreamPosition,
    /// The idempotency key was seen within the window: nothing was published.
    pub(crate) duplicate: bool,
}

/// The answer to a subscribe with `recover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// The same epoch, and history holds every publication after the
    /// client's offset: here they are, oldest first, up to `position`.
    Recovered {
        position: StreamPosition,
        missed: Vec<Publication>,
    },
    /// Another epoch, or publications the client missed are no longer kept.
    Refused { position: StreamPosition },
}

/// Why an engine could not answer. Each variant maps to one error reply
/// (`protocol::ErrorCode`): `NotEnabled` to 106, the others to 110.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EngineError {
    /// The room's options do not keep what was asked for.
    #[error("room {room} keeps no {what}")]
    NotEnabled { room: String, what: &'static str },
    /// The store cannot be reached now. Nothing was done.
    #[error("the room store is unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer in time. The operation may or may not have
    /// taken effect: a publish retried under its idempotency key is safe.
    /// (Made by the test engine today and by a networked engine next; the
    /// memory engine never times out.)
    #[error("the room store did not answer in time")]
    Timeout,
}

impl EngineError {
    /// The error reply that reports it.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            EngineError::NotEnabled { .. } => ErrorCode::NotEnabled,
            EngineError::Unavailable(_) | EngineError::Timeout => ErrorCode::Unavailable,
        }
    }

    /// The whole error reply.
    pub(crate) fn outcome(&self) -> crate::protocol::Outcome {
        crate::protocol::Outcome::error(self.code(), self.to_string())
    }
}

/// A room's state store, as its home core sees it.
pub(crate) trait Engine {
    /// Begins `op` on `room`. Returns the outcome when it is known at once;
    /// otherwise the outcome comes later from [`Engine::poll`] under
    /// the same ticket. Operations on one room take effect in the order
    /// they are started.
    fn start(&mut self, ticket: Ticket, room: &RoomName, op: Op, now: Instant) -> Option<Outcome>;

    /// Moves the outcomes and feed items that arrived since the last call
    /// into `out`, in the order the home must apply them. Pending (and
    /// remembers the waker) when there are none.
    fn poll(&mut self, cx: &mut Context<'_>, out: &mut Vec<EngineEvent>) -> Poll<()>;

    /// Where publications are delivered from.
    fn delivery(&self) -> Delivery {
        Delivery::OnAnswer
    }

    /// Whether the store can be reached now, as far as the engine knows
    /// without asking it (Redis: both of the core's clients connected).
    /// Checked by the sweep for `/ready` and `roomcast_engine_up`, beside
    /// the failures of operations; an engine in memory always is.
    fn reachable(&self) -> bool {
        true
    }

    /// Drops what has expired (history, idempotency keys) and forgets rooms
    /// that keep nothing and that `in_use` says nobody subscribes to; such a
    /// room comes back with a new epoch.
    fn sweep(&mut self, now: Instant, in_use: &dyn Fn(&RoomName) -> bool);
}

/// Where a home fans publications out from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// When the publish is answered: the engine is the room's only writer.
    OnAnswer,
    /// From the engine's [`Feed`]: publishes are only acked.
    FromFeed,
}

/// What the engine hands the home.
#[derive(Debug)]
pub(crate) enum EngineEvent {
    Answer(Ticket, Outcome),
    Feed(RoomName, Feed),
}

/// One item of a room's feed, from whichever node wrote it.
#[derive(Debug)]
pub(crate) enum Feed {
    /// The next publication: always the last one's offset + 1 in its epoch.
    Publication { offset: Offset, data: Bytes },
    /// A connection (on any node) joined or left the room's presence.
    Presence {
        change: PresenceChange,
        info: ClientInfo,
    },
    /// The room's order was lost (the store lost it, or a gap history no
    /// longer holds): its subscribers must resume, and deliveries go on
    /// after `position`.
    Lost { position: StreamPosition },
}

/// What an engine needs from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    /// Decides each room's options when its state is created.
    pub(crate) rooms: RoomPolicy,
    pub(crate) idempotency_window: std::time::Duration,
    pub(crate) idempotency_max_keys: usize,
}

impl EngineConfig {
    /// The engine's settings, deciding room options with `rooms` (the
    /// node's one policy).
    pub(crate) fn new(rooms: RoomPolicy, config: &crate::Config) -> EngineConfig {
        EngineConfig {
            rooms,
            idempotency_window: config.idempotency_window,
            idempotency_max_keys: config.idempotency_max_keys,
        }
    }
}

/// Which engine a node's cores run.
#[derive(Debug, Clone, Default)]
pub(crate) enum EngineKind {
    /// Each home core keeps its rooms in its own memory.
    #[default]
    Memory,
    /// The memory engine behind random delays and a switch that makes it
    /// unavailable, for the project's own tests.
    #[cfg(feature = "test-hooks")]
    Slow(slow::SlowOptions),
}

impl EngineKind {
    /// A fresh engine for core `core` of `node`: the Redis engine when
    /// `redis_url` is set (connected, or the reason it cannot be), else
    /// this kind.
    pub(crate) async fn build(
        &self,
        node: &crate::node::Node,
        core: usize,
    ) -> Result<Box<dyn Engine>, redis::ConnectError> {
        let config = EngineConfig::new(node.rooms.clone(), &node.config);
        if !node.config.redis_url.is_empty() {
            let settings = redis::RedisSettings {
                url: node.config.redis_url.clone(),
                command_timeout: node.config.redis_command_timeout,
            };
            let stats = crate::metrics::CoreStats::new(node.stats.clone(), core);
            let origin = format!("{}:{core}", node.id);
            let capacity = node.config.core_queue_capacity;
            let engine =
                redis::RedisEngine::connect(settings, config, origin, stats, capacity).await?;
            return Ok(Box::new(engine));
        }
        Ok(match self {
            EngineKind::Memory => Box::new(MemoryEngine::new(config)),
            #[cfg(feature = "test-hooks")]
            EngineKind::Slow(options) => {
                Box::new(slow::SlowEngine::new(MemoryEngine::new(config), options))
            }
        })
    }
}
