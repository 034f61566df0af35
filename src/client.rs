//! An async Rust client for roomcast that survives dropped connections.
//!
//! A [`Client`] owns one connection at a time, driven by a background task.
//! When the connection drops (a socket error, a silent server, or a server
//! close such as 1012 `service restart`, 1013 `slow consumer` or 4000
//! `heartbeat timeout`), the task reconnects by itself with exponential
//! backoff and full jitter, subscribes again to every room with the position
//! it had reached, and tells the application how that went:
//!
//! ```no_run
//! # async fn demo() -> Result<(), roomcast::client::ClientError> {
//! use roomcast::client::{Client, Event};
//! use roomcast::protocol::Codec;
//! let mut client = Client::connect("127.0.0.1:8080".parse().unwrap(), Codec::MsgPack).await?;
//! let start = client.subscribe("chat.lobby").await?;
//! println!("joined at offset {} of epoch {}", start.offset.0, start.epoch);
//! let ack = client.publish("chat.lobby", b"hello".to_vec()).await?;
//! println!("published as #{}", ack.offset.0);
//! while let Some(event) = client.next_event().await {
//!     match event {
//!         Event::Message(message) => println!("#{} {:?}", message.offset.0, message.data),
//!         Event::Resubscribed { room, recovered: false, .. } => {
//!             println!("messages of {room} were missed while disconnected: reload its state");
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # What survives a reconnect
//!
//! - **Subscriptions.** Every room is subscribed again with `recover` set to
//!   the epoch of its subscribe ack and the offset of the last message handed
//!   to the application. [`Event::Resubscribed`] says whether every missed
//!   publication follows (`recovered: true`) or the application must reload
//!   (`recovered: false`: the room's history did not reach back that far, or
//!   its epoch changed). The client never hands over a message whose offset
//!   is not above the last one it handed over for the room in that epoch.
//! - **Acknowledged publishes.** [`Client::publish`] attaches an idempotency
//!   key (`{random prefix}-{counter}`) and, when the connection drops before
//!   the ack, sends the publication again with the same key after
//!   resubscribing: a publication whose ack was lost is acknowledged with
//!   `duplicate: true` and not delivered twice.
//! - **Publishes made while disconnected** wait in a queue of at most
//!   [`ClientOptions::max_queued_publishes`] and are sent in order once every
//!   room is subscribed again; past the bound, publishing fails at once with
//!   [`ClientError::QueueFull`].
//! - **Not retried:** fire-and-forget publishes ([`Client::publish_nowait`])
//!   already handed to a connection that then drops (at most once, as the
//!   protocol promises), and reads ([`Client::history`], [`Client::presence`],
//!   [`Client::presence_stats`]), which fail with [`ClientError::Disconnected`]
//!   when there is no connection or it drops before their reply: their
//!   answer would describe a moment the application did not ask about.
//!
//! The client gives up (and the event stream ends) after
//! [`ClientOptions::max_reconnect_attempts`] failed attempts in a row, on a
//! close code that says the client itself is at fault (1002, 1003, 1007,
//! 1008, 1009, 1010), an expired token (4001: the same token would be
//! refused; call [`Client::refresh`] before it expires), or a normal close
//! (1000), and after [`Client::close`].
//!
//! # Backpressure
//!
//! Events are buffered up to [`ClientOptions::message_buffer`]; a client that
//! stops calling [`Client::next_event`] (or [`Client::recv`]) stops reading
//! its socket, and the server's slow-consumer policy applies to it, as to any
//! client. Replies travel behind messages on the same socket, so a task that
//! waits for an ack while nobody reads the events of a busy room waits until
//! someone does.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use hyper::Request;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Sleep;

use crate::protocol::{
    random_u64, ClientInfo, ClientOp, ClientRequest, Codec, Epoch, HistoryPage, HistoryQuery,
    IdempotencyKey, Offset, Outcome, PresenceChange, PresenceCounts, Reply, RequestId, RoomName,
    ServerEvent, StreamPosition, MAX_IDEMPOTENCY_KEY_BYTES,
};

/// Why a client call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The first connection could not be opened (TCP, or it took longer than
    /// [`ClientOptions::connect_timeout`]).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server refused the WebSocket upgrade, or did not echo our subprotocol.
    #[error("handshake refused: {0}")]
    Handshake(String),
    #[error("invalid room name: {0}")]
    InvalidRoom(#[from] crate::protocol::RoomNameError),
    /// An idempotency key longer than the protocol allows.
    #[error("idempotency key is {0} bytes, the limit is {MAX_IDEMPOTENCY_KEY_BYTES}")]
    KeyTooLong(usize),
    /// The server answered with an error reply.
    #[error("server error {code}: {message}")]
    Server { code: u32, message: String },
    /// The server answered with a reply of the wrong kind for the request.
    #[error("unexpected reply: {0}")]
    UnexpectedReply(String),
    /// The client is disconnected and [`ClientOptions::max_queued_publishes`]
    /// publications already wait for the next connection.
    #[error("disconnected, and the publish queue is full")]
    QueueFull,
    /// The request needs a live connection (history, presence, raw bytes) and
    /// there was none, or it dropped before the reply.
    #[error("not connected")]
    Disconnected,
    /// The room was unsubscribed before its subscription was confirmed.
    #[error("unsubscribed before the subscription was confirmed")]
    Unsubscribed,
    /// The client is closed for good: [`Client::close`], a close code that
    /// allows no reconnect, or every reconnect attempt failed. Carries the
    /// server's last close code and reason, when it sent one.
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

/// What the client tells the application, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A publication to a subscribed room.
    Message(Message),
    /// Someone joined or left a room subscribed with `join_leave`.
    Presence {
        change: PresenceChange,
        room: String,
        info: ClientInfo,
    },
    /// The connection ended. `reconnecting` is false when the client gives
    /// up here (then the event stream ends).
    Disconnected {
        cause: DisconnectCause,
        reconnecting: bool,
    },
    /// A new connection is open; `attempts` is how many tries it took (1:
    /// the first one). [`Event::Resubscribed`] follows for each room.
    Reconnected { attempts: u32 },
    /// A room is subscribed again after a reconnect. `recovered: false`
    /// means publications were missed (the room's history did not reach
    /// back to the last message delivered, or the room's epoch changed):
    /// reload what you know of the room as of `position`, the room's epoch
    /// and current offset. Messages after `position.offset` follow.
    Resubscribed {
        room: String,
        recovered: bool,
        position: StreamPosition,
    },
    /// The server refused to subscribe the room again after a reconnect;
    /// the client no longer follows it.
    SubscriptionLost { room: String, error: ClientError },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisconnectCause {
    /// The server sent a close frame (1005 when it carried no code).
    Closed { code: u16, reason: String },
    /// The socket failed or ended without a close frame, or the server sent
    /// nothing for [`ClientOptions::server_silence_timeout`].
    Lost(String),
}

impl DisconnectCause {
    /// Whether reconnecting can help. Not after a normal close (the server
    /// meant it) or a close that blames this client's own frames: sending
    /// them again would only be closed again.
    fn allows_reconnect(&self) -> bool {
        match self {
            DisconnectCause::Closed { code, .. } => {
                !matches!(code, 1000 | 1002 | 1003 | 1007 | 1008 | 1009 | 1010 | 4001)
            }
            DisconnectCause::Lost(_) => true,
        }
    }
}

/// The answer to a subscribe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeInfo {
    /// The room's epoch: keep it with the offsets you store, to recover later.
    pub epoch: Epoch,
    /// The room's current offset: the next live message has offset + 1.
    pub offset: Offset,
    /// With [`SubscribeOptions::recover`]: whether every publication after
    /// the given position follows.
    pub recovered: bool,
}

/// The answer to an acknowledged publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishAck {
    /// The offset the room gave the publication.
    pub offset: Offset,
    /// The server had already published this idempotency key: this was a
    /// retry, and nothing was published again.
    pub duplicate: bool,
}

/// How to subscribe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SubscribeOptions {
    /// Also receive [`Event::Presence`] joins and leaves (rooms configured
    /// with join and leave events only; others answer error 106).
    pub join_leave: bool,
    /// Start after this position (from a previous session) instead of now,
    /// if the room's history still holds it.
    pub recover: Option<StreamPosition>,
}

/// Connection options beyond address and codec. (`Debug` leaves the token out.)
#[derive(Clone)]
pub struct ClientOptions {
    /// The WebSocket path. Default `/ws`.
    pub path: String,
    /// Events buffered before the client stops reading its socket. Default 4096.
    pub message_buffer: usize,
    /// The first reconnect waits a random time up to this; each failed
    /// attempt doubles the bound. Default 100 ms.
    pub backoff_base: Duration,
    /// The largest bound a reconnect wait is drawn from. Default 10 s.
    pub backoff_max: Duration,
    /// Failed connection attempts in a row before the client gives up;
    /// `Some(0)` never reconnects. Default `None`: keep trying.
    pub max_reconnect_attempts: Option<u32>,
    /// Publications kept while disconnected; past it, publishing fails with
    /// [`ClientError::QueueFull`]. Default 1024.
    pub max_queued_publishes: usize,
    /// Time for TCP connect plus the WebSocket upgrade. Default 10 s.
    pub connect_timeout: Duration,
    /// A server that sends nothing (not even a ping) for this long is taken
    /// for gone and the connection is replaced; `None` waits on the socket
    /// forever. Keep it well above the server's `ping_interval` (25 s by
    /// default). Default 60 s.
    pub server_silence_timeout: Option<Duration>,
    /// Largest server message accepted, in bytes; a history page can hold
    /// many publications. Default 64 MiB.
    pub max_message_size: usize,
    /// A JWT sent as `Authorization: Bearer` on every connection attempt
    /// (the latest one given to [`Client::refresh`]). Default none.
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("path", &self.path)
            .field("message_buffer", &self.message_buffer)
            .field("backoff_base", &self.backoff_base)
            .field("backoff_max", &self.backoff_max)
            .field("max_reconnect_attempts", &self.max_reconnect_attempts)
            .field("max_queued_publishes", &self.max_queued_publishes)
            .field("connect_timeout", &self.connect_timeout)
            .field("server_silence_timeout", &self.server_silence_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            path: "/ws".to_owned(),
            message_buffer: 4096,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            max_reconnect_attempts: None,
            max_queued_publishes: 1024,
            connect_timeout: Duration::from_secs(10),
            server_silence_timeout: Some(Duration::from_secs(60)),
            max_message_size: 64 << 20,
            token: None,
        }
    }
}

/// Commands queued from the [`Client`] handle to its driver task; every one
/// carries its own reply channel, so the bound only limits concurrent callers.
const COMMAND_CAPACITY: usize = 1024;
/// Frames queued for one connection's writer task.
const OUTGOING_CAPACITY: usize = 1024;
/// Decoded server envelopes queued from one connection's reader task to the
/// driver; when full, the reader stops reading the socket.
const INCOMING_CAPACITY: usize = 256;
/// Time to wait for the server's close frame after [`Client::close`] sent ours.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connected client. Dropping it ends the connection (without a close
/// frame; call [`Client::close`] first for a polite one).
pub struct Client {
    codec: Codec,
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<Event>,
    shared: Arc<Shared>,
    token: Arc<Mutex<Option<String>>>,
}

impl Client {
    /// Connects to `ws://{addr}/ws` with `codec`.
    pub async fn connect(addr: SocketAddr, codec: Codec) -> Result<Client, ClientError> {
        Client::connect_with(addr, codec, ClientOptions::default()).await
    }

    /// Connects with explicit options. The first connection is not retried:
    /// an address that does not answer is an error here, not a background
    /// retry loop.
    pub async fn connect_with(
        addr: SocketAddr,
        codec: Codec,
        options: ClientOptions,
    ) -> Result<Client, ClientError> {
        let dial = Dial {
            addr,
            codec,
            path: options.path.clone(),
            connect_timeout: options.connect_timeout,
            silence_timeout: options.server_silence_timeout,
            max_message_size: options.max_message_size,
            token: Arc::new(Mutex::new(options.token.clone())),
        };
        let token = dial.token.clone();
        let connection = dial.clone().open().await?;
        let (commands, commands_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (events_tx, events) = mpsc::channel(options.message_buffer.max(1));
        let shared = Arc::new(Shared::default());
        let driver = Driver {
            dial,
            options,
            shared: shared.clone(),
            commands: commands_rx,
            events: events_tx,
            outbox: VecDeque::new(),
            link: Link::Up(connection),
            close_deadline: None,
            closing: false,
            failed_attempts: 0,
            rooms: HashMap::new(),
            in_flight: HashMap::new(),
            losing_acks: HashSet::new(),
            waiting: VecDeque::new(),
            queued_publishes: 0,
            resubscribing: 0,
            next_id: 1,
            next_generation: 0,
            key_prefix: format!("{:016x}", random_u64()),
            next_key: 0,
        };
        tokio::spawn(driver.run());
        Ok(Client {
            codec,
            commands,
            events,
            shared,
            token,
        })
    }

    /// The codec this client speaks.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The close code and reason the server last sent, if it ever closed a
    /// connection of this client.
    pub fn close_reason(&self) -> Option<(u16, String)> {
        self.shared.close_reason()
    }

    /// The next event; `None` once the client has closed for good and every
    /// buffered event has been received.
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next delivered message, skipping every other event (use
    /// [`Client::next_event`] to learn that messages were missed); `None`
    /// once the client has closed for good.
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            if let Event::Message(message) = self.events.recv().await? {
                return Some(message);
            }
        }
    }

    /// Subscribes to `room`; returns its epoch and current offset (the next
    /// message has offset + 1). Waits across reconnects until the server
    /// answers. Subscribing again to a subscribed room answers the current
    /// offset and changes nothing.
    pub async fn subscribe(&self, room: &str) -> Result<SubscribeInfo, ClientError> {
        self.subscribe_with(room, SubscribeOptions::default()).await
    }

    /// Subscribes with join and leave events, or from an earlier position.
    pub async fn subscribe_with(
        &self,
        room: &str,
        options: SubscribeOptions,
    ) -> Result<SubscribeInfo, ClientError> {
        let room = RoomName::new(room)?;
        self.call(|reply| Command::Subscribe {
            room,
            options,
            reply,
        })
        .await
    }

    /// Unsubscribes from `room`: no message of it reaches the application
    /// after this call, and it is not subscribed again after a reconnect.
    pub async fn unsubscribe(&self, room: &str) -> Result<(), ClientError> {
        let room = RoomName::new(room)?;
        self.call(|reply| Command::Unsubscribe { room, reply })
            .await
    }

    /// Publishes and waits for the offset the room gave the publication,
    /// across reconnects, under an idempotency key of the client's making,
    /// so a retry after a lost ack is not published twice.
    pub async fn publish(
        &self,
        room: &str,
        data: impl Into<Bytes>,
    ) -> Result<PublishAck, ClientError> {
        let room = RoomName::new(room)?;
        let data = data.into();
        self.call(|reply| Command::Publish {
            room,
            data,
            key: KeyChoice::Automatic,
            reply: PublishReply::Ack(reply),
        })
        .await
    }

    /// Publishes under the application's own idempotency key (at most 128
    /// bytes): a key the server has seen within its idempotency window is
    /// acknowledged with `duplicate: true` and not published again, even
    /// across clients and restarts of this one.
    pub async fn publish_with_key(
        &self,
        room: &str,
        data: impl Into<Bytes>,
        key: &str,
    ) -> Result<PublishAck, ClientError> {
        let room = RoomName::new(room)?;
        if key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(ClientError::KeyTooLong(key.len()));
        }
        let key = IdempotencyKey::new(key);
        let data = data.into();
        self.call(|reply| Command::Publish {
            room,
            data,
            key: KeyChoice::Given(key),
            reply: PublishReply::Ack(reply),
        })
        .await
    }

    /// Publishes without asking for a reply (fire-and-forget). Returns once
    /// the publication is handed to the connection, or queued while
    /// disconnected; it carries no idempotency key and is not sent again if
    /// the connection drops under it.
    pub async fn publish_nowait(
        &self,
        room: &str,
        data: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let room = RoomName::new(room)?;
        let data = data.into();
        self.call(|reply| Command::Publish {
            room,
            data,
            key: KeyChoice::None,
            reply: PublishReply::Accepted(reply),
        })
        .await
    }

    /// Reads a page of `room`'s history. Fails with
    /// [`ClientError::Disconnected`] while disconnected.
    pub async fn history(
        &self,
        room: &str,
        query: HistoryQuery,
    ) -> Result<HistoryPage, ClientError> {
        let room = RoomName::new(room)?;
        match self.query(ClientOp::History { room, query }).await? {
            Outcome::History(page) => Ok(page),
            other => Err(unexpected("history", &other)),
        }
    }

    /// Who is in `room`. Fails with [`ClientError::Disconnected`] while
    /// disconnected.
    pub async fn presence(&self, room: &str) -> Result<Vec<ClientInfo>, ClientError> {
        let room = RoomName::new(room)?;
        match self.query(ClientOp::Presence { room }).await? {
            Outcome::Presence(clients) => Ok(clients),
            other => Err(unexpected("presence", &other)),
        }
    }

    /// How many are in `room`. Fails with [`ClientError::Disconnected`]
    /// while disconnected.
    pub async fn presence_stats(&self, room: &str) -> Result<PresenceCounts, ClientError> {
        let room = RoomName::new(room)?;
        match self.query(ClientOp::PresenceStats { room }).await? {
            Outcome::PresenceStats(counts) => Ok(counts),
            other => Err(unexpected("presence_stats", &other)),
        }
    }

    /// Replaces the connection's token before it expires (the server closes
    /// with 4001 when it does); reconnects use the new one too.
    pub async fn refresh(&self, token: &str) -> Result<(), ClientError> {
        match self
            .query(ClientOp::Refresh {
                token: token.to_owned(),
            })
            .await?
        {
            Outcome::Ack(_) => {
                if let Ok(mut current) = self.token.lock() {
                    *current = Some(token.to_owned());
                }
                Ok(())
            }
            other => Err(unexpected("refresh", &other)),
        }
    }

    /// Sends raw bytes as one binary message on the current connection (for
    /// tests of bad input).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.call(|reply| Command::Raw { bytes, reply }).await
    }

    /// Sends a close frame (1000) and stops reconnecting; requests still
    /// waiting fail with [`ClientError::Closed`], and the event stream ends
    /// once the server has answered (or after 2 s).
    pub async fn close(&self) {
        let _ = self.call(|reply| Command::Close { reply }).await;
    }

    /// Drops the current connection without a close frame, as a network
    /// failure would; the client then reconnects as usual.
    #[doc(hidden)]
    pub fn drop_connection_for_test(&self) {
        self.shared.drop_connection.notify_one();
    }

    /// Discards the ack of the next acknowledged publish sent, as if it were
    /// lost on the way; that publish then waits for the next connection,
    /// where it is sent again under the same idempotency key.
    #[doc(hidden)]
    pub fn lose_next_publish_ack_for_test(&self) {
        self.shared.lose_publish_acks.fetch_add(1, Ordering::AcqRel);
    }

    async fn query(&self, op: ClientOp) -> Result<Outcome, ClientError> {
        self.call(|reply| Command::Query { op, reply }).await
    }

    /// Hands a command to the driver and waits for its answer.
    async fn call<T>(
        &self,
        command: impl FnOnce(Responder<T>) -> Command,
    ) -> Result<T, ClientError> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(command(reply)).await.is_err() {
            return Err(ClientError::Closed(self.close_reason()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(ClientError::Closed(self.close_reason())))
    }
}

fn unexpected(request: &str, outcome: &Outcome) -> ClientError {
    ClientError::UnexpectedReply(format!("{request} answered with {outcome:?}"))
}

/// Where a caller waits for its answer.
type Responder<T> = oneshot::Sender<Result<T, ClientError>>;

/// State the handle and the driver both see.
#[derive(Default)]
struct Shared {
    close_reason: Mutex<Option<(u16, String)>>,
    /// Wakes the driver to drop its connection (test hook).
    drop_connection: Notify,
    /// Acknowledged publishes still to be sent whose ack is to be discarded
    /// as if lost (test hook).
    lose_publish_acks: AtomicU32,
}

impl Shared {
    fn close_reason(&self) -> Option<(u16, String)> {
        self.close_reason.lock().ok().and_then(|c| c.clone())
    }

    fn set_close_reason(&self, code: u16, reason: &str) {
        if let Ok(mut slot) = self.close_reason.lock() {
            *slot = Some((code, reason.to_owned()));
        }
    }
}

/// What the handle asks of the driver.
enum Command {
    Subscribe {
        room: RoomName,
        options: SubscribeOptions,
        reply: Responder<SubscribeInfo>,
    },
    Unsubscribe {
        room: RoomName,
        reply: Responder<()>,
    },
    Publish {
        room: RoomName,
        data: Bytes,
        key: KeyChoice,
        reply: PublishReply,
    },
    /// History and presence: answered on this connection or not at all.
    Query {
        op: ClientOp,
        reply: Responder<Outcome>,
    },
    Raw {
        bytes: Vec<u8>,
        reply: Responder<()>,
    },
    Close {
        reply: Responder<()>,
    },
}

/// Which idempotency key a publish carries.
enum KeyChoice {
    None,
    Automatic,
    Given(IdempotencyKey),
}

/// Who hears about a publish, and when.
enum PublishReply {
    /// Answered with the server's ack (or error), across reconnects.
    Ack(Responder<PublishAck>),
    /// Answered as soon as the publication is sent or queued.
    Accepted(Responder<()>),
}

/// A publication on its way to the server.
struct Publication {
    room: RoomName,
    data: Bytes,
    key: Option<IdempotencyKey>,
    /// `None` for fire-and-forget: sent with id 0, never retried.
    ack: Option<Responder<PublishAck>>,
}

impl Publication {
    fn op(&self) -> ClientOp {
        ClientOp::Publish {
            room: self.room.clone(),
            data: self.data.clone(),
            idempotency_key: self.key.clone(),
        }
    }
}

/// A request that waits for a connection (and for resubscribing to finish).
enum Waiting {
    Publish(Publication),
    /// An unsubscribe from a room this client does not know as subscribed:
    /// only the server can answer it.
    Unsubscribe {
        room: RoomName,
        reply: Responder<()>,
    },
}

/// A request sent on the current connection, waiting for its reply.
enum InFlight {
    Subscribe {
        room: String,
        /// Which [`RoomState`] asked: a room unsubscribed and subscribed
        /// again ignores the replies meant for the earlier one.
        generation: u64,
        join_leave: bool,
        recover: Option<StreamPosition>,
        /// Part of the batch sent after a reconnect, which holds back the
        /// queued publishes until it is answered.
        resubscribe: bool,
    },
    Unsubscribe(Responder<()>),
    Publish(Publication),
    Query(Responder<Outcome>),
}

/// What the client knows of one subscribed room.
struct RoomState {
    name: RoomName,
    generation: u64,
    join_leave: bool,
    /// The epoch of the last subscribe ack and the offset of the last
    /// message handed to the application (the ack's offset before any).
    position: Option<StreamPosition>,
    /// Subscribed on the current connection.
    active: bool,
    /// A subscribe for it is in flight on the current connection.
    in_flight: bool,
    /// Some subscribe of it was acknowledged once: a resubscribe of it is
    /// news for the application ([`Event::Resubscribed`]).
    confirmed: bool,
    /// Callers of `subscribe` waiting for the next ack.
    waiters: Vec<Responder<SubscribeInfo>>,
}

impl RoomState {
    /// Whether a message at `offset` is new, and if so records it as the
    /// last one handed over. Offsets never go back within an epoch, so
    /// anything at or below the last one is a replay.
    fn accept(&mut self, offset: Offset) -> bool {
        match &mut self.position {
            Some(position) if offset <= position.offset => false,
            Some(position) => {
                position.offset = offset;
                true
            }
            None => true,
        }
    }

    /// Takes in a subscribe ack. `sent` is the recover position the
    /// subscribe carried; `was_active` whether the room was already
    /// subscribed on this connection (a repeated subscribe).
    fn acknowledge(
        &mut self,
        sent: Option<StreamPosition>,
        was_active: bool,
        epoch: &Epoch,
        offset: Offset,
        recovered: bool,
    ) {
        let current = StreamPosition {
            epoch: epoch.clone(),
            offset,
        };
        self.position = match (sent, recovered) {
            // Every publication after the position we gave follows.
            (Some(sent), true) => Some(sent),
            // Something was missed: live messages follow the current offset.
            (Some(_), false) => Some(current),
            (None, _) => match self.position.take() {
                Some(kept) if was_active && kept.epoch == *epoch => Some(kept),
                _ => Some(current),
            },
        };
    }
}

/// Everything needed to open a connection, detached from the driver so a
/// connection attempt can run as a future of its own.
// Not `Debug`: it holds the token, which must never reach a log.
#[derive(Clone)]
struct Dial {
    addr: SocketAddr,
    codec: Codec,
    path: String,
    connect_timeout: Duration,
    silence_timeout: Option<Duration>,
    max_message_size: usize,
    /// Shared with the client, so a refreshed token is used on reconnects.
    token: Arc<Mutex<Option<String>>>,
}

/// One open connection: a reader task and a writer task around the socket.
struct Connection {
    frames: mpsc::Sender<Frame<'static>>,
    incoming: mpsc::Receiver<Incoming>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Connection {
    /// Ends both tasks now; dropping the socket halves closes it without a
    /// close frame.
    fn abort(&self) {
        self.reader.abort();
        self.writer.abort();
    }
}

/// What a connection's tasks report to the driver.
enum Incoming {
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
    async fn open(self) -> Result<Connection, ClientError> {
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

/// The state of the driver's link to the server.
enum Link {
    Up(Connection),
    /// Waiting before the next connection attempt.
    Backoff(Pin<Box<Sleep>>),
    Connecting(Pin<Box<dyn Future<Output = Result<Connection, ClientError>> + Send>>),
    /// Closed for good.
    Down,
}

/// What happened on the link.
enum LinkEvent {
    Incoming(Incoming),
    CloseTimedOut,
    BackoffOver,
    Connected(Result<Connection, ClientError>),
}

/// The next thing that happens on the link. Reads from the connection only
/// when `read` (the application has taken every event so far).
async fn link_event(
    link: &mut Link,
    read: bool,
    close_deadline: &mut Option<Pin<Box<Sleep>>>,
) -> LinkEvent {
    match link {
        Link::Up(connection) => {
            let incoming = async {
                if read {
                    connection.incoming.recv().await
                } else {
                    std::future::pending().await
                }
            };
            let deadline = async {
                match close_deadline {
                    Some(sleep) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                incoming = incoming => LinkEvent::Incoming(incoming.unwrap_or_else(|| {
                    Incoming::Lost("the connection's tasks ended".to_owned())
                })),
                () = deadline => LinkEvent::CloseTimedOut,
            }
        }
        Link::Backoff(sleep) => {
            sleep.as_mut().await;
            LinkEvent::BackoffOver
        }
        Link::Connecting(attempt) => LinkEvent::Connected(attempt.await),
        Link::Down => std::future::pending().await,
    }
}

/// Hands the oldest waiting event to the application once it has room;
/// false when the application is gone.
async fn deliver(events: &mpsc::Sender<Event>, outbox: &mut VecDeque<Event>) -> bool {
    let Ok(permit) = events.reserve().await else {
        return false;
    };
    if let Some(event) = outbox.pop_front() {
        permit.send(event);
    }
    true
}

/// How long to wait before connection attempt `attempt` (0 for the first
/// after a drop): "full jitter", a uniform draw in [0, min(max, base × 2^attempt)],
/// so that clients dropped together do not come back together.
fn backoff_delay(attempt: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let bound = base.saturating_mul(2u32.saturating_pow(attempt)).min(max);
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    // `random` as a fraction of 2^64, times the bound: uniform, no modulo bias.
    let drawn = (u128::from(nanos) * u128::from(random)) >> 64;
    Duration::from_nanos(u64::try_from(drawn).unwrap_or(nanos))
}

/// The background task that owns the connection and all client state.
struct Driver {
    dial: Dial,
    options: ClientOptions,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    /// Events the application has no room for yet; while any wait here the
    /// connection is not read, so this holds at most what one envelope or
    /// one reconnect produces.
    outbox: VecDeque<Event>,
    link: Link,
    /// Set once our close frame is sent: give up waiting for the echo then.
    close_deadline: Option<Pin<Box<Sleep>>>,
    /// The application called `close`: no reconnect.
    closing: bool,
    /// Failed connection attempts since the connection dropped.
    failed_attempts: u32,
    rooms: HashMap<String, RoomState>,
    in_flight: HashMap<u64, InFlight>,
    /// Requests held until connected and resubscribed, in call order.
    waiting: VecDeque<Waiting>,
    /// Publications in `waiting`, checked against `max_queued_publishes`.
    queued_publishes: usize,
    /// Resubscribes sent after a reconnect and not yet answered.
    resubscribing: usize,
    /// Requests whose ack is to be discarded as if lost (test hook).
    losing_acks: HashSet<u64>,
    /// Request ids increase for the life of the client, so a reply can never
    /// be taken for an answer to a request of another connection.
    next_id: u64,
    next_generation: u64,
    key_prefix: String,
    next_key: u64,
}

impl Driver {
    async fn run(mut self) {
        self.drive().await;
        if let Link::Up(connection) = &self.link {
            connection.abort();
        }
    }

    async fn drive(&mut self) {
        loop {
            if matches!(self.link, Link::Down) && self.outbox.is_empty() {
                return;
            }
            let read = self.outbox.is_empty();
            tokio::select! {
                biased;
                delivered = deliver(&self.events, &mut self.outbox), if !read => {
                    if !delivered {
                        return;
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    // The Client is gone.
                    None => return,
                },
                () = self.shared.drop_connection.notified() => {
                    if let Link::Up(connection) = &self.link {
                        connection.abort();
                        self.lost(DisconnectCause::Lost("dropped for a test".to_owned()));
                    }
                }
                event = link_event(&mut self.link, read, &mut self.close_deadline) => {
                    self.link_event(event).await;
                }
            }
        }
    }

    /// Queues an event for the application, passing it on at once when there is room.
    fn emit(&mut self, event: Event) {
        self.outbox.push_back(event);
        while let Some(event) = self.outbox.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    self.outbox.push_front(event);
                    break;
                }
                // The application is gone; the command channel closes next.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.outbox.clear();
                    break;
                }
            }
        }
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.shared.close_reason())
    }

    fn is_up(&self) -> bool {
        matches!(self.link, Link::Up(_)) && !self.closing
    }

    fn is_down(&self) -> bool {
        matches!(self.link, Link::Down) || self.closing
    }

    /// Publications go out directly only when nothing queued is ahead of them.
    fn sends_publishes_now(&self) -> bool {
        self.is_up() && self.resubscribing == 0 && self.waiting.is_empty()
    }

    /// Sends a request on the current connection. A failed send needs no
    /// handling here: the connection's tasks report the loss, and the
    /// request is then retried or failed with the others in flight.
    async fn send(&mut self, id: u64, op: ClientOp) {
        let Link::Up(connection) = &self.link else {
            return;
        };
        let envelope = self.dial.codec.encode_request(&ClientRequest {
            id: RequestId(id),
            op,
        });
        let _ = connection
            .frames
            .send(Frame::binary(Payload::Owned(envelope)))
            .await;
    }

    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe {
                room,
                options,
                reply,
            } => self.subscribe(room, options, reply).await,
            Command::Unsubscribe { room, reply } => self.unsubscribe(room, reply).await,
            Command::Publish {
                room,
                data,
                key,
                reply,
            } => {
                let key = match key {
                    KeyChoice::None => None,
                    KeyChoice::Given(key) => Some(key),
                    KeyChoice::Automatic => {
                        self.next_key += 1;
                        let key = format!("{}-{}", self.key_prefix, self.next_key);
                        Some(IdempotencyKey::new(&key))
                    }
                };
                let (ack, accepted) = match reply {
                    PublishReply::Ack(reply) => (Some(reply), None),
                    PublishReply::Accepted(reply) => (None, Some(reply)),
                };
                let publication = Publication {
                    room,
                    data,
                    key,
                    ack,
                };
                let outcome = self.publish(publication).await;
                if let Some(accepted) = accepted {
                    let _ = accepted.send(outcome);
                }
            }
            Command::Query { op, reply } => {
                if self.is_down() {
                    let _ = reply.send(Err(self.closed_error()));
                } else if self.is_up() {
                    let id = self.take_id();
                    self.in_flight.insert(id, InFlight::Query(reply));
                    self.send(id, op).await;
                } else {
                    let _ = reply.send(Err(ClientError::Disconnected));
                }
            }
            Command::Raw { bytes, reply } => {
                let outcome = match &self.link {
                    _ if self.is_down() => Err(self.closed_error()),
                    Link::Up(connection) => connection
                        .frames
                        .send(Frame::binary(Payload::Owned(bytes)))
                        .await
                        .map_err(|_| ClientError::Disconnected),
                    _ => Err(ClientError::Disconnected),
                };
                let _ = reply.send(outcome);
            }
            Command::Close { reply } => {
                if !self.closing {
                    self.closing = true;
                    match &self.link {
                        Link::Up(connection) => {
                            let _ = connection.frames.send(Frame::close(1000, b"bye")).await;
                            self.close_deadline = Some(Box::pin(tokio::time::sleep(CLOSE_TIMEOUT)));
                        }
                        _ => self.shut_down(),
                    }
                }
                let _ = reply.send(Ok(()));
            }
        }
    }

    async fn subscribe(
        &mut self,
        room: RoomName,
        options: SubscribeOptions,
        reply: Responder<SubscribeInfo>,
    ) {
        if self.is_down() {
            let _ = reply.send(Err(self.closed_error()));
            return;
        }
        let up = self.is_up();
        let name = room.as_str().to_owned();
        if !self.rooms.contains_key(&name) {
            let generation = self.next_generation;
            self.next_generation += 1;
            let state = RoomState {
                name: room.detached(),
                generation,
                join_leave: options.join_leave,
                position: None,
                active: false,
                in_flight: false,
                confirmed: false,
                waiters: Vec::new(),
            };
            self.rooms.insert(name.clone(), state);
        }
        let Some(state) = self.rooms.get_mut(&name) else {
            return;
        };
        state.waiters.push(reply);
        if !state.active {
            // Not subscribed yet: these options are what the next subscribe
            // of the room, this one or the one after a reconnect, carries.
            state.join_leave = options.join_leave;
            if options.recover.is_some() {
                state.position = options.recover.clone();
            }
        }
        // A subscribe already on its way answers this caller too, unless
        // the room is live and this one changes something.
        let changes = options.recover.is_some() || options.join_leave != state.join_leave;
        let needed = !state.in_flight || (state.active && changes);
        if !up || !needed {
            return;
        }
        let recover = if state.active {
            options.recover
        } else {
            state.position.clone()
        };
        state.in_flight = true;
        let in_flight = InFlight::Subscribe {
            room: name,
            generation: state.generation,
            join_leave: options.join_leave,
            recover: recover.clone(),
            resubscribe: false,
        };
        let op = ClientOp::Subscribe {
            room,
            recover,
            join_leave: options.join_leave,
        };
        let id = self.take_id();
        self.in_flight.insert(id, in_flight);
        self.send(id, op).await;
    }

    async fn unsubscribe(&mut self, room: RoomName, reply: Responder<()>) {
        if self.is_down() {
            let _ = reply.send(Err(self.closed_error()));
            return;
        }
        match self.rooms.remove(room.as_str()) {
            Some(state) => {
                for waiter in state.waiters {
                    let _ = waiter.send(Err(ClientError::Unsubscribed));
                }
                if self.is_up() && (state.active || state.in_flight) {
                    let id = self.take_id();
                    self.in_flight.insert(id, InFlight::Unsubscribe(reply));
                    self.send(id, ClientOp::Unsubscribe { room }).await;
                } else {
                    // Not subscribed on any connection, and never will be again.
                    let _ = reply.send(Ok(()));
                }
            }
            None if self.is_up() => {
                let id = self.take_id();
                self.in_flight.insert(id, InFlight::Unsubscribe(reply));
                self.send(id, ClientOp::Unsubscribe { room }).await;
            }
            None => self.waiting.push_back(Waiting::Unsubscribe { room, reply }),
        }
    }

    /// Sends or queues a publication; the error is for a fire-and-forget
    /// caller (an acknowledged one has been answered already).
    async fn publish(&mut self, publication: Publication) -> Result<(), ClientError> {
        let refuse = |publication: Publication, error: ClientError| {
            if let Some(ack) = publication.ack {
                let _ = ack.send(Err(error.clone()));
            }
            Err(error)
        };
        if self.is_down() {
            return refuse(publication, self.closed_error());
        }
        if self.sends_publishes_now() {
            self.send_publication(publication).await;
            return Ok(());
        }
        if self.queued_publishes >= self.options.max_queued_publishes {
            return refuse(publication, ClientError::QueueFull);
        }
        self.queued_publishes += 1;
        self.waiting.push_back(Waiting::Publish(publication));
        Ok(())
    }

    async fn send_publication(&mut self, publication: Publication) {
        let op = publication.op();
        if publication.ack.is_some() {
            let id = self.take_id();
            if self
                .shared
                .lose_publish_acks
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
            {
                self.losing_acks.insert(id);
            }
            self.in_flight.insert(id, InFlight::Publish(publication));
            self.send(id, op).await;
        } else {
            self.send(0, op).await;
        }
    }

    /// Sends what waited for the connection, in order.
    async fn flush_waiting(&mut self) {
        while self.is_up() {
            let Some(waiting) = self.waiting.pop_front() else {
                return;
            };
            match waiting {
                Waiting::Publish(publication) => {
                    self.queued_publishes -= 1;
                    self.send_publication(publication).await;
                }
                Waiting::Unsubscribe { room, reply } => {
                    let id = self.take_id();
                    self.in_flight.insert(id, InFlight::Unsubscribe(reply));
                    self.send(id, ClientOp::Unsubscribe { room }).await;
                }
            }
        }
    }

    async fn link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Incoming(Incoming::Envelope(envelope)) => self.envelope(envelope).await,
            LinkEvent::Incoming(Incoming::Closed { code, reason }) => {
                self.shared.set_close_reason(code, &reason);
                self.lost(DisconnectCause::Closed { code, reason });
            }
            LinkEvent::Incoming(Incoming::Lost(error)) => {
                if let Link::Up(connection) = &self.link {
                    connection.abort();
                }
                self.lost(DisconnectCause::Lost(error));
            }
            LinkEvent::CloseTimedOut => {
                if let Link::Up(connection) = &self.link {
                    connection.abort();
                }
                self.shut_down();
            }
            LinkEvent::BackoffOver => {
                self.link = Link::Connecting(Box::pin(self.dial.clone().open()));
            }
            LinkEvent::Connected(Ok(connection)) => {
                self.link = Link::Up(connection);
                let attempts = self.failed_attempts + 1;
                self.failed_attempts = 0;
                tracing::debug!(attempts, "roomcast client reconnected");
                self.emit(Event::Reconnected { attempts });
                self.resubscribe_all().await;
            }
            LinkEvent::Connected(Err(error)) => {
                self.failed_attempts += 1;
                let attempt = self.failed_attempts;
                tracing::debug!(attempt, %error, "roomcast client reconnect failed");
                if self
                    .options
                    .max_reconnect_attempts
                    .is_some_and(|max| self.failed_attempts >= max)
                {
                    self.shut_down();
                } else {
                    self.back_off();
                }
            }
        }
    }

    fn back_off(&mut self) {
        let delay = backoff_delay(
            self.failed_attempts,
            self.options.backoff_base,
            self.options.backoff_max,
            random_u64(),
        );
        self.link = Link::Backoff(Box::pin(tokio::time::sleep(delay)));
    }

    /// The connection is gone: settle what was in flight on it, then
    /// reconnect or give up.
    fn lost(&mut self, cause: DisconnectCause) {
        self.link = Link::Down;
        self.resubscribing = 0;
        self.losing_acks.clear();
        for state in self.rooms.values_mut() {
            state.active = false;
            state.in_flight = false;
        }
        let mut unacknowledged = Vec::new();
        for (id, request) in self.in_flight.drain() {
            match request {
                // The room stays, with its waiters, for the next connection.
                InFlight::Subscribe { .. } => {}
                // The next connection is not subscribed to it either.
                InFlight::Unsubscribe(reply) => {
                    let _ = reply.send(Ok(()));
                }
                InFlight::Publish(publication) => unacknowledged.push((id, publication)),
                InFlight::Query(reply) => {
                    let _ = reply.send(Err(ClientError::Disconnected));
                }
            }
        }
        // Sent before anything still waiting: they go first, in their order.
        unacknowledged.sort_by_key(|(id, _)| *id);
        for (_, publication) in unacknowledged.into_iter().rev() {
            self.queued_publishes += 1;
            self.waiting.push_front(Waiting::Publish(publication));
        }
        let reconnecting = !self.closing
            && cause.allows_reconnect()
            && self.options.max_reconnect_attempts != Some(0);
        tracing::debug!(?cause, reconnecting, "roomcast client disconnected");
        self.emit(Event::Disconnected {
            cause,
            reconnecting,
        });
        if reconnecting {
            self.failed_attempts = 0;
            self.back_off();
        } else {
            self.shut_down();
        }
    }

    /// Closed for good: every caller still waiting gets the reason.
    fn shut_down(&mut self) {
        self.link = Link::Down;
        self.close_deadline = None;
        let error = self.closed_error();
        for (_, state) in self.rooms.drain() {
            for waiter in state.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        for (_, request) in self.in_flight.drain() {
            match request {
                InFlight::Subscribe { .. } => {}
                InFlight::Unsubscribe(reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
                InFlight::Publish(publication) => {
                    if let Some(ack) = publication.ack {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
                InFlight::Query(reply) => {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        for waiting in self.waiting.drain(..) {
            match waiting {
                Waiting::Publish(publication) => {
                    if let Some(ack) = publication.ack {
                        let _ = ack.send(Err(error.clone()));
                    }
                }
                Waiting::Unsubscribe { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
        self.queued_publishes = 0;
    }

    /// Subscribes every known room on the new connection, each from its
    /// position; queued requests follow once all are answered.
    async fn resubscribe_all(&mut self) {
        let mut batch = Vec::with_capacity(self.rooms.len());
        for (name, state) in &mut self.rooms {
            state.in_flight = true;
            batch.push((
                name.clone(),
                state.generation,
                state.name.clone(),
                state.join_leave,
                state.position.clone(),
            ));
        }
        for (name, generation, room, join_leave, recover) in batch {
            let id = self.take_id();
            self.in_flight.insert(
                id,
                InFlight::Subscribe {
                    room: name,
                    generation,
                    join_leave,
                    recover: recover.clone(),
                    resubscribe: true,
                },
            );
            self.resubscribing += 1;
            self.send(
                id,
                ClientOp::Subscribe {
                    room,
                    recover,
                    join_leave,
                },
            )
            .await;
        }
        if self.resubscribing == 0 {
            self.flush_waiting().await;
        }
    }

    async fn envelope(&mut self, envelope: ServerEvent) {
        match envelope {
            ServerEvent::Reply(reply) => self.reply(reply).await,
            ServerEvent::Message { room, offset, data } => {
                let Some(state) = self.rooms.get_mut(&room) else {
                    tracing::trace!(room, "message of a room left behind");
                    return;
                };
                if state.accept(offset) {
                    self.emit(Event::Message(Message { room, offset, data }));
                } else {
                    tracing::trace!(room, offset = offset.0, "replayed message skipped");
                }
            }
            ServerEvent::Presence { change, room, info } => {
                if self.rooms.contains_key(&room) {
                    self.emit(Event::Presence { change, room, info });
                }
            }
        }
    }

    async fn reply(&mut self, reply: Reply) {
        let Some(request) = self.in_flight.remove(&reply.id.0) else {
            if let Outcome::Error { code, message } = reply.outcome {
                tracing::debug!(code, message, "error reply to a fire-and-forget request");
            }
            return;
        };
        match request {
            InFlight::Subscribe {
                room,
                generation,
                join_leave,
                recover,
                resubscribe,
            } => {
                self.subscribe_reply(&room, generation, join_leave, recover, reply.outcome);
                if resubscribe {
                    self.resubscribing = self.resubscribing.saturating_sub(1);
                    if self.resubscribing == 0 {
                        // Held back until every room is live again.
                        self.flush_waiting().await;
                    }
                }
            }
            InFlight::Unsubscribe(responder) => {
                let _ = responder.send(match reply.outcome {
                    Outcome::Ack(_) => Ok(()),
                    Outcome::Error { code, message } => Err(ClientError::Server { code, message }),
                    other => Err(unexpected("unsubscribe", &other)),
                });
            }
            InFlight::Publish(publication) => {
                if self.losing_acks.remove(&reply.id.0) {
                    // Test hook: as if this ack never arrived.
                    self.in_flight
                        .insert(reply.id.0, InFlight::Publish(publication));
                    return;
                }
                if let Some(ack) = publication.ack {
                    let _ = ack.send(match reply.outcome {
                        Outcome::Ack(ack) => Ok(PublishAck {
                            offset: ack.offset,
                            duplicate: ack.duplicate,
                        }),
                        Outcome::Error { code, message } => {
                            Err(ClientError::Server { code, message })
                        }
                        other => Err(unexpected("publish", &other)),
                    });
                }
            }
            InFlight::Query(responder) => {
                let _ = responder.send(match reply.outcome {
                    Outcome::Error { code, message } => Err(ClientError::Server { code, message }),
                    outcome => Ok(outcome),
                });
            }
        }
    }

    fn subscribe_reply(
        &mut self,
        room: &str,
        generation: u64,
        join_leave: bool,
        recover: Option<StreamPosition>,
        outcome: Outcome,
    ) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.generation != generation {
            return;
        }
        state.in_flight = false;
        match outcome {
            Outcome::Ack(ack) => {
                let was_active = state.active;
                let was_confirmed = state.confirmed;
                state.acknowledge(recover, was_active, &ack.epoch, ack.offset, ack.recovered);
                state.active = true;
                state.confirmed = true;
                state.join_leave = join_leave;
                let info = SubscribeInfo {
                    epoch: ack.epoch.clone(),
                    offset: ack.offset,
                    recovered: ack.recovered,
                };
                for waiter in state.waiters.drain(..) {
                    let _ = waiter.send(Ok(info.clone()));
                }
                if was_confirmed && !was_active {
                    self.emit(Event::Resubscribed {
                        room: room.to_owned(),
                        recovered: ack.recovered,
                        position: StreamPosition {
                            epoch: ack.epoch,
                            offset: ack.offset,
                        },
                    });
                }
            }
            outcome => {
                let error = match outcome {
                    Outcome::Error { code, message } => ClientError::Server { code, message },
                    other => unexpected("subscribe", &other),
                };
                for waiter in state.waiters.drain(..) {
                    let _ = waiter.send(Err(error.clone()));
                }
                // A live subscription stays as it was; a node shutting down
                // (105) closes us soon, and the next connection tries again.
                let keep = state.active
                    || (state.confirmed && matches!(error, ClientError::Server { code: 105, .. }));
                if !keep {
                    let confirmed = state.confirmed;
                    self.rooms.remove(room);
                    if confirmed {
                        self.emit(Event::SubscriptionLost {
                            room: room.to_owned(),
                            error,
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomState {
        RoomState {
            name: RoomName::new("ticks.btc").unwrap(),
            generation: 0,
            join_leave: false,
            position: None,
            active: false,
            in_flight: false,
            confirmed: false,
            waiters: Vec::new(),
        }
    }

    fn at(epoch: &str, offset: u64) -> StreamPosition {
        StreamPosition {
            epoch: Epoch(epoch.to_owned()),
            offset: Offset(offset),
        }
    }

    #[test]
    fn backoff_draws_from_a_bound_that_doubles_up_to_the_max() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        // The largest draw falls short of the bound by less than a nanosecond per second.
        let bound = |attempt| {
            let longest = backoff_delay(attempt, base, max, u64::MAX);
            Duration::from_millis(u64::try_from(longest.as_nanos().div_ceil(1_000_000)).unwrap())
        };
        assert_eq!(bound(0), Duration::from_millis(100));
        assert_eq!(bound(1), Duration::from_millis(200));
        assert_eq!(bound(6), Duration::from_millis(6_400));
        assert_eq!(bound(7), max, "capped");
        assert_eq!(bound(1_000), max, "no overflow however long it goes on");
        assert_eq!(
            backoff_delay(0, base, max, 1 << 63),
            Duration::from_millis(50),
            "the middle of the range"
        );
        assert_eq!(
            backoff_delay(3, base, max, 0),
            Duration::ZERO,
            "full jitter starts at zero"
        );
        for seed in 0..1_000u64 {
            let random = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(backoff_delay(2, base, max, random) <= Duration::from_millis(400));
        }
    }

    #[test]
    fn a_room_hands_over_each_offset_once_and_in_order() {
        let mut state = room();
        state.acknowledge(None, false, &Epoch("e1".into()), Offset(10), false);
        assert!(
            !state.accept(Offset(10)),
            "the ack's offset was before the subscription"
        );
        assert!(state.accept(Offset(11)));
        assert!(state.accept(Offset(12)));
        assert!(!state.accept(Offset(11)), "a replay of an older message");
        assert!(!state.accept(Offset(12)), "a replay of the last message");
        assert_eq!(state.position, Some(at("e1", 12)));
    }

    #[test]
    fn a_recovered_room_continues_from_the_last_message_handed_over() {
        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(
            Some(at("e1", 12)),
            false,
            &Epoch("e1".into()),
            Offset(20),
            true,
        );
        assert_eq!(state.position, Some(at("e1", 12)));
        assert!(state.accept(Offset(13)), "the missed messages follow");
    }

    #[test]
    fn a_room_that_lost_messages_or_its_epoch_starts_from_the_acks_position() {
        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(
            Some(at("e1", 12)),
            false,
            &Epoch("e2".into()),
            Offset(0),
            false,
        );
        assert_eq!(state.position, Some(at("e2", 0)));
        assert!(state.accept(Offset(1)), "a new epoch numbers from 1 again");

        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(
            Some(at("e1", 12)),
            false,
            &Epoch("e1".into()),
            Offset(500),
            false,
        );
        assert!(!state.accept(Offset(499)));
        assert!(
            state.accept(Offset(501)),
            "live messages after the ack's offset"
        );
    }

    #[test]
    fn subscribing_again_to_a_live_room_keeps_its_position() {
        let mut state = room();
        state.position = Some(at("e1", 12));
        state.acknowledge(None, true, &Epoch("e1".into()), Offset(15), false);
        assert_eq!(
            state.position,
            Some(at("e1", 12)),
            "13 to 15 may still be on their way"
        );
    }

    #[test]
    fn closes_that_blame_the_client_or_mean_it_end_the_client() {
        let closed = |code| DisconnectCause::Closed {
            code,
            reason: String::new(),
        };
        for code in [1001, 1005, 1011, 1012, 1013, 4000] {
            assert!(closed(code).allows_reconnect(), "{code}");
        }
        for code in [1000, 1002, 1003, 1007, 1009] {
            assert!(!closed(code).allows_reconnect(), "{code}");
        }
        assert!(DisconnectCause::Lost("reset".into()).allows_reconnect());
    }
}
