//! Requests between a call and the server's answer. They outlive the
//! connection they were sent on, so that a publish whose ack was lost is
//! sent again on the next one, in its original order.

use bytes::Bytes;

use super::command::Responder;
use super::PublishAck;
use crate::protocol::{ClientOp, IdempotencyKey, Outcome, RoomName, StreamPosition};

/// A publication on its way to the server.
pub(super) struct Publication {
    pub(super) room: RoomName,
    pub(super) data: Bytes,
    pub(super) key: Option<IdempotencyKey>,
    /// `None` for fire-and-forget: sent with id 0, never retried.
    pub(super) ack: Option<Responder<PublishAck>>,
}

impl Publication {
    pub(super) fn op(&self) -> ClientOp {
        ClientOp::Publish {
            room: self.room.clone(),
            data: self.data.clone(),
            idempotency_key: self.key.clone(),
        }
    }
}

/// A request that waits for a connection (and for resubscribing to finish).
pub(super) enum Waiting {
    Publish(Publication),
    /// An unsubscribe from a room this client does not know as subscribed:
    /// only the server can answer it.
    Unsubscribe {
        room: RoomName,
        reply: Responder<()>,
    },
}

/// A request sent on the current connection, waiting for its reply.
pub(super) enum InFlight {
    Subscribe {
        room: String,
        /// Which [`RoomState`] asked: a room unsubscribed and subscribed
        /// again ignores the replies meant for the earlier one.
        ///
        /// [`RoomState`]: super::rooms::RoomState
        generation: u64,
        join_leave: bool,
        recover: Option<StreamPosition>,
        /// Part of the batch sent after a reconnect, which holds back the
        /// queued publishes until it is answered.
        resubscribe: bool,
    },
    Unsubscribe(Responder<()>),
    Publish(Publication),
    Query(Responder<Outcome>),
}
