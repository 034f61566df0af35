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

// One concern per file, in the order a call travels: the public vocabulary
// (options, events, error) and the `Client` handle below; the commands the
// handle sends its driver task; the driver, with its requests in flight and
// its rooms; its link to the server, with the backoff between attempts; and
// the connection itself (dial, handshake, socket tasks).
mod backoff;
mod command;
mod connection;
mod driver;
mod error;
mod events;
mod link;
mod options;
mod requests;
mod rooms;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use self::error::ClientError;
pub use self::events::{DisconnectCause, Event, Message, PublishAck, SubscribeInfo};
pub use self::options::{ClientOptions, SubscribeOptions};

use self::command::{Command, KeyChoice, PublishReply, Responder, Shared};
use self::connection::Dial;
use self::driver::Driver;
use self::error::unexpected;
use crate::protocol::{
    ClientInfo, ClientOp, Codec, HistoryPage, HistoryQuery, IdempotencyKey, Outcome,
    PresenceCounts, RoomName, MAX_IDEMPOTENCY_KEY_BYTES,
};

// Every queue bound and wait of the client, in one place.

// The client's queue bounds and waits live with every other bound.
use crate::limits::{
    CLIENT_CLOSE_TIMEOUT as CLOSE_TIMEOUT, CLIENT_COMMAND_CAPACITY as COMMAND_CAPACITY,
    CLIENT_INCOMING_CAPACITY as INCOMING_CAPACITY, CLIENT_OUTGOING_CAPACITY as OUTGOING_CAPACITY,
};

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
        let driver = Driver::new(
            dial,
            options,
            connection,
            shared.clone(),
            commands_rx,
            events_tx,
        );
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

    /// Sends a close frame (1000) and stops reconnecting; requests still
    /// waiting fail with [`ClientError::Closed`], and the event stream ends
    /// once the server has answered (or after 2 s).
    pub async fn close(&self) {
        let _ = self.call(|reply| Command::Close { reply }).await;
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

/// Seams for roomcast's own tests, which must make a network fail on cue;
/// behind the `test-hooks` feature so that they are no part of the API.
#[cfg(feature = "test-hooks")]
impl Client {
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
        self.shared
            .lose_publish_acks
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}
