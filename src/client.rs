//! A small async Rust client for roomcast: connect with a codec, subscribe,
//! publish with or without an acknowledgement, receive messages.
//!
//! ```no_run
//! # async fn demo() -> Result<(), roomcast::client::ClientError> {
//! use roomcast::client::Client;
//! use roomcast::protocol::Codec;
//! let mut client = Client::connect("127.0.0.1:8080".parse().unwrap(), Codec::MsgPack).await?;
//! let offset = client.subscribe("chat.lobby").await?;
//! client.publish("chat.lobby", b"hello".to_vec()).await?;
//! let message = client.recv().await;
//! # Ok(()) }
//! ```
//!
//! Messages are buffered up to `message_buffer`; a client that stops calling
//! [`Client::recv`] stops reading its socket, and the server's slow-consumer
//! policy applies to it, as to any client.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::Request;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{
    ClientOp, ClientRequest, Codec, Offset, Outcome, RequestId, RoomName, ServerEvent,
};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("handshake refused: {0}")]
    Handshake(String),
    #[error("invalid room name: {0}")]
    InvalidRoom(#[from] crate::protocol::RoomNameError),
    #[error("server error {code}: {message}")]
    Server { code: u32, message: String },
    #[error("connection closed{}", .0.as_ref().map(|(c, r)| format!(" by the server with {c} {r:?}")).unwrap_or_default())]
    Closed(Option<(u16, String)>),
}

/// A publication delivered to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: String,
    pub offset: Offset,
    pub data: Bytes,
}

/// Connection options beyond address and codec.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The WebSocket path. Default `/ws`.
    pub path: String,
    /// Messages buffered before the client stops reading its socket. Default 4096.
    pub message_buffer: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            path: "/ws".to_owned(),
            message_buffer: 4096,
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Outcome>>>>;
type CloseInfo = Arc<Mutex<Option<(u16, String)>>>;

/// A connected client.
pub struct Client {
    codec: Codec,
    next_id: AtomicU64,
    pending: Pending,
    outgoing: mpsc::Sender<Frame<'static>>,
    messages: mpsc::Receiver<Message>,
    closed: CloseInfo,
}

struct SpawnExecutor;

impl hyper::rt::Executor<Pin<Box<dyn Future<Output = ()> + Send>>> for SpawnExecutor {
    fn execute(&self, fut: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(fut);
    }
}

impl Client {
    /// Connects to `ws://{addr}/ws` with `codec`.
    pub async fn connect(addr: SocketAddr, codec: Codec) -> Result<Client, ClientError> {
        Client::connect_with(addr, codec, ClientOptions::default()).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(
        addr: SocketAddr,
        codec: Codec,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let request = Request::get(&options.path)
            .header(HOST, addr.to_string())
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header(
                "Sec-WebSocket-Key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("Sec-WebSocket-Version", "13")
            .header(SEC_WEBSOCKET_PROTOCOL, codec.subprotocol())
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (ws, _response) = fastwebsockets::handshake::client(&SpawnExecutor, request, stream)
            .await
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let (mut read, mut write) = ws.split(tokio::io::split);
        read.set_auto_close(false);
        read.set_auto_pong(false);
        read.set_max_message_size(usize::MAX);

        let (outgoing, mut outgoing_rx) = mpsc::channel::<Frame<'static>>(1024);
        let (messages_tx, messages) = mpsc::channel(options.message_buffer.max(1));
        let pending: Pending = Arc::default();
        let closed: CloseInfo = Arc::default();

        tokio::spawn(async move {
            while let Some(frame) = outgoing_rx.recv().await {
                let is_close = frame.opcode == OpCode::Close;
                if write.write_frame(frame).await.is_err() || is_close {
                    break;
                }
            }
        });

        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        let control = outgoing.clone();
        tokio::spawn(async move {
            let mut no_send = |_: Frame<'_>| async { Ok::<(), WebSocketError>(()) };
            loop {
                // A dropped Client drops the message receiver: stop reading,
                // so the socket closes.
                let frame = tokio::select! {
                    frame = read.read_frame(&mut no_send) => match frame {
                        Ok(frame) => frame,
                        Err(_) => break,
                    },
                    () = messages_tx.closed() => break,
                };
                match frame.opcode {
                    OpCode::Binary => {
                        let payload = match frame.payload {
                            Payload::Bytes(b) => b.freeze(),
                            other => Bytes::copy_from_slice(&other),
                        };
                        match codec.decode_server(&payload) {
                            Ok(ServerEvent::Reply(reply)) => {
                                let waiter = reader_pending
                                    .lock()
                                    .ok()
                                    .and_then(|mut p| p.remove(&reply.id.0));
                                if let Some(waiter) = waiter {
                                    let _ = waiter.send(reply.outcome);
                                }
                            }
                            Ok(ServerEvent::Message { room, offset, data }) => {
                                if messages_tx
                                    .send(Message { room, offset, data })
                                    .await
                                    .is_err()
                                {
                                    break;
                                }
                            }
                            Ok(ServerEvent::Presence { .. }) => {}
                            Err(_) => break,
                        }
                    }
                    OpCode::Ping => {
                        let pong = Frame::pong(Payload::Owned(frame.payload.to_vec()));
                        let _ = control.send(pong).await;
                    }
                    OpCode::Close => {
                        let payload = frame.payload.to_vec();
                        if payload.len() >= 2 {
                            let code = u16::from_be_bytes([payload[0], payload[1]]);
                            let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                            if let Ok(mut closed) = reader_closed.lock() {
                                *closed = Some((code, reason));
                            }
                            let _ = control.send(Frame::close(code, &[])).await;
                        }
                        break;
                    }
                    _ => {}
                }
            }
            // Fail every request still waiting for a reply.
            if let Ok(mut pending) = reader_pending.lock() {
                pending.clear();
            }
        });

        Ok(Client {
            codec,
            next_id: AtomicU64::new(1),
            pending,
            outgoing,
            messages,
            closed,
        })
    }

    /// The codec this client speaks.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.closed.lock().ok().and_then(|c| c.clone()))
    }

    /// The close code and reason the server sent, once it has closed.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.closed.lock().ok().and_then(|c| c.clone())
    }

    async fn send_envelope(&self, envelope: Vec<u8>) -> Result<(), ClientError> {
        let frame = Frame::binary(Payload::Owned(envelope));
        self.outgoing
            .send(frame)
            .await
            .map_err(|_| self.closed_error())
    }

    /// Sends raw bytes as one binary message (for tests of bad input).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.send_envelope(bytes).await
    }

    /// Sends a request and waits for its reply.
    async fn request(&self, op: ClientOp) -> Result<Offset, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(id, tx);
        }
        let envelope = self.codec.encode_request(&ClientRequest {
            id: RequestId(id),
            op,
        });
        self.send_envelope(envelope).await?;
        match rx.await {
            Ok(Outcome::Ack(ack)) => Ok(ack.offset),
            Ok(Outcome::Error { code, message }) => Err(ClientError::Server { code, message }),
            Ok(_) => Ok(Offset(0)),
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Subscribes to `room`; returns its current offset (the next message has offset + 1).
    pub async fn subscribe(&self, room: &str) -> Result<Offset, ClientError> {
        let room = RoomName::new(room)?;
        self.request(ClientOp::subscribe(room)).await
    }

    /// Unsubscribes from `room`.
    pub async fn unsubscribe(&self, room: &str) -> Result<(), ClientError> {
        let room = RoomName::new(room)?;
        self.request(ClientOp::Unsubscribe { room })
            .await
            .map(|_| ())
    }

    /// Publishes and waits for the offset the room gave the publication.
    pub async fn publish(&self, room: &str, data: impl Into<Bytes>) -> Result<Offset, ClientError> {
        let room = RoomName::new(room)?;
        self.request(ClientOp::publish(room, data.into()))
        .await
    }

    /// Publishes without asking for a reply (fire-and-forget).
    pub async fn publish_nowait(
        &self,
        room: &str,
        data: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let room = RoomName::new(room)?;
        let request = ClientRequest {
            id: RequestId(0),
            op: ClientOp::publish(room, data.into()),
        };
        self.send_envelope(self.codec.encode_request(&request))
            .await
    }

    /// The next delivered message; `None` once the connection is closed and
    /// every buffered message has been received.
    pub async fn recv(&mut self) -> Option<Message> {
        self.messages.recv().await
    }

    /// Sends a close frame (1000) and stops sending.
    pub async fn close(&self) {
        let _ = self.outgoing.send(Frame::close(1000, b"bye")).await;
    }
}
