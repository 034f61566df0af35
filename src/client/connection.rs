//! One connection: dialing, the WebSocket handshake, and the two tasks that
//! read and write the socket. The reader waits while the driver's queue is
//! full, which is how a client that stops taking events pushes back on the
//! server.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::Request;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ClientError, INCOMING_CAPACITY, OUTGOING_CAPACITY};
use crate::protocol::{Codec, ServerEvent};

/// Everything needed to open a connection, detached from the driver so a
/// connection attempt can run as a future of its own.
// Not `Debug`: it holds the token, which must never reach a log.
#[derive(Clone)]
pub(super) struct Dial {
    pub(super) addr: SocketAddr,
    pub(super) codec: Codec,
    pub(super) path: String,
    pub(super) connect_timeout: Duration,
    pub(super) silence_timeout: Option<Duration>,
    pub(super) max_message_size: usize,
    /// Shared with the client, so a refreshed token is used on reconnects.
    pub(super) token: Arc<Mutex<Option<String>>>,
}

/// One open connection: a reader task and a writer task around the socket.
pub(super) struct Connection {
    pub(super) frames: mpsc::Sender<Frame<'static>>,
    pub(super) incoming: mpsc::Receiver<Incoming>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Ends both tasks now; dropping the socket halves closes it without a
    /// close frame.
    pub(super) fn abort(&self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// What a connection's tasks report to the driver.
pub(super) enum Incoming {
    Envelope(ServerEvent),
    Closed { code: u16, reason: String },
    Lost(String),
}

struct SpawnExecutor;

impl hyper::rt::Executor<Pin<Box<dyn Future<Output = ()> + Send>>> for SpawnExecutor {
    fn execute(&self, fut: Pin<Box<dyn Future<Output = ()> + Send>>) {
        tokio::spawn(fut);
    }
}

impl Dial {
    /// Opens a connection within the connect timeout and starts its tasks.
    pub(super) async fn open(self) -> Result<Connection, ClientError> {
        let limit = self.connect_timeout;
        tokio::time::timeout(limit, self.open_unbounded())
            .await
            .unwrap_or_else(|_| Err(ClientError::Connect(format!("timed out after {limit:?}"))))
    }

    async fn open_unbounded(self) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut request = Request::get(&self.path);
        if let Some(token) = self.token.lock().ok().and_then(|t| t.clone()) {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .header(HOST, self.addr.to_string())
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "upgrade")
            .header(
                "Sec-WebSocket-Key",
                fastwebsockets::handshake::generate_key(),
            )
            .header("Sec-WebSocket-Version", "13")
            .header(SEC_WEBSOCKET_PROTOCOL, self.codec.subprotocol())
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (ws, response) = fastwebsockets::handshake::client(&SpawnExecutor, request, stream)
            .await
            .map_err(|e| ClientError::Handshake(e.to_string()))?;
        let echoed = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok());
        if echoed != Some(self.codec.subprotocol()) {
            return Err(ClientError::Handshake(format!(
                "asked for {}, the server answered {echoed:?}",
                self.codec.subprotocol()
            )));
        }
        let (mut read, write) = ws.split(tokio::io::split);
        read.set_auto_close(false);
        read.set_auto_pong(false);
        read.set_max_message_size(self.max_message_size);

        let (frames, frames_rx) = mpsc::channel::<Frame<'static>>(OUTGOING_CAPACITY);
        let (incoming_tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        let writer = tokio::spawn(write_frames(write, frames_rx, incoming_tx.clone()));
        let reader = tokio::spawn(read_frames(
            read,
            self.codec,
            self.silence_timeout,
            incoming_tx,
            frames.clone(),
        ));
        Ok(Connection {
            frames,
            incoming,
            reader,
            writer,
        })
    }
}

type WsRead = fastwebsockets::WebSocketRead<
    tokio::io::ReadHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
>;
type WsWrite = fastwebsockets::WebSocketWrite<
    tokio::io::WriteHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
>;

/// The writer task: sends queued frames until a close frame or an error.
async fn write_frames(
    mut write: WsWrite,
    mut frames: mpsc::Receiver<Frame<'static>>,
    incoming: mpsc::Sender<Incoming>,
) {
    while let Some(frame) = frames.recv().await {
        let is_close = frame.opcode == OpCode::Close;
        if let Err(e) = write.write_frame(frame).await {
            let _ = incoming.send(Incoming::Lost(e.to_string())).await;
            return;
        }
        if is_close {
            return;
        }
    }
}

/// The reader task: decodes server envelopes in order, answers pings, echoes
/// a close. Waits while the driver's queue is full, which stops the socket.
async fn read_frames(
    mut read: WsRead,
    codec: Codec,
    silence_timeout: Option<Duration>,
    incoming: mpsc::Sender<Incoming>,
    frames: mpsc::Sender<Frame<'static>>,
) {
    let mut no_send = |_: Frame<'_>| async { Ok::<(), WebSocketError>(()) };
    let end = loop {
        let frame = match silence_timeout {
            Some(limit) => match tokio::time::timeout(limit, read.read_frame(&mut no_send)).await {
                Ok(frame) => frame,
                Err(_) => break Incoming::Lost(format!("the server sent nothing for {limit:?}")),
            },
            None => read.read_frame(&mut no_send).await,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => break Incoming::Lost(e.to_string()),
        };
        match frame.opcode {
            OpCode::Binary => {
                let payload = match frame.payload {
                    Payload::Bytes(b) => b.freeze(),
                    other => Bytes::copy_from_slice(&other),
                };
                match codec.decode_server(&payload) {
                    Ok(envelope) => {
                        if incoming.send(Incoming::Envelope(envelope)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // The server broke the protocol: say so, and start over.
                        let _ = frames.send(Frame::close(1007, b"malformed envelope")).await;
                        break Incoming::Lost(e.to_string());
                    }
                }
            }
            OpCode::Ping => {
                let pong = Frame::pong(Payload::Owned(frame.payload.to_vec()));
                let _ = frames.send(pong).await;
            }
            OpCode::Close => {
                let payload = frame.payload.to_vec();
                let (code, reason) = match payload.as_slice() {
                    [high, low, reason @ ..] => (
                        u16::from_be_bytes([*high, *low]),
                        String::from_utf8_lossy(reason).into_owned(),
                    ),
                    _ => (1005, String::new()),
                };
                let echo = if code == 1005 {
                    Frame::close_raw(Payload::Owned(Vec::new()))
                } else {
                    Frame::close(code, &[])
                };
                let _ = frames.send(echo).await;
                break Incoming::Closed { code, reason };
            }
            _ => {}
        }
    };
    let _ = incoming.send(end).await;
}
