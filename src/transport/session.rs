//! One WebSocket connection, from upgrade to close: the loop that reads,
//! decodes and dispatches requests, and, beside it in the same task, the
//! writer that drains the outbound queue in vectored writes and keeps the
//! heartbeat. Neither waits on the other: a slow socket write never stops
//! reads, and a publisher waiting for queue room never stops writes.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{Cursor, IoSlice};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketError, WebSocketRead};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::num::NonZeroU32;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_rustls::server::TlsStream;
use tracing::Instrument;

use crate::admission::IpSlot;
use crate::auth::{Action, Identity, TokenError};
use crate::limits::{close_code, Limits};
use crate::metrics;
use crate::protocol::frame::Opcode;
use crate::protocol::{
    frame, Ack, ClientInfo, ClientOp, Codec, ErrorCode, IdempotencyKey, Offset, PresenceChange,
    Reply, RequestError, RequestId, RoomName, StreamPosition,
};
use crate::router::shard::{SubscribeStep, Subscriber};
use crate::router::{home_core, ConnId, CoreMsg, PublishMsg, Query, ReplyTo};
use crate::runtime::core::Core;
use crate::runtime::ConnectionSlot;

use super::outbound::{Closing, LocalFrame, Outbound};

/// Frames handed to one vectored write, at most (below IOV_MAX).
const WRITE_BATCH_FRAMES: usize = 512;
/// Bytes handed to one vectored write, about.
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// How the read side ended.
#[derive(Debug)]
enum ReadEnd {
    /// The peer sent a valid close frame; echo its code.
    PeerClosed(u16),
    /// The peer broke the protocol or sent bad input: close with this code.
    Violation { code: u16, reason: &'static str },
    /// The socket ended or failed: nothing more can be sent.
    Gone,
}

/// What the handshake established: the held slots and who is connecting.
pub struct Admitted {
    pub slot: ConnectionSlot,
    pub ip_slot: Option<IpSlot>,
    pub identity: Identity,
}

/// What a connection's messages mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The broker protocol (`path`).
    Broker,
    /// Every message is sent back as it came, text or binary (`echo_path`,
    /// for conformance suites): the same reader, writer, limits and close
    /// handling, with no envelope.
    Echo,
}

/// Runs one upgraded connection to its end.
pub async fn run(
    ws: WebSocket<TokioIo<Upgraded>>,
    codec: Codec,
    core: Rc<Core>,
    peer: SocketAddr,
    admitted: Admitted,
    mode: Mode,
) {
    // Bytes the client sent right behind its handshake were read by hyper
    // already. Copied (it is usually empty): the slice would keep hyper's
    // whole handshake buffer alive for the life of the connection.
    let link = Link {
        codec,
        core,
        peer,
        admitted,
        mode,
    };
    let upgraded = ws.into_inner().into_inner();
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let early = Bytes::copy_from_slice(&parts.read_buf);
            let (read_half, write_half) = parts.io.into_inner().into_split();
            return connection(read_half, write_half, early, link).await;
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => {
            let early = Bytes::copy_from_slice(&parts.read_buf);
            let (read_half, write_half) = tokio::io::split(parts.io.into_inner());
            connection(read_half, write_half, early, link).await;
        }
        Err(_) => tracing::error!("upgraded connection is neither TCP nor TLS over TCP"),
    }
}

/// An upgraded connection's parameters, whatever its transport.
struct Link {
    codec: Codec,
    core: Rc<Core>,
    peer: SocketAddr,
    admitted: Admitted,
    mode: Mode,
}

async fn connection<R, W>(read_half: R, write_half: W, early: Bytes, link: Link)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Link {
        codec,
        core,
        peer,
        admitted,
        mode,
    } = link;
    let Admitted {
        slot,
        ip_slot,
        identity,
    } = admitted;
    let reader = AsyncReadExt::chain(Cursor::new(early), read_half);
    let (mut ws_read, _) =
        fastwebsockets::after_handshake_split(reader, tokio::io::sink(), Role::Server);
    let limits = &core.node.limits;
    ws_read.set_auto_close(false);
    ws_read.set_auto_pong(false);
    // fastwebsockets refuses frames of this size or more, before allocating.
    ws_read.set_max_message_size(limits.max_message_size.saturating_add(1));

    let (conn, outbound) = core.register(codec);
    if core.node.shutting_down() {
        // Upgraded after the drain listed this core's sessions: close at once.
        outbound.close(Closing {
            code: close_code::SERVICE_RESTART,
            reason: "service restart",
            flush: true,
        });
    }
    let counters = core.counters();
    metrics::add(&counters.connections_open, 1);
    metrics::add(&counters.connections_accepted, 1);
    let span = tracing::debug_span!("conn", conn_id = conn.0, core = core.id.0, %peer, %codec);
    let expiry = Rc::new(Cell::new(deadline_of(&identity)));
    let mut session = Session {
        conn,
        codec,
        core: core.clone(),
        outbound: outbound.clone(),
        rooms: HashMap::new(),
        last_seen: Rc::new(Cell::new(Instant::now())),
        assembling: None,
        mode,
        limiter: PublishLimiter::new(&core.node.config),
        expiry: expiry.clone(),
        identity,
    };
    async {
        tracing::debug!("connected");
        let writer = write_loop(
            write_half,
            outbound.clone(),
            session.last_seen.clone(),
            expiry,
            core.clone(),
        );
        let mut writer = pin!(writer);
        let end = {
            let mut reader = pin!(session.read_loop(&mut ws_read));
            tokio::select! {
                end = &mut reader => Some(end),
                () = &mut writer => {
                    // We closed (slow consumer, shutdown, heartbeat) or the write failed:
                    // give the peer a moment to answer our close.
                    let _ = timeout(limits.close_timeout, &mut reader).await;
                    None
                }
            }
        };
        if let Some(end) = end {
            tracing::debug!(?end, "read side ended");
            let closing = match end {
                ReadEnd::PeerClosed(code) => Some(Closing {
                    code,
                    reason: "",
                    flush: false,
                }),
                ReadEnd::Violation { code, reason } => {
                    metrics::add(&counters.protocol_closes, 1);
                    Some(Closing {
                        code,
                        reason,
                        flush: false,
                    })
                }
                ReadEnd::Gone => None,
            };
            if let Some(closing) = closing {
                outbound.close(closing);
                let _ = timeout(limits.close_timeout, &mut writer).await;
            }
        }
        session.leave_all();
        tracing::debug!("disconnected");
    }
    .instrument(span)
    .await;
    core.deregister(conn);
    metrics::sub(&counters.connections_open, 1);
    drop(slot);
    drop(ip_slot);
}

/// When the connection must end for its token, on the runtime's clock.
fn deadline_of(identity: &Identity) -> Option<Instant> {
    identity.expires_in().map(|left| Instant::now() + left)
}

/// The per-connection publish limits: messages and payload bytes per
/// second, each with a burst (`None`: no limit).
struct PublishLimiter {
    messages: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
    /// Rate-limited publishes in a row.
    strikes: usize,
}

impl PublishLimiter {
    fn new(config: &crate::Config) -> PublishLimiter {
        let limiter = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        };
        PublishLimiter {
            messages: limiter(config.publish_rate, config.publish_burst),
            bytes: limiter(config.publish_bytes_rate, config.publish_bytes_burst),
            strikes: 0,
        }
    }

    /// Whether a publish of `len` payload bytes may go now.
    fn allow(&mut self, len: usize) -> bool {
        let message_ok = self.messages.as_ref().is_none_or(|l| l.check().is_ok());
        let bytes_ok = match (
            &self.bytes,
            NonZeroU32::new(len.min(u32::MAX as usize) as u32),
        ) {
            (Some(limiter), Some(n)) => matches!(limiter.check_n(n), Ok(Ok(()))),
            _ => true,
        };
        let ok = message_ok && bytes_ok;
        self.strikes = if ok { 0 } else { self.strikes + 1 };
        ok
    }
}

/// A fragmented message being reassembled.
struct Assembling {
    buffer: BytesMut,
    fragments: usize,
    /// A text message (echo mode only).
    text: bool,
}

struct Session {
    conn: ConnId,
    codec: Codec,
    core: Rc<Core>,
    outbound: Rc<Outbound>,
    /// Rooms this connection is subscribed to, and whether each tracks
    /// presence (so leaving it must be announced).
    rooms: HashMap<RoomName, bool>,
    /// When the peer last sent anything: the heartbeat's proof of life.
    last_seen: Rc<Cell<Instant>>,
    assembling: Option<Assembling>,
    mode: Mode,
    identity: Identity,
    limiter: PublishLimiter,
    /// When the token expires; the writer closes with 4001 then, and a
    /// `refresh` moves it.
    expiry: Rc<Cell<Option<Instant>>>,
}

fn payload_bytes(payload: Payload<'_>) -> Bytes {
    match payload {
        Payload::Bytes(bytes) => bytes.freeze(),
        other => Bytes::copy_from_slice(&other),
    }
}

fn violation(code: u16, reason: &'static str) -> ReadEnd {
    ReadEnd::Violation { code, reason }
}

fn read_error(error: WebSocketError) -> ReadEnd {
    use WebSocketError as E;
    match error {
        E::FrameTooLarge => violation(close_code::MESSAGE_TOO_BIG, "message too big"),
        E::InvalidUTF8 => violation(close_code::INVALID_PAYLOAD, "invalid UTF-8"),
        E::UnexpectedEOF | E::IoError(_) | E::ConnectionClosed => ReadEnd::Gone,
        _ => violation(close_code::PROTOCOL_ERROR, "protocol error"),
    }
}

/// Close codes a peer may send (RFC 6455 §7.4, plus the registered 1012-1014).
fn peer_close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

impl Session {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, ws: &mut WebSocketRead<R>) -> ReadEnd {
        let mut no_send = |_: Frame<'_>| async { Ok::<(), std::io::Error>(()) };
        loop {
            let frame = match ws.read_frame(&mut no_send).await {
                Ok(frame) => frame,
                Err(error) => return read_error(error),
            };
            self.last_seen.set(Instant::now());
            if let Err(end) = self.on_frame(frame).await {
                return end;
            }
            // Frames already in the read buffer cost no socket read, so nothing
            // else would make this loop yield: without this, one publisher's
            // burst could fan out thousands of messages before any writer runs.
            tokio::task::coop::consume_budget().await;
        }
    }

    async fn on_frame(&mut self, frame: Frame<'_>) -> Result<(), ReadEnd> {
        let limits = &self.core.node.limits;
        match frame.opcode {
            OpCode::Binary | OpCode::Text => {
                if self.assembling.is_some() {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "new message inside a fragmented one",
                    ));
                }
                let text = frame.opcode == OpCode::Text;
                if text && self.mode == Mode::Broker {
                    return Err(violation(
                        close_code::UNSUPPORTED_DATA,
                        "text frames are not supported",
                    ));
                }
                let payload = payload_bytes(frame.payload);
                if frame.fin {
                    return self.on_message(payload, text).await;
                }
                self.assembling = Some(Assembling {
                    buffer: BytesMut::from(&payload[..]),
                    fragments: 1,
                    text,
                });
                Ok(())
            }
            OpCode::Continuation => {
                let Some(assembling) = self.assembling.as_mut() else {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "continuation without a message",
                    ));
                };
                assembling.fragments += 1;
                if assembling.fragments > limits.max_fragments {
                    return Err(violation(close_code::MESSAGE_TOO_BIG, "too many fragments"));
                }
                if assembling.buffer.len() + frame.payload.len() > limits.max_message_size {
                    return Err(violation(close_code::MESSAGE_TOO_BIG, "message too big"));
                }
                assembling.buffer.extend_from_slice(&frame.payload);
                if frame.fin {
                    let (message, text) = self
                        .assembling
                        .take()
                        .map(|a| (a.buffer.freeze(), a.text))
                        .unwrap_or_default();
                    return self.on_message(message, text).await;
                }
                Ok(())
            }
            OpCode::Ping => {
                if frame.payload.len() > 125 {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "control frame too long",
                    ));
                }
                self.outbound.pong(&frame.payload);
                Ok(())
            }
            OpCode::Pong => {
                if frame.payload.len() > 125 {
                    return Err(violation(
                        close_code::PROTOCOL_ERROR,
                        "control frame too long",
                    ));
                }
                Ok(())
            }
            OpCode::Close => Err(close_frame(&frame.payload)),
        }
    }

    /// One complete message: one envelope (or, in echo mode, the message
    /// to send back).
    async fn on_message(&mut self, payload: Bytes, text: bool) -> Result<(), ReadEnd> {
        metrics::add(&self.core.counters().messages_received, 1);
        if self.outbound.closing().is_some() {
            // We are closing: no new work.
            return Ok(());
        }
        if self.mode == Mode::Echo {
            if text && std::str::from_utf8(&payload).is_err() {
                return Err(violation(close_code::INVALID_PAYLOAD, "invalid UTF-8"));
            }
            let opcode = if text { Opcode::Text } else { Opcode::Binary };
            self.outbound
                .push(frame::data(opcode, &payload), Instant::now().into_std());
            return Ok(());
        }
        let request = match self.codec.decode_request(&payload) {
            Ok(request) => request,
            Err(RequestError::Malformed(error)) => {
                // The decoder's message may quote the envelope's strings
                // (a token among them): only its length is logged.
                tracing::trace!(detail_len = error.to_string().len(), "malformed envelope");
                return Err(violation(close_code::INVALID_PAYLOAD, "malformed envelope"));
            }
            Err(error) => {
                if let Some(reply) = error.reply() {
                    self.reply(reply);
                }
                return Ok(());
            }
        };
        let id = request.id;
        match request.op {
            ClientOp::Subscribe {
                room,
                recover,
                join_leave,
            } => self.subscribe(id, room, recover, join_leave).await,
            ClientOp::Unsubscribe { room } => self.unsubscribe(id, room).await,
            ClientOp::Publish {
                room,
                data,
                idempotency_key,
            } => self.publish(id, room, data, idempotency_key).await,
            ClientOp::History { room, query } => {
                self.ask_home(id, room, Query::History(query)).await
            }
            ClientOp::Presence { room } => self.ask_home(id, room, Query::Presence).await,
            ClientOp::PresenceStats { room } => self.ask_home(id, room, Query::PresenceStats).await,
            ClientOp::Refresh { token } => self.refresh(id, &token),
        }
        if self.limiter.strikes >= self.core.node.config.rate_limit_close_after {
            metrics::add(&self.core.counters().rate_limit_closes, 1);
            return Err(violation(
                close_code::POLICY_VIOLATION,
                "publish rate limit exceeded",
            ));
        }
        Ok(())
    }

    /// Whether this connection may do `action` in `room`: its token grants
    /// it, and the room's rule (if any) finds one of the roles it requires.
    /// A refusal is answered with error 107 here.
    fn permitted(&self, id: RequestId, action: Action, room: &RoomName) -> bool {
        let name = room.as_str();
        let mut allowed = self.identity.grants.allows(action, name);
        if allowed && self.core.node.role_rules && action != Action::Presence {
            let rules = &self.core.node.config.rooms;
            if let Some(roles) = rules.required_roles(name, action == Action::Publish) {
                allowed = roles.iter().any(|r| self.identity.has_role(r));
            }
        }
        if !allowed {
            metrics::add(&self.core.counters().permission_denials, 1);
            self.reply(Reply::error(
                id,
                ErrorCode::PermissionDenied,
                format!("not allowed to {} in {room}", action.name()),
            ));
        }
        allowed
    }

    /// A new token for the same user moves the connection's expiry.
    /// Refreshes count against the publish message rate: each costs a
    /// signature check.
    fn refresh(&mut self, id: RequestId, token: &str) {
        if !self.limiter.allow(0) {
            metrics::add(&self.core.counters().rate_limited_publishes, 1);
            return self.reply(Reply::error(
                id,
                ErrorCode::RateLimited,
                "refresh rate limit exceeded; slow down",
            ));
        }
        let Some(verifier) = &self.core.node.verifier else {
            return self.reply(Reply::error(
                id,
                ErrorCode::NotEnabled,
                "authentication is off: nothing to refresh",
            ));
        };
        let fresh = verifier.verify(token).and_then(|fresh| {
            if fresh.user == self.identity.user {
                Ok(fresh)
            } else {
                Err(TokenError::OtherUser)
            }
        });
        match fresh {
            Ok(fresh) => {
                self.expiry.set(deadline_of(&fresh));
                self.identity = fresh;
                self.reply(Reply::ack(id, Offset(0)));
            }
            Err(error) => self.reply(Reply::error(
                id,
                ErrorCode::InvalidToken,
                format!("refresh refused: {error}"),
            )),
        }
    }

    fn reply(&self, reply: Reply) {
        if let crate::protocol::Outcome::Error { .. } = reply.outcome {
            metrics::add(&self.core.counters().error_replies, 1);
        } else if !reply.id.wants_reply() {
            return;
        }
        self.outbound
            .reply(frame::reply(self.codec, &reply), Instant::now().into_std());
    }

    fn subscriber(&self, join_leave: bool) -> Subscriber {
        Subscriber {
            conn: self.conn,
            outbound: self.outbound.clone(),
            join_leave,
        }
    }

    async fn subscribe(
        &mut self,
        id: RequestId,
        room: RoomName,
        recover: Option<StreamPosition>,
        join_leave: bool,
    ) {
        let core = self.core.clone();
        if self.rooms.contains_key(&room) {
            // Already in this room: nothing more is sent. Whatever it missed
            // before was already answered by the first subscribe.
            let position = core
                .shard
                .borrow()
                .current(&room, self.codec)
                .unwrap_or_default();
            let recovered = recover.is_some_and(|from| from.epoch == position.epoch);
            let ack = Ack {
                offset: position.offset,
                epoch: position.epoch,
                recovered,
                ..Ack::default()
            };
            return self.reply(Reply::with(id, ack));
        }
        if !self.permitted(id, Action::Subscribe, &room) {
            return;
        }
        let max = core.node.limits.max_rooms_per_connection;
        if self.rooms.len() >= max {
            return self.reply(Reply::error(
                id,
                ErrorCode::TooManyRooms,
                format!("already subscribed to {max} rooms, the limit"),
            ));
        }
        if core.node.shutting_down() {
            return self.reply(Reply::error(
                id,
                ErrorCode::ShuttingDown,
                "node is shutting down",
            ));
        }
        let options = core.node.config.room_options(room.as_str());
        if join_leave && !options.join_leave {
            return self.reply(Reply::error(
                id,
                ErrorCode::NotEnabled,
                format!("room {room} has no join and leave events"),
            ));
        }
        let token = recover.as_ref().map(|_| core.recovery_token());
        // The shard queues the acknowledgement itself, ahead of any delivery
        // (after the home's answer, when recovering).
        let now = Instant::now().into_std();
        let step = core.shard.borrow_mut().subscribe(
            &room,
            self.codec,
            self.subscriber(join_leave),
            id,
            token,
            now,
        );
        // Recorded before any wait, so that a session torn down while waiting
        // still leaves the room (`leave_all`). Detached: a MessagePack room
        // name is a slice of the received message, which would stay pinned
        // for as long as the subscription lasts.
        self.rooms.insert(room.detached(), options.presence);
        let home = home_core(&room, core.node.config.workers);
        let wait = match step {
            SubscribeStep::Ready(_) => None,
            SubscribeStep::AskHome(offset) => {
                let interest = CoreMsg::Interest {
                    room: room.clone(),
                    codec: self.codec,
                    core: core.id,
                    on: true,
                };
                core.send_for_session(home, interest).await;
                Some(offset)
            }
            SubscribeStep::Wait(offset) => Some(offset),
        };
        // Sent after any `Interest`, on the same ordered path to the home, so
        // the home answers it after acknowledging the interest.
        if let (Some(from), Some(token)) = (recover, token) {
            let ask = CoreMsg::Recover {
                room: room.clone(),
                codec: self.codec,
                from,
                core: core.id,
                token,
            };
            core.send_for_session(home, ask).await;
        }
        if options.presence {
            let join = self.presence_msg(&room, PresenceChange::Join);
            core.send_for_session(home, join).await;
        }
        if let Some(wait) = wait {
            if wait.await.is_err() {
                if self.rooms.remove(&room) == Some(true) {
                    let leave = self.presence_msg(&room, PresenceChange::Leave);
                    core.route(home, leave);
                }
                self.reply(Reply::error(
                    id,
                    ErrorCode::ShuttingDown,
                    "node is shutting down",
                ));
            }
        }
    }

    /// What tells the room's home that this connection joined or left it.
    fn presence_msg(&self, room: &RoomName, change: PresenceChange) -> CoreMsg {
        let info = ClientInfo {
            client: self.core.client_id(self.conn),
            user: self.identity.user.clone(),
            joined_at_ms: unix_millis(),
        };
        CoreMsg::Presence {
            room: room.clone(),
            change,
            info,
        }
    }

    async fn unsubscribe(&mut self, id: RequestId, room: RoomName) {
        let Some(presence) = self.rooms.remove(&room) else {
            return self.reply(Reply::error(
                id,
                ErrorCode::NotSubscribed,
                format!("not subscribed to {room}"),
            ));
        };
        self.leave(room, presence);
        self.reply(Reply::ack(id, Offset(0)));
        if self.core.postbox.has_overflow() {
            self.core.postbox.overflow_drained().await;
        }
    }

    /// Removes this connection from a room's local subscribers, then
    /// announces the leave (so, wherever the home is, the leaver never hears
    /// its own leave) and tells the home when it was the last one here.
    fn leave(&self, room: RoomName, presence: bool) {
        let core = &self.core;
        let last = core
            .shard
            .borrow_mut()
            .unsubscribe(&room, self.codec, self.conn);
        let home = home_core(&room, core.node.config.workers);
        if presence {
            core.route(home, self.presence_msg(&room, PresenceChange::Leave));
        }
        if last {
            let interest = CoreMsg::Interest {
                room,
                codec: self.codec,
                core: core.id,
                on: false,
            };
            core.route(home, interest);
        }
    }

    fn leave_all(&mut self) {
        for (room, presence) in std::mem::take(&mut self.rooms) {
            self.leave(room, presence);
        }
    }

    fn reply_to(&self, request: RequestId) -> ReplyTo {
        ReplyTo {
            core: self.core.id,
            conn: self.conn,
            request,
        }
    }

    async fn publish(
        &mut self,
        id: RequestId,
        room: RoomName,
        data: Bytes,
        idempotency_key: Option<IdempotencyKey>,
    ) {
        if !self.permitted(id, Action::Publish, &room) {
            return;
        }
        if !self.limiter.allow(data.len()) {
            metrics::add(&self.core.counters().rate_limited_publishes, 1);
            return self.reply(Reply::error(
                id,
                ErrorCode::RateLimited,
                "publish rate limit exceeded; slow down",
            ));
        }
        let core = &self.core;
        let home = home_core(&room, core.node.config.workers);
        let reply_to = id.wants_reply().then(|| self.reply_to(id));
        let msg = PublishMsg {
            room,
            data,
            idempotency_key,
            reply_to,
        };
        core.send_publish(home, msg).await;
    }

    /// History and presence are answered by the room's home, straight into
    /// this connection's queue.
    async fn ask_home(&self, id: RequestId, room: RoomName, query: Query) {
        if !id.wants_reply() {
            // Nobody would read the answer.
            return;
        }
        let action = match query {
            Query::History(_) => Action::Subscribe,
            Query::Presence | Query::PresenceStats => Action::Presence,
        };
        if !self.permitted(id, action, &room) {
            return;
        }
        let core = &self.core;
        let home = home_core(&room, core.node.config.workers);
        let msg = CoreMsg::Query {
            room,
            query,
            codec: self.codec,
            reply_to: self.reply_to(id),
        };
        core.send_for_session(home, msg).await;
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The answer to a peer's close frame.
fn close_frame(payload: &[u8]) -> ReadEnd {
    match payload.len() {
        0 => ReadEnd::PeerClosed(close_code::NORMAL),
        1 => violation(close_code::PROTOCOL_ERROR, "close frame of one byte"),
        126.. => violation(close_code::PROTOCOL_ERROR, "control frame too long"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !peer_close_code_allowed(code) {
                return violation(close_code::PROTOCOL_ERROR, "invalid close code");
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return violation(close_code::INVALID_PAYLOAD, "close reason is not UTF-8");
            }
            ReadEnd::PeerClosed(code)
        }
    }
}

/// Drains the outbound queue into the socket and keeps the heartbeat, until
/// a close has been written or the socket fails.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut socket: W,
    outbound: Rc<Outbound>,
    last_seen: Rc<Cell<Instant>>,
    expiry: Rc<Cell<Option<Instant>>>,
    core: Rc<Core>,
) {
    let limits: &Limits = &core.node.limits;
    // Grows on first use: an idle connection keeps no batch.
    let mut batch: Vec<LocalFrame> = Vec::new();
    let mut next_ping = Instant::now() + limits.ping_interval;
    let mut ping_sent: Option<Instant> = None;
    // One timer for the connection's life, moved only when its deadline
    // changes: re-arming a timer per write cost more than the write's bookkeeping.
    let mut heartbeat = pin!(sleep_until(next_ping));
    loop {
        // One ping outstanding at a time: the next is sent once it is answered
        // (or the connection is closed for not answering).
        let beat_at = match ping_sent {
            Some(sent) => sent + limits.pong_timeout,
            None => next_ping,
        };
        // The same timer also ends the connection when its token expires.
        let wake_at = expiry.get().map_or(beat_at, |at| at.min(beat_at));
        if heartbeat.deadline() != wake_at {
            heartbeat.as_mut().reset(wake_at);
        }
        tokio::select! {
            biased;
            () = poll_fn(|cx| outbound.poll_work(cx)) => {}
            () = &mut heartbeat => {
                let now = Instant::now();
                if expiry.get().is_some_and(|at| at <= now) {
                    metrics::add(&core.counters().token_expirations, 1);
                    expiry.set(None);
                    outbound.close(Closing {
                        code: close_code::TOKEN_EXPIRED,
                        reason: "token expired",
                        flush: false,
                    });
                    continue;
                }
                if now < beat_at {
                    continue;
                }
                match ping_sent.take() {
                    Some(sent) if last_seen.get() < sent => {
                        metrics::add(&core.counters().heartbeat_timeouts, 1);
                        outbound.close(Closing {
                            code: close_code::HEARTBEAT_TIMEOUT,
                            reason: "heartbeat timeout",
                            flush: false,
                        });
                    }
                    Some(_) => {}
                    None => {
                        outbound.ping(b"");
                        ping_sent = Some(now);
                        next_ping = now + limits.ping_interval;
                    }
                }
                continue;
            }
        }
        let data_bytes = outbound.take(&mut batch, WRITE_BATCH_FRAMES, WRITE_BATCH_BYTES);
        if !batch.is_empty() {
            let written = {
                let mut write = pin!(write_all(&mut socket, &batch));
                tokio::select! {
                    result = &mut write => result,
                    () = poll_fn(|cx| outbound.poll_closing(cx)) => {
                        // A close was asked for while we write: finish this write
                        // (the close frame must not cut a frame in half), briefly.
                        timeout(limits.close_timeout, write).await.unwrap_or(Err(std::io::ErrorKind::TimedOut.into()))
                    }
                }
            };
            outbound.written(data_bytes);
            batch.clear();
            if written.is_err() {
                return;
            }
            continue;
        }
        if let Some(closing) = outbound.closing() {
            let close = frame::close(closing.code, closing.reason);
            let _ = timeout(limits.close_timeout, socket.write_all(&close)).await;
            let _ = socket.shutdown().await;
            return;
        }
    }
}

/// Writes every frame of `batch` with as few vectored writes as the socket
/// allows (public for the benches).
pub async fn write_all<W: AsyncWrite + Unpin>(
    socket: &mut W,
    batch: &[LocalFrame],
) -> std::io::Result<()> {
    let (mut first, mut offset) = (0, 0);
    let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(batch.len());
    while first < batch.len() {
        slices.clear();
        slices.push(IoSlice::new(&batch[first][offset..]));
        slices.extend(batch[first + 1..].iter().map(|b| IoSlice::new(b)));
        let mut n = socket.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 && first < batch.len() {
            let left = batch[first].len() - offset;
            if n >= left {
                n -= left;
                first += 1;
                offset = 0;
            } else {
                offset += n;
                n = 0;
            }
        }
    }
    Ok(())
}
