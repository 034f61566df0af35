//! A client speaking the protocol over a raw WebSocket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use roomcast::protocol::{ClientOp, Codec, Outcome, RoomName, ServerEvent};

use super::ws::{offer, pong, RawWs};

/// A room name that is valid.
pub fn room(name: &str) -> RoomName {
    RoomName::new(name).unwrap()
}

/// A client speaking the protocol over a raw WebSocket: requests are encoded
/// with `codec`, server envelopes decoded, pings answered. Unlike the Rust
/// client it never reconnects, so a test controls every cut.
pub struct Peer {
    pub ws: RawWs,
    pub codec: Codec,
    next_id: u64,
    /// Events read while waiting for a reply, handed out by `event` first.
    early: VecDeque<ServerEvent>,
}

impl Peer {
    pub async fn connect(addr: SocketAddr, codec: Codec) -> Peer {
        Peer::with_headers(addr, codec, "").await
    }

    /// Connects with extra handshake header lines (a token, an origin).
    pub async fn with_headers(addr: SocketAddr, codec: Codec, extra: &str) -> Peer {
        Peer {
            ws: RawWs::connect(addr, &format!("{}{extra}", offer(codec))).await,
            codec,
            next_id: 1,
            early: VecDeque::new(),
        }
    }

    /// Sends `op` with a fresh request id, returned.
    pub async fn send(&mut self, op: ClientOp) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_with_id(id, op).await;
        id
    }

    pub async fn send_with_id(&mut self, id: u64, op: ClientOp) {
        self.ws.send_request(self.codec, id, op).await.unwrap();
    }

    /// Sends `op` and waits for its reply (events read meanwhile are kept).
    pub async fn request(&mut self, op: ClientOp) -> Outcome {
        let id = self.send(op).await;
        loop {
            match self.read_event().await {
                Some(ServerEvent::Reply(reply)) if reply.id.0 == id => return reply.outcome,
                Some(other) => self.early.push_back(other),
                None => panic!("connection ended before the reply to request {id}"),
            }
        }
    }

    /// The next event; `None` when the connection closes or 10 s pass.
    pub async fn event(&mut self) -> Option<ServerEvent> {
        match self.early.pop_front() {
            Some(event) => Some(event),
            None => self.read_event().await,
        }
    }

    async fn read_event(&mut self) -> Option<ServerEvent> {
        loop {
            let frame = self.ws.read_frame().await?;
            match frame.opcode {
                0x2 => {
                    let payload = Bytes::from(frame.payload);
                    return Some(
                        self.codec
                            .decode_server(&payload)
                            .expect("a valid envelope"),
                    );
                }
                0x9 => self.ws.send_bytes(&pong(&frame.payload)).await,
                0x8 => return None,
                _ => {}
            }
        }
    }

    /// Cuts the connection the way a crash or a pulled cable looks to the
    /// server: no close frame, and a reset rather than a goodbye.
    pub fn cut(self) {
        let _ = socket2::SockRef::from(&self.ws.stream).set_linger(Some(Duration::ZERO));
        drop(self);
    }
}
