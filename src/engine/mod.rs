//! The engine: what a room's home core asks of a room's state. It assigns
//! offsets, keeps history and idempotency keys, answers recovery and
//! history requests, and tracks presence.
//!
//! Everything a Redis-backed engine must provide for several nodes to keep
//! the same guarantees sits behind [`Engine`]; routing and fan-out never look
//! at room state directly. An engine instance belongs to one core and is only
//! asked about rooms whose home is that core, so it needs no locks.

pub mod memory;

use std::time::Instant;

use crate::protocol::{
    ClientInfo, HistoryPage, HistoryQuery, IdempotencyKey, PresenceCounts, Publication, RoomName,
    StreamPosition,
};
use crate::rules::RoomOptions;

pub use memory::MemoryEngine;

/// The outcome of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The room's epoch and the publication's offset (for a duplicate: the
    /// offset the first publication with the key was given).
    pub position: StreamPosition,
    /// The idempotency key was seen within the window: nothing was published.
    pub duplicate: bool,
}

/// The answer to a subscribe with `recover`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The same epoch, and history holds every publication after the
    /// client's offset: here they are, oldest first, up to `position`.
    Recovered {
        position: StreamPosition,
        missed: Vec<Publication>,
    },
    /// Another epoch, or publications the client missed are no longer kept.
    Refused { position: StreamPosition },
}

impl Recovery {
    /// The room's position when recovery was decided.
    pub fn position(&self) -> &StreamPosition {
        match self {
            Recovery::Recovered { position, .. } | Recovery::Refused { position } => position,
        }
    }
}

/// Why an engine could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("room {room} keeps no {what}")]
    NotEnabled { room: String, what: &'static str },
}

/// A room's state store, as its home core sees it.
pub trait Engine {
    /// The options `room` resolved to when its state was created.
    fn options(&mut self, room: &RoomName, now: Instant) -> RoomOptions;

    /// Sequences one publication (storing it when the room keeps history),
    /// unless `key` was seen within the idempotency window.
    fn publish(
        &mut self,
        room: &RoomName,
        data: &[u8],
        key: Option<&IdempotencyKey>,
        now: Instant,
    ) -> Published;

    /// The room's epoch and last offset.
    fn position(&mut self, room: &RoomName, now: Instant) -> StreamPosition;

    /// Every publication after `from`, if the epoch matches and history
    /// still holds them all.
    fn recover(&mut self, room: &RoomName, from: &StreamPosition, now: Instant) -> Recovery;

    /// A page of history, at most `max_page` publications.
    fn history(
        &mut self,
        room: &RoomName,
        query: HistoryQuery,
        max_page: usize,
        now: Instant,
    ) -> Result<HistoryPage, EngineError>;

    /// Adds a connection to the room's presence; false if it was there.
    fn join(&mut self, room: &RoomName, info: ClientInfo, now: Instant) -> bool;

    /// Removes a connection from the room's presence, returning its entry.
    fn leave(&mut self, room: &RoomName, client: &str) -> Option<ClientInfo>;

    /// Who is in the room, earliest joined first.
    fn presence(&mut self, room: &RoomName, now: Instant) -> Result<Vec<ClientInfo>, EngineError>;

    /// How many are in the room.
    fn presence_stats(
        &mut self,
        room: &RoomName,
        now: Instant,
    ) -> Result<PresenceCounts, EngineError>;

    /// Drops what has expired (history, idempotency keys) and forgets rooms
    /// that keep nothing and that `in_use` says nobody subscribes to; such a
    /// room comes back with a new epoch.
    fn sweep(&mut self, now: Instant, in_use: &dyn Fn(&RoomName) -> bool);

    /// Rooms with state (for tests and stats).
    fn room_count(&self) -> usize;
}

/// What an engine needs from the configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub rules: crate::rules::RoomRules,
    /// Options of rooms no rule matches.
    pub defaults: RoomOptions,
    pub idempotency_window: std::time::Duration,
    pub idempotency_max_keys: usize,
}

impl EngineConfig {
    pub fn from_config(config: &crate::Config) -> EngineConfig {
        EngineConfig {
            rules: config.rooms.clone(),
            defaults: config.default_room_options(),
            idempotency_window: config.idempotency_window,
            idempotency_max_keys: config.idempotency_max_keys,
        }
    }

    /// The options of `room`.
    pub fn options(&self, room: &RoomName) -> RoomOptions {
        self.rules.resolve(room.as_str(), self.defaults)
    }
}
