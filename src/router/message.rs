//! What travels between cores: one type per direction. [`ToHome`] is what a
//! core asks of a room's home (or, for [`ToHome::Members`], of every core);
//! [`FromHome`] is what a home sends back to the cores with subscribers or
//! askers. Publications have their own type and
//! queue ([`PublishMsg`]), because they are the one message a sender may
//! wait to send.
//!
//! Everything one core sends another arrives in the order it was sent, per
//! direction. The delivery promise rests on that: a home's `Interested`
//! reaches a core before any `Deliver` sent after it, and its `Recovered`
//! after every `Deliver` it covers.

use std::time::Instant;

use bytes::Bytes;

use crate::engine::{EngineError, Recovery};
use crate::protocol::{
    ClientInfo, IdempotencyKey, Offset, Outcome, PresenceChange, RoomName, StreamPosition,
};

use super::{CoreId, Format, Frames, Query, RecoveryToken, ReplyTo, WaiterId};

/// A publication on its way from the publisher's core to the room's home.
#[derive(Debug)]
pub(crate) struct PublishMsg {
    pub(crate) room: RoomName,
    /// A slice of the publisher's received message: not copied on the way.
    pub(crate) data: Bytes,
    pub(crate) idempotency_key: Option<IdempotencyKey>,
    /// Where the ack (or the error) goes.
    pub(crate) reply_to: ReplyTo,
}

/// To a room's home.
#[derive(Debug)]
pub(crate) enum ToHome {
    /// `core` gained its first local subscriber of `room` in `format`: send
    /// it the room's deliveries from now on, and tell it where they start.
    Interest {
        room: RoomName,
        format: Format,
        core: CoreId,
    },
    /// `core` lost its last local subscriber of `room` in `format`.
    Disinterest {
        room: RoomName,
        format: Format,
        core: CoreId,
    },
    /// Sent after the subscriber joined its core's shard as recovering (and
    /// after `Interest`, when there was one): which publications after
    /// `from` does the room still have?
    Recover {
        room: RoomName,
        format: Format,
        from: StreamPosition,
        core: CoreId,
        token: RecoveryToken,
    },
    /// History or presence, answered to `reply_to`.
    Query {
        room: RoomName,
        query: Query,
        reply_to: ReplyTo,
    },
    /// A subscriber of a presence room joined or left.
    Presence {
        room: RoomName,
        change: PresenceChange,
        info: ClientInfo,
    },
    /// Not a room's: sent to every core (the HTTP API's disconnect and
    /// unsubscribe). Do `action` to each of the core's connections whose
    /// user is `user`, then answer [`FromHome::Tallied`] to `waiter` in
    /// `asker`'s table of counts. It rides the events inbox like the rest,
    /// so it never waits and keeps its order with what the asker sent
    /// before it.
    Members {
        user: String,
        action: MemberAction,
        asker: CoreId,
        waiter: WaiterId,
    },
}

/// What [`ToHome::Members`] does to each of a user's connections on a core.
#[derive(Debug, Clone)]
pub(crate) enum MemberAction {
    /// Close the connection with `code` (what was queued for it is
    /// discarded); it leaves its rooms as its session ends.
    Disconnect { code: u16 },
    /// Take the connection out of `room` (and its presence), as if it had
    /// unsubscribed; the connection stays open.
    Unsubscribe { room: RoomName },
}

/// From a room's home.
#[derive(Debug)]
pub(crate) enum FromHome {
    /// The answer to `Interest`: deliveries of `room` in `format` to this
    /// core start after `position`; or the engine could not say, and the
    /// waiting subscribers are refused.
    Interested {
        room: RoomName,
        format: Format,
        position: Result<StreamPosition, EngineError>,
    },
    /// One sequenced publication to fan out to local subscribers.
    Deliver {
        room: RoomName,
        offset: Offset,
        frames: Frames,
        /// When the home sequenced it (its publish answered, or its feed
        /// item in): the start of the delivery lag the receiving core
        /// measures (`roomcast_publish_delivery_lag_seconds`).
        sequenced_at: Instant,
    },
    /// The answer to `Recover`. Every delivery the home sent this core
    /// before it arrives first.
    Recovered {
        room: RoomName,
        format: Format,
        token: RecoveryToken,
        recovery: Result<Recovery, EngineError>,
    },
    /// The outcome of a request of one of this core's connections or waiters.
    Reply { to: ReplyTo, outcome: Outcome },
    /// A join or leave event for subscribers that asked for them.
    PresenceEvent { room: RoomName, frames: Frames },
    /// The answer to [`ToHome::Members`]: the sending core acted on
    /// `affected` connections.
    Tallied { waiter: WaiterId, affected: usize },
    /// The room's order was lost (the engine's store lost it): its
    /// subscribers here are closed so that they resume, and deliveries go
    /// on after `position`.
    Lost {
        room: RoomName,
        position: StreamPosition,
    },
}

/// What a core's events inbox carries: both directions, each in its own
/// type, in one queue so that what a core sends another keeps its order.
#[derive(Debug)]
pub(crate) enum Event {
    ToHome(ToHome),
    FromHome(FromHome),
}
