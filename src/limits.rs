//! Every bound and policy a connection lives under, in one place, copied out
//! of [`Config`] once so the hot path reads plain fields.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::config::Config;

/// What to do with a subscriber whose outbound queue is full (by bytes,
/// messages or age of its oldest message). Never silent: both outcomes are
/// counted in the stats, and `drop-oldest` leaves a visible offset gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// Default. Discard the queue and close with 1013 `slow consumer`; the
    /// client may reconnect (and, with history, resume).
    #[default]
    Close,
    /// Drop the oldest queued messages until the new one fits; the client
    /// sees the gap in offsets.
    DropOldest,
}

impl FromStr for SlowConsumerPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "close" => Ok(SlowConsumerPolicy::Close),
            "drop-oldest" | "drop_oldest" => Ok(SlowConsumerPolicy::DropOldest),
            _ => Err(format!(
                "{s:?} is not a policy (expected close or drop-oldest)"
            )),
        }
    }
}

impl fmt::Display for SlowConsumerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlowConsumerPolicy::Close => "close",
            SlowConsumerPolicy::DropOldest => "drop-oldest",
        })
    }
}

/// WebSocket close codes the server sends; docs/PROTOCOL.md has the table.
pub mod close_code {
    /// The client sent a close frame: we echo its code (or 1000).
    pub const NORMAL: u16 = 1000;
    /// A protocol violation at the WebSocket layer (bad frame, bad close code).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame: this protocol is binary only.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// An envelope that does not decode.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message over `max_message_size` or `max_fragments`.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The node is shutting down: reconnect (elsewhere).
    pub const SERVICE_RESTART: u16 = 1012;
    /// Sustained abuse: `rate_limit_close_after` rate-limited publishes in a row.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// The subscriber could not keep up (`slow_consumer = "close"`).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// No pong within `pong_timeout` of a ping.
    pub const HEARTBEAT_TIMEOUT: u16 = 4000;
    /// The connection's token expired and no `refresh` came in time.
    pub const TOKEN_EXPIRED: u16 = 4001;
}

/// Per-connection bounds, copied from the config.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_message_size: usize,
    pub max_fragments: usize,
    pub max_rooms_per_connection: usize,
    pub outbound: OutboundLimits,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub close_timeout: Duration,
}

/// Bounds of one subscriber's outbound queue and what happens past them.
#[derive(Debug, Clone, Copy)]
pub struct OutboundLimits {
    pub max_bytes: usize,
    pub max_messages: usize,
    pub max_age: Duration,
    pub policy: SlowConsumerPolicy,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            max_message_size: config.max_message_size,
            max_fragments: config.max_fragments,
            max_rooms_per_connection: config.max_rooms_per_connection,
            outbound: OutboundLimits {
                max_bytes: config.outbound_max_bytes,
                max_messages: config.outbound_max_messages,
                max_age: config.outbound_max_age,
                policy: config.slow_consumer,
            },
            ping_interval: config.ping_interval,
            pong_timeout: config.pong_timeout,
            close_timeout: config.close_timeout,
        }
    }
}
