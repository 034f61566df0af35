//! Sockets, and nothing else: the per-core listener and accept loop, TLS,
//! the HTTP handshake and upgrade, the WebSocket session that reads
//! frames into requests for its member and writes the member's outbound
//! queue, and the Server-Sent Events stream that writes a member's queue
//! as events. Everything below (router, engine, protocol) is reached through
//! the member handle and never imports this module.

pub(crate) mod http;
pub(crate) mod listener;
pub(crate) mod session;
pub(crate) mod sse;
pub(crate) mod tls;
