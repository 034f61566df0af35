//! One error type for every client call, so that a caller matches on one
//! enum whether the failure came from the socket, the server or the
//! client's own bounds.

use crate::protocol::{Outcome, MAX_IDEMPOTENCY_KEY_BYTES};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The first connection could not be opened (TCP, or it took longer than
    /// [`ClientOptions::connect_timeout`]).
    ///
    /// [`ClientOptions::connect_timeout`]: super::ClientOptions::connect_timeout
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server refused the WebSocket upgrade, or did not echo our subprotocol.
    #[error("handshake refused: {0}")]
    Handshake(String),
    #[error("invalid room name: {0}")]
    InvalidRoom(#[from] crate::protocol::RoomNameError),
    /// An idempotency key longer than the protocol allows.
    #[error("idempotency key is {0} bytes, the limit is {MAX_IDEMPOTENCY_KEY_BYTES}")]
    KeyTooLong(usize),
    /// The server answered with an error reply.
    #[error("server error {code}: {message}")]
    Server { code: u32, message: String },
    /// The server answered with a reply of the wrong kind for the request.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// The client is disconnected and [`ClientOptions::max_queued_publishes`]
    /// publications already wait for the next connection.
    ///
    /// [`ClientOptions::max_queued_publishes`]: super::ClientOptions::max_queued_publishes
    #[error("disconnected, and the publish queue is full")]
    QueueFull,
    /// The request needs a live connection (history, presence) and there was
    /// none, or it dropped before the reply.
    #[error("not connected")]
    Disconnected,
    /// The room was unsubscribed before its subscription was confirmed.
    #[error("unsubscribed before the subscription was confirmed")]
    Unsubscribed,
    /// The client is closed for good: [`Client::close`], a close code that
    /// allows no reconnect, or every reconnect attempt failed. Carries the
    /// server's last close code and reason, when it sent one.
    ///
    /// [`Client::close`]: super::Client::close
    #[error("connection closed{}", .0.as_ref().map(|(c, r)| format!(" by the server with {c} {r:?}")).unwrap_or_default())]
    Closed(Option<(u16, String)>),
}

/// A reply of the wrong kind, named for the request it answered.
pub(super) fn unexpected(request: &str, outcome: &Outcome) -> ClientError {
    ClientError::UnexpectedReply(format!("{request} answered with {outcome:?}"))
}
