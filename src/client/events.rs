//! What the client hands the application: events, and the answers to
//! subscribe and publish.

use bytes::Bytes;

use super::ClientError;
use crate::protocol::{ClientInfo, Epoch, Offset, PresenceChange, StreamPosition};

/// A publication delivered to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: String,
    pub offset: Offset,
    pub data: Bytes,
}

/// What the client tells the application, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A publication to a subscribed room.
    Message(Message),
    /// Someone joined or left a room subscribed with `join_leave`.
    Presence {
        change: PresenceChange,
        room: String,
        info: ClientInfo,
    },
    /// The connection ended. `reconnecting` is false when the client gives
    /// up here (then the event stream ends).
    Disconnected {
        cause: DisconnectCause,
        reconnecting: bool,
    },
    /// A new connection is open; `attempts` is how many tries it took (1:
    /// the first one). [`Event::Resubscribed`] follows for each room.
    Reconnected { attempts: u32 },
    /// A room is subscribed again after a reconnect. `recovered: false`
    /// means publications were missed (the room's history did not reach
    /// back to the last message delivered, or the room's epoch changed):
    /// reload what you know of the room as of `position`, the room's epoch
    /// and current offset. Messages after `position.offset` follow.
    Resubscribed {
        room: String,
        recovered: bool,
        position: StreamPosition,
    },
    /// The server refused to subscribe the room again after a reconnect;
    /// the client no longer follows it.
    SubscriptionLost { room: String, error: ClientError },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectCause {
    /// The server sent a close frame (1005 when it carried no code).
    Closed { code: u16, reason: String },
    /// The socket failed or ended without a close frame, or the server sent
    /// nothing for [`ClientOptions::server_silence_timeout`].
    ///
    /// [`ClientOptions::server_silence_timeout`]: super::ClientOptions::server_silence_timeout
    Lost(String),
}

impl DisconnectCause {
    /// Whether reconnecting can help. Not after a normal close (the server
    /// meant it) or a close that blames this client's own frames: sending
    /// them again would only be closed again.
    pub(super) fn allows_reconnect(&self) -> bool {
        match self {
            DisconnectCause::Closed { code, .. } => {
                !matches!(code, 1000 | 1002 | 1003 | 1007 | 1008 | 1009 | 1010 | 4001)
            }
            DisconnectCause::Lost(_) => true,
        }
    }
}

/// The answer to a subscribe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeInfo {
    /// The room's epoch: keep it with the offsets you store, to recover later.
    pub epoch: Epoch,
    /// The room's current offset: the next live message has offset + 1.
    pub offset: Offset,
    /// With [`SubscribeOptions::recover`]: whether every publication after
    /// the given position follows.
    ///
    /// [`SubscribeOptions::recover`]: super::SubscribeOptions::recover
    pub recovered: bool,
}

/// The answer to an acknowledged publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishAck {
    /// The offset the room gave the publication.
    pub offset: Offset,
    /// The server had already published this idempotency key: this was a
    /// retry, and nothing was published again.
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_that_blame_the_client_or_mean_it_end_the_client() {
        let closed = |code| DisconnectCause::Closed {
            code,
            reason: String::new(),
        };
        for code in [1001, 1005, 1011, 1012, 1013, 4000] {
            assert!(closed(code).allows_reconnect(), "{code}");
        }
        for code in [1000, 1002, 1003, 1007, 1009] {
            assert!(!closed(code).allows_reconnect(), "{code}");
        }
        assert!(DisconnectCause::Lost("reset".into()).allows_reconnect());
    }
}
