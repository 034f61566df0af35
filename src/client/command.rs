//! What the [`Client`] handle and its driver task exchange. The handle
//! keeps no client state: each call becomes a [`Command`] carrying its own
//! reply channel, so the driver, the only owner of that state, needs no lock.
//!
//! [`Client`]: super::Client

use std::sync::atomic::AtomicU32;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use super::{ClientError, PublishAck, SubscribeInfo, SubscribeOptions};
use crate::protocol::{ClientOp, IdempotencyKey, Outcome, RoomName};

/// Where a caller waits for its answer.
pub(super) type Responder<T> = oneshot::Sender<Result<T, ClientError>>;

/// State the handle and the driver both see.
#[derive(Default)]
pub(super) struct Shared {
    close_reason: Mutex<Option<(u16, String)>>,
    /// Wakes the driver to drop its connection (a `test-hooks` seam).
    pub(super) drop_connection: Notify,
    /// Acknowledged publishes still to be sent whose ack is to be discarded
    /// as if lost (a `test-hooks` seam).
    pub(super) lose_publish_acks: AtomicU32,
}

impl Shared {
    pub(super) fn close_reason(&self) -> Option<(u16, String)> {
        self.close_reason.lock().ok().and_then(|c| c.clone())
    }

    pub(super) fn set_close_reason(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.close_reason.lock() {
            *slot = Some((code, reason.to_owned()));
        }
    }
}

/// What the handle asks of the driver.
pub(super) enum Command {
    Subscribe {
        room: RoomName,
        options: SubscribeOptions,
        reply: Responder<SubscribeInfo>,
    },
    Unsubscribe {
        room: RoomName,
        reply: Responder<()>,
    },
    Publish {
        room: RoomName,
        data: Bytes,
        key: KeyChoice,
        reply: PublishReply,
    },
    /// History and presence: answered on this connection or not at all.
    Query {
        op: ClientOp,
        reply: Responder<Outcome>,
    },
    Close {
        reply: Responder<()>,
    },
}

/// Which idempotency key a publish carries.
pub(super) enum KeyChoice {
    None,
    Automatic,
    Given(IdempotencyKey),
}

/// Who hears about a publish, and when.
pub(super) enum PublishReply {
    /// Answered with the server's ack (or error), across reconnects.
    Ack(Responder<PublishAck>),
    /// Answered as soon as the publication is sent or queued.
    Accepted(Responder<()>),
}
