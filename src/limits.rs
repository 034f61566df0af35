//! Every bound and policy, in one place: the configurable ones (copied out
//! of the configuration once, by `Config::limits`, so the hot path reads
//! plain fields) and the fixed ones, each with its value and the reason for
//! it. The settings table in `config.rs` documents the configurable ones
//! with their defaults; the README repeats both lists.
//!
//! Queues and their bounds, end to end:
//! * a core's two inboxes (`publishes`, and `events`, which carries the
//!   messages both to and from homes): `core_queue_capacity` messages each;
//! * a core's overflow of events that found an inbox full: at most one
//!   delivery per destination core per publication, because the core takes
//!   no new publication while it holds any;
//! * a connection's outbound queue: `outbound_max_bytes`,
//!   `outbound_max_messages`, `outbound_max_age`, then `slow_consumer`;
//! * a connection's pending pongs: [`MAX_PENDING_PONGS`];
//! * a home's steps waiting for the engine (all rooms together):
//!   `core_queue_capacity`; past it, the core takes no new publication
//!   until answers come (a connection has at most one subscribe or query
//!   in flight; its publishes are what this bounds).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

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
    /// The room's order was lost by the engine's store (Redis restarted
    /// without persistence, or a gap its history no longer holds): resume
    /// with `recover` to learn whether anything was missed.
    pub const ROOM_STATE_LOST: u16 = 4002;
    /// The backend closed the connection through the HTTP API
    /// (`POST /api/disconnect` without a code of its own).
    pub const DISCONNECTED: u16 = 4003;
}

/// Per-connection bounds, copied from the config.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) max_message_size: usize,
    pub(crate) max_fragments: usize,
    pub(crate) max_rooms_per_connection: usize,
    pub(crate) outbound: OutboundLimits,
    pub(crate) ping_interval: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) close_timeout: Duration,
}

/// Bounds of one subscriber's outbound queue and what happens past them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutboundLimits {
    pub(crate) max_bytes: usize,
    pub(crate) max_messages: usize,
    pub(crate) max_age: Duration,
    pub(crate) policy: SlowConsumerPolicy,
}

/// MessagePack nesting deeper than this is refused as malformed (1007),
/// before it costs stack; no envelope needs more than 4. (Protobuf has
/// prost's own recursion limit.) The wire's own bounds, the longest room
/// name and idempotency key, are part of the protocol: see
/// `protocol::MAX_ROOM_NAME_BYTES` and `protocol::MAX_IDEMPOTENCY_KEY_BYTES`.
pub(crate) const MAX_ENVELOPE_DEPTH: usize = 16;

/// Frames handed to one vectored write, at most (below `IOV_MAX`, 1024).
pub(crate) const WRITE_BATCH_FRAMES: usize = 512;

/// Bytes handed to one vectored write, about: enough to fill a socket's
/// send buffer in one call, small enough to keep the heartbeat on time.
pub(crate) const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// A write copies its leading frames of at most `WRITE_GATHER_FRAME_MAX`
/// bytes each into one per-core buffer, up to `WRITE_GATHER_BYTES`, and
/// writes that: the kernel copies one buffer in, where a vectored write of
/// small frames paid its per-segment cost on every frame
/// (`transport::session::writer`).
pub(crate) const WRITE_GATHER_FRAME_MAX: usize = 2048;
pub(crate) const WRITE_GATHER_BYTES: usize = 64 * 1024;

/// Unsent answers to pings kept per connection. RFC 6455 lets a server
/// answer only the latest ping, so a ping flood replaces the oldest and
/// costs no memory.
pub(crate) const MAX_PENDING_PONGS: usize = 16;

/// Rooms one Server-Sent Events stream may name, at most (and never more
/// than `max_rooms_per_connection`). Each event's id carries every room's
/// position (about 38 bytes a room), and a browser sends the last one back
/// in `Last-Event-ID`: 64 rooms keep that header near 2.4 KiB, well inside
/// `max_header_bytes` (8192).
pub(crate) const SSE_MAX_ROOMS: usize = 64;

/// Inbox messages a core's driver handles before it lets the core's
/// sessions run again: long enough to amortise a wake-up, short enough that
/// a busy home does not starve its own connections.
pub(crate) const DRIVER_BATCH: usize = 256;

/// How often a home drops expired history and idempotency keys and forgets
/// unused rooms. Expiry is checked again when a room is touched, so this
/// only bounds the memory of rooms nobody touches.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The bounds of the heartbeat's tick: how often a core walks its
/// connections for due pings, unanswered pings and expired tokens (a
/// quarter of the shorter of `ping_interval` and `pong_timeout`, within
/// these). The upper bound is how late a deadline may be acted on with
/// long intervals; the lower, how often a core walks them at most.
pub(crate) const HEARTBEAT_TICK_MIN: Duration = Duration::from_millis(10);
pub(crate) const HEARTBEAT_TICK_MAX: Duration = Duration::from_secs(1);

/// How often each core hands the memory it has freed back to the system
/// (`runtime::memory`): after a burst of handshakes, an idle core would
/// otherwise keep it.
pub(crate) const MEMORY_RETURN_INTERVAL: Duration = Duration::from_secs(1);

/// Listen backlog of each core's socket: a burst of connects waits in the
/// kernel instead of being refused.
pub(crate) const LISTEN_BACKLOG: i32 = 4096;

/// Pause after a failed `accept` (out of file descriptors, typically),
/// doubled per failure up to [`ACCEPT_BACKOFF_MAX`], reset by a success.
pub(crate) const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub(crate) const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long an early refusal (503, 429 before the request is read) may
/// take to write before the socket is dropped.
pub(crate) const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP API: operations in one `POST /api/batch`, at most. With
/// [`API_BROADCAST_MAX_ROOMS`] it bounds the answer's length; the work one
/// request can ask for is bounded by `api_max_body_bytes` too (a room name
/// costs at least 4 bytes of JSON).
pub(crate) const API_BATCH_MAX_OPERATIONS: usize = 1_000;

/// The HTTP API: rooms in one `POST /api/broadcast` (or one broadcast of a
/// batch), at most.
pub(crate) const API_BROADCAST_MAX_ROOMS: usize = 1_000;

/// The HTTP API: how long a request waits for the cores' answers before
/// it gets 504 (error 110). A home answers every step, so this is only hit
/// when an engine stalls past its own timeout or a core has stopped; a
/// publish answered this way may or may not have been stored, as with
/// error 110 on the WebSocket (retry it under its idempotency key).
pub(crate) const API_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP API: bytes of a body over `api_max_body_bytes` that are read
/// and thrown away before the 413 is sent, so that a client still writing
/// its body reads the answer instead of a connection reset. A larger body
/// is answered at once and its connection closed.
pub(crate) const API_DISCARD_MAX: usize = 4 * 1024 * 1024;

/// While draining, how often a core looks again for its last sessions
/// even when no mail wakes it.
pub(crate) const DRAIN_POLL: Duration = Duration::from_millis(20);

/// A core that is still draining this long after `drain_period` plus
/// `close_timeout` stops anyway.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The Rust client: commands queued from a `Client` handle to its driver
/// task. Every one carries its own reply channel, so the bound only limits
/// concurrent callers.
pub(crate) const CLIENT_COMMAND_CAPACITY: usize = 1024;

/// The Rust client: frames queued for one connection's writer task.
pub(crate) const CLIENT_OUTGOING_CAPACITY: usize = 1024;

/// The Rust client: decoded server envelopes queued from one connection's
/// reader task to the driver; when full, the reader stops reading the
/// socket (and the server's slow-consumer policy applies to the client).
pub(crate) const CLIENT_INCOMING_CAPACITY: usize = 256;

/// The Rust client: how long `Client::close` waits for the server's close
/// frame after sending its own.
pub(crate) const CLIENT_CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis engine: partitions rooms are spread over, each with its own
/// hash tag (so its own slot). Bounds per-partition work (one SUNSUBSCRIBE
/// per partition) however many rooms exist. Every node of a cluster must
/// agree on it.
pub(crate) const REDIS_PARTITIONS: usize = 128;

/// The Redis engine: channel messages fred may hold for one core before
/// the core reads them. Past it the receiver lags: the core then
/// subscribes its rooms again and fills what it missed from history (the
/// ring costs about 8 × this × 100 bytes per core: fred sizes all its
/// notification channels alike).
pub(crate) const REDIS_MESSAGE_CAPACITY: usize = 4096;

/// The Redis engine: channel messages one room may hold while its feed
/// waits for a gap to be filled from history; past it the newest are
/// dropped, to be read from history in turn.
pub(crate) const FILL_BUFFER_MAX: usize = 1024;

/// The Redis engine: channel messages handled per turn of a core's driver,
/// so a flood from Redis cannot starve the core's own connections.
pub(crate) const REDIS_MESSAGES_PER_TURN: usize = 1024;

/// The Redis engine: how long a room nobody on this node subscribes to any
/// more stays subscribed in Redis, so churn (leave, join again) costs no
/// round trip.
pub(crate) const UNFOLLOW_DELAY: Duration = Duration::from_secs(2);

/// The Redis engine: a followed room whose channel brought nothing for
/// this long has its position read from Redis; one that moved without a
/// message here is subscribed again and its gap filled. This is how a
/// subscription Redis dropped without a word (a slot moved, a master
/// demoted) or a lost last message is noticed.
pub(crate) const POSITION_CHECK: Duration = Duration::from_secs(1);

/// The Redis engine: rooms of one partition whose positions one check
/// reads at most.
pub(crate) const CHECK_BATCH: usize = 64;

/// The Redis engine: a presence entry its node stopped refreshing (the
/// node died) is purged this long after the last refresh.
pub(crate) const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// The Redis engine: how often a node refreshes its presence entries and
/// the epochs of the rooms it follows.
pub(crate) const PRESENCE_REFRESH: Duration = Duration::from_secs(10);

/// The Redis engine: the life of the idempotency key a node gives a
/// publish that came without one. It only has to outlive the client
/// library's re-send of a command after a reconnect.
pub(crate) const NODE_KEY_TTL: Duration = Duration::from_secs(10);

/// The Redis engine: a room's epoch outlives its history and keys by this
/// much, so a client resuming late is told `recovered: false` rather than
/// meeting its old offsets under a new epoch.
pub(crate) const META_TTL_MARGIN: Duration = Duration::from_secs(3600);

/// The Redis engine: fred's reconnect delay grows from the first to the
/// second, forever.
pub(crate) const REDIS_RECONNECT_DELAY: (u32, u32) = (100, 2_000);

/// The dashboard: one publication in this many is counted towards its
/// room's rate in the top-rooms table (an estimate; see `router::top_rooms`).
pub(crate) const TOP_ROOMS_SAMPLE_EVERY: u32 = 16;

/// The dashboard: rooms whose sampled rate each core tracks at most.
pub(crate) const TOP_ROOMS_TRACKED: usize = 128;

/// The dashboard: rooms each core reports, and the table shows.
pub(crate) const TOP_ROOMS_SHOWN: usize = 10;

/// The dashboard: interval between samples sent to its viewers.
pub(crate) const DASHBOARD_INTERVAL: Duration = Duration::from_secs(1);
