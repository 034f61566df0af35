//! How to connect and how to subscribe, each setting with its default.

use std::time::Duration;

use crate::protocol::StreamPosition;

/// How to subscribe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeOptions {
    /// Also receive [`Event::Presence`] joins and leaves (rooms configured
    /// with join and leave events only; others answer error 106).
    ///
    /// [`Event::Presence`]: super::Event::Presence
    pub join_leave: bool,
    /// Start after this position (from a previous session) instead of now,
    /// if the room's history still holds it.
    pub recover: Option<StreamPosition>,
}

/// Connection options beyond address and codec. (`Debug` leaves the token out.)
#[derive(Clone)]
pub struct ClientOptions {
    /// The WebSocket path. Default `/ws`.
    pub path: String,
    /// Events buffered before the client stops reading its socket. Default 4096.
    pub message_buffer: usize,
    /// The first reconnect waits a random time up to this; each failed
    /// attempt doubles the bound. Default 100 ms.
    pub backoff_base: Duration,
    /// The largest bound a reconnect wait is drawn from. Default 10 s.
    pub backoff_max: Duration,
    /// Failed connection attempts in a row before the client gives up;
    /// `Some(0)` never reconnects. Default `None`: keep trying.
    pub max_reconnect_attempts: Option<u32>,
    /// Publications kept while disconnected; past it, publishing fails with
    /// [`ClientError::QueueFull`]. Default 1024.
    ///
    /// [`ClientError::QueueFull`]: super::ClientError::QueueFull
    pub max_queued_publishes: usize,
    /// Time for TCP connect plus the WebSocket upgrade. Default 10 s.
    pub connect_timeout: Duration,
    /// A server that sends nothing (not even a ping) for this long is taken
    /// for gone and the connection is replaced; `None` waits on the socket
    /// forever. Keep it well above the server's `ping_interval` (25 s by
    /// default). Default 60 s.
    pub server_silence_timeout: Option<Duration>,
    /// Largest server message accepted, in bytes; a history page can hold
    /// many publications. Default 64 MiB.
    pub max_message_size: usize,
    /// A JWT sent as `Authorization: Bearer` on every connection attempt
    /// (the latest one given to [`Client::refresh`]). Default none.
    ///
    /// [`Client::refresh`]: super::Client::refresh
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("path", &self.path)
            .field("message_buffer", &self.message_buffer)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("max_queued_publishes", &self.max_queued_publishes)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_silence_timeout", &self.server_silence_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            path: "/ws".to_owned(),
            message_buffer: 4096,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_reconnect_attempts: None,
            max_queued_publishes: 1024,
            connect_timeout: Duration::from_secs(10),
            server_silence_timeout: Some(Duration::from_secs(60)),
            max_message_size: 64 << 20,
            token: None,
        }
    }
}
