//! # roomcast
//!
//! A binary-protocol WebSocket broker: clients join rooms, and every
//! publication to a room reaches every subscriber of it, in order, with
//! bounded memory. Envelopes are MessagePack or Protobuf, chosen per
//! connection by subprotocol.
//!
//! ## Layout, in the order a message travels
//! 1. [`config`], [`limits`]: every setting, bound and policy.
//! 2. [`runtime`]: one thread per core, each with its own tokio runtime.
//! 3. [`transport`]: the per-core `SO_REUSEPORT` listener, the HTTP upgrade,
//!    the session (the connection loop) and its bounded outbound queue.
//! 4. [`protocol`]: envelopes, the two codecs, the shared outgoing frames.
//! 5. [`router`]: a room's home core, the messages and bounded queues
//!    between cores, the home side (sequence + encode once), and the shard
//!    of local subscribers (fan-out).
//! 6. [`engine`]: sequencing, history, idempotency and presence, behind a
//!    trait (in memory now; Redis later), with per-room options from [`rules`].
//! 7. [`metrics`], the counters.
//! 8. [`client`], a small async Rust client.
//!
//! ## Life of a publication
//! 1. A core's listener accepts the socket; [`transport::http`] upgrades it
//!    and picks the codec.
//! 2. [`transport::session`] reads a frame (fastwebsockets), reassembles
//!    fragments within the limits, and decodes the envelope zero-copy: the
//!    payload (and, in MessagePack, the room name) is a slice of the received
//!    buffer.
//! 3. The session hands the publication to the room's home core
//!    ([`router::home_core`]) through that core's bounded `publishes` queue;
//!    if it is full, the session stops reading until there is room.
//! 4. The home core sequences it ([`engine::Engine`]) and builds the
//!    outgoing WebSocket frame once per codec in use ([`protocol::frame`]).
//! 5. It fans the shared frame out to its own subscribers and posts it to
//!    each other core with subscribers of the room.
//! 6. Each of those cores pushes a reference to the same bytes into each
//!    local subscriber's bounded queue ([`router::shard`]); a full queue
//!    triggers the slow-consumer policy.
//! 7. Each session's writer drains its queue in one vectored write.
//!
//! docs/ARCHITECTURE.md tells the same story with the invariants.

pub mod admission;
pub mod auth;
pub mod client;
pub mod config;
pub mod engine;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod router;
pub mod rules;
pub mod runtime;
pub mod transport;

pub use config::Config;
pub use runtime::{run, Server, StartError};
