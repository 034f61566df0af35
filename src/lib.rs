//! # roomcast
//!
//! A binary-protocol WebSocket broker: clients join rooms, and every
//! publication to a room reaches every subscriber of it, in order, with
//! bounded memory. Envelopes are MessagePack or Protobuf, chosen per
//! connection by subprotocol.
//!
//! ## Layout, in the order a message travels
//! 1. [`config`]: every setting with its default; `limits` holds every
//!    bound (configurable or fixed) in one place, and `node` what all
//!    cores share.
//! 2. `runtime`: one named thread per core, each with its own tokio
//!    runtime; starts the cores whole or not at all, and stops them.
//! 3. `transport`: sockets only. The per-core `SO_REUSEPORT` listener,
//!    TLS, the HTTP upgrade (`admission` and `auth` check it), and the
//!    WebSocket session: it reads frames, reassembles, decodes, checks, and
//!    calls its member; its writer drains the member's outbound queue. A
//!    Server-Sent Events stream is a member too, whose queue is written
//!    out as events.
//! 4. [`protocol`]: envelopes, the two codecs, the shared outgoing frames.
//! 5. `router`: the member handle (one client's membership), the bounded
//!    queues between cores, the per-core driver, the home side of a room
//!    (a state machine that completes each room's steps in order), and the
//!    shard of local subscribers (fan-out into outbound queues).
//! 6. `engine`: sequencing, history, idempotency and presence behind an
//!    asynchronous-capable, fallible trait (in memory, or in Redis shared by
//!    every node of a cluster, delivering from the room's channel), with
//!    per-room options from `rules`.
//! 7. `metrics`: the per-core counters, gauges and histograms, summed
//!    when read; `admin`: the admin listener (`/stats`, `/metrics` in the
//!    Prometheus format, `/health`, `/ready`, the backend HTTP API) on a
//!    port of its own.
//! 8. [`client`]: an async Rust client that survives reconnects.
//!
//! ## Life of a publication
//! 1. A core's listener accepts the socket; `transport::http` upgrades it
//!    and picks the codec; the session creates the connection's member.
//! 2. The session reads a frame (its own reader: it keeps no buffer while
//!    the connection is idle, and refuses unmasked client frames),
//!    reassembles fragments
//!    within the limits, and decodes the envelope zero-copy: the payload
//!    (and, in MessagePack, the room name) is a slice of the received buffer.
//! 3. It checks the publish against the connection's grants and rate, then
//!    calls `Member::publish`, which hands it to the room's home core
//!    through that core's bounded `publishes` queue; if it is full, the
//!    session stops reading until there is room.
//! 4. The home core's driver begins the step in its `Home` and starts the
//!    engine's operation; when the answer comes (at once, from memory) the
//!    home sequences the publication and builds the outgoing WebSocket frame
//!    once per format in use.
//! 5. It fans the shared frame out to its own shard and posts it to each
//!    other core with subscribers of the room; the ack goes back to the
//!    publisher's core.
//! 6. Each of those cores pushes a reference to the same bytes into each
//!    local subscriber's bounded queue (`router::shard`); a full queue
//!    triggers the slow-consumer policy.
//! 7. Each session's writer drains its queue in one vectored write.
//!
//! docs/ARCHITECTURE.md tells the same story with the invariants.

pub mod config;
mod limits;
mod node;
mod runtime;

mod admission;
mod auth;
mod transport;

pub mod protocol;

mod router;

mod engine;
mod rules;

mod metrics;

mod admin;

pub mod client;

#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod hooks;

pub use auth::KeyError;
pub use config::Config;
pub use metrics::StatsSnapshot;
pub use runtime::{run, Server, StartError};
pub use transport::tls::TlsError;
