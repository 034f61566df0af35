//! Test helpers, shared by every file in `tests/` (each one `mod common;`),
//! so that no test file keeps a copy of its own:
//!
//! - [`broker`]: a real broker on an ephemeral port that shuts down when
//!   dropped, the test settings, and waiting on a client.
//! - [`http`]: requests to the admin listener's HTTP API, with its key.
//! - [`ws`]: raw HTTP and WebSocket access, for sending what a
//!   well-behaved client never would: handshake requests and header lines,
//!   client frames built by hand, and a strict parser of server frames.
//! - [`jwt`]: signing tokens, and the clock their claims use.
//! - [`peer`]: a protocol client over a raw WebSocket that never
//!   reconnects, so a test controls every cut.
//! - [`sse`]: a Server-Sent Events reader over raw HTTP (chunks taken
//!   apart, events parsed as a browser parses them).
//! - [`msgpack`]: one MessagePack tree type and its writer, for envelopes
//!   our encoder would never write and for reading the test vectors.
//! - [`protobuf`]: protobuf varints and fields written by hand.
//! - [`process`]: running a program with a deadline; [`python`]: the
//!   project's Python scripts, with their packages checked first.
//! - [`tls`]: a self-signed certificate made with openssl.
//! - [`node`]: a roomcast node as its own process, to kill or stall.
//! - [`redis`]: real `redis-server` processes, standalone or a 3-master
//!   cluster, on free ports.
//!
//! Each test binary uses only some of these.
#![allow(dead_code, unreachable_pub)]

pub mod broker;
pub mod http;
pub mod jwt;
pub mod msgpack;
pub mod node;
pub mod peer;
pub mod process;
pub mod protobuf;
pub mod python;
pub mod redis;
pub mod sse;
pub mod tls;
pub mod ws;
