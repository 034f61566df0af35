//! Sockets: the per-core listener, the HTTP handshake and upgrade, and the
//! WebSocket session that reads requests and writes the outbound queue.

pub mod http;
pub mod listener;
pub mod outbound;
pub mod session;
pub mod tls;
